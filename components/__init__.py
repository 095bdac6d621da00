"""Pulumi components of the paper-trading deployment: one component per module."""
