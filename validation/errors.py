"""Typed deployment errors, after the seed's DeploymentErrorType / DeploymentError.

The gate raises `DeploymentError` so `pulumi up` prints one readable message that says
which phase and step failed and whether retrying can help.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class DeploymentErrorType(StrEnum):
    """The seed's members that post-deploy validation can raise (docs/validation.md, "Report")."""

    VALIDATION_ERROR = "Post-deployment validation failed"
    SECURITY_ERROR = "Security validation failed"
    MONITORING_ERROR = "Monitoring setup failed"


class DeploymentError(Exception):
    """A failure with its type, phase and step; `recoverable` says whether a retry may help."""

    def __init__(
        self,
        type: DeploymentErrorType,
        phase: str,
        step: str,
        message: str,
        recoverable: bool = True,
        failed_checks: Iterable[str] = (),
    ) -> None:
        super().__init__(message)
        self.type = type
        self.phase = phase
        self.step = step
        self.message = message
        self.recoverable = recoverable
        #: The checks that decided the failure, by name (empty when no check ran).
        self.failed_checks: tuple[str, ...] = tuple(failed_checks)

    def __str__(self) -> str:
        hint = "recoverable" if self.recoverable else "not recoverable"
        return f"{self.type.value} [{self.phase}/{self.step}, {hint}]: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {
            "name": "DeploymentError",
            "type": self.type.name,
            "description": self.type.value,
            "phase": self.phase,
            "step": self.step,
            "message": self.message,
            "recoverable": self.recoverable,
            "failedChecks": list(self.failed_checks),
        }
