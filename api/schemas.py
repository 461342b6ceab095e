"""The REST shapes of ``spec/ops-console-api.md`` (separate from the Runbook CRD models)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from runbooks.models import NAME_PATTERN, Command

RunState = Literal["pending", "queued", "running", "success", "failed"]


# -- execute ---------------------------------------------------------------------------------------


class ExecuteRequest(BaseModel):
    """Only ``command`` is required; a field left out (or null) takes its default from the settings."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "command": "failover",
                    "mode": "live",
                    "window": "day",
                    "profile": "backup",
                    "config": "backup",
                    "request_id": "6f1c2d9e-2b7a-4c8e-9d51-3f0e8a7b1c22",
                    "enforce": False,
                    "dry_run": False,
                    "reason": "manual failover",
                }
            ]
        },
    )

    command: Command = Field(description="The runbook command.")
    mode: StrictStr | None = Field(None, max_length=63, pattern=NAME_PATTERN, description="Environment mode.")
    window: Literal["day", "night", "auto"] | None = Field(
        None, description="Trading window; auto: resolved from the session calendar when the run starts."
    )
    profile: StrictStr | None = Field(None, max_length=63, pattern=NAME_PATTERN, description="Feed profile.")
    config: StrictStr | None = Field(None, max_length=253, description="Configuration set.")
    request_id: StrictStr | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=NAME_PATTERN,
        description="Idempotency key: the same id returns the same run. Default: a new UUID4.",
    )
    enforce: StrictBool | None = Field(None, description="Fail the run when the health gate fails.")
    dry_run: StrictBool | None = Field(None, description="Plan only; changes nothing.")
    reason: StrictStr | None = Field(None, max_length=1024, description="Why (kept in the audit).")
    timeout_seconds: StrictInt | None = Field(
        None, ge=1, le=86400, description="Stop and fail the run after this."
    )


class LogEntry(BaseModel):
    level: str
    message: str


class RunbookResult(BaseModel):
    request_id: str
    command: str
    exit_code: int | None
    status: RunState
    finished_at: str | None = Field(description="ISO 8601 with the configured zone's offset.")
    logs: list[LogEntry]


class ExecuteResponse(BaseModel):
    runbook: RunbookResult
    health: dict[str, Any] | None


class ErrorResponse(BaseModel):
    detail: str


# -- status ----------------------------------------------------------------------------------------


class RunbookSummary(RunbookResult):
    name: str
    mode: str | None
    window: str | None
    profile: str | None
    config: str | None
    enforce: bool
    dry_run: bool
    reason: str
    requested_by: str | None
    created_at: str | None
    started_at: str | None
    message: str | None


class AuditEntry(BaseModel):
    request_id: str
    who: str
    what: str
    why: str
    when: str | None
    outcome: str


class StatusResponse(BaseModel):
    environment_mode: str | None
    active_profile: str | None
    active_window: str | None
    last_runbook: RunbookSummary | None
    runbook_history: list[RunbookSummary]
    health_by_request: dict[str, dict[str, Any] | None]
    last_health: dict[str, Any] | None
    last_exit_codes: dict[str, int]
    last_updated_at: str | None
    audit: list[AuditEntry]


# -- metrics ---------------------------------------------------------------------------------------


class MetricSample(BaseModel):
    metric: str
    value: float | int | None
    unit: str | None
    stale: bool
    context: dict[str, Any] | None = Field(
        None, description="Present when there is something to say: totals, window, a note, an aggregation."
    )


class SummaryResponse(BaseModel):
    coverage_ratio: MetricSample
    throughput_mps: MetricSample
    failover_latency_ms: MetricSample
    runbook_exit_code: MetricSample
    consumer_backlog_messages: MetricSample


class TimeseriesPoint(BaseModel):
    timestamp: str
    value: float | int | None


class TimeseriesResponse(BaseModel):
    metric: str
    unit: str | None
    points: list[TimeseriesPoint]
