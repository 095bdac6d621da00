"""The paper-trading CrossGuard policy pack (`POLICIES` in `policies.rules`) and its offline check."""
