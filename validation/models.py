"""Report models, after the seed's DeploymentStatus / TestResult / ProductionMetrics.

Serialised with camelCase keys (as in the seed's TypeScript interfaces) to one JSON
report; `CheckResult` is the unit every check returns.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _Model(BaseModel):
    # defer_build: the package's __init__ imports these models, and it runs on every Pulumi
    # program evaluation (settings/ imports validation.options); building the
    # schemas then would cost each evaluation ~0.5 % for reports only a gate run writes.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, defer_build=True)


class Category(StrEnum):
    HEALTH = "health"
    SAFETY = "safety"
    SECURITY = "security"
    MONITORING = "monitoring"
    PERFORMANCE = "performance"


#: The seed's test matrix: health and monitoring are service-interaction (integration)
#: tests, safety is "Paper Trading Safety", performance is the only non-blocking one.
BLOCKING: dict[Category, bool] = {
    Category.HEALTH: True,
    Category.SAFETY: True,
    Category.SECURITY: True,
    Category.MONITORING: True,
    Category.PERFORMANCE: False,
}

CheckStatus = Literal["passed", "failed", "skipped"]


class CheckResult(_Model):
    name: str
    category: Category
    blocking: bool
    status: CheckStatus
    message: str = ""
    duration_ms: float = 0.0
    attempts: int = 0
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def failed_blocking(self) -> bool:
        return self.blocking and self.status == "failed"


class TestResult(_Model):
    # The seed's "pending" and "running" cannot occur: the report is built after every check ended.
    status: Literal["passed", "failed"]
    start_time: datetime | None = None
    end_time: datetime | None = None
    passed_tests: int = 0
    failed_tests: int = 0
    total_tests: int = 0
    errors: list[str] = Field(default_factory=list)


class FailedStep(_Model):
    step: str
    error: str
    timestamp: datetime


class ValidationFlags(_Model):
    security_validated: bool
    monitoring_active: bool | None
    paper_trading_safe: bool
    performance_acceptable: bool


class DeploymentStatus(_Model):
    """The seed's status, restricted to what post-deploy validation knows."""

    phase: Literal["preparation", "testing", "deployment", "validation", "complete"]
    start_time: datetime
    current_step: str
    completed_steps: list[str]
    failed_steps: list[FailedStep]
    testing: dict[str, TestResult]
    validation: ValidationFlags


class ApplicationMetrics(_Model):
    response_time: float | None = None  # p95, milliseconds
    throughput: float | None = None  # requests per second during the smoke burst
    error_rate: float | None = None
    active_connections: int | None = None


class PaperTradingMetrics(_Model):
    trades_executed: float | None = None
    real_trades_blocked: float | None = None
    virtual_balance: float | None = None
    safety_checks_pass: bool = False


class ProductionMetrics(_Model):
    """The seed's metrics; fields validation cannot observe stay null."""

    application: ApplicationMetrics = Field(default_factory=ApplicationMetrics)
    paper_trading: PaperTradingMetrics = Field(default_factory=PaperTradingMetrics)


class Target(_Model):
    base_url: str
    color: str | None = None
    server_name: str | None = None


class ValidationReport(_Model):
    target: Target
    started_at: datetime
    finished_at: datetime
    duration_seconds: float
    passed: bool
    checks: list[CheckResult]
    status: DeploymentStatus
    metrics: ProductionMetrics
    error: dict[str, Any] | None = None

    @property
    def failed_blocking(self) -> list[CheckResult]:
        return [c for c in self.checks if c.failed_blocking]

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)
