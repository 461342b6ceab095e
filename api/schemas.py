"""The REST shapes of the Ops Console contract, ``docs/ops-console-api.md`` (separate from the Runbook CRD
models), and of the API's errors."""

from __future__ import annotations

import re
from typing import Annotated, Any
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
)
from pydantic_core import PydanticCustomError

from runbooks.contract import Command, RunState, SessionState
from runbooks.models import (
    ApprovalDecision,
    ConfigSet,
    Name,
    ReasonText,
    RequestId,
    TimeoutSeconds,
    WindowChoice,
)
from runbooks.schedule import SLOT_REQUEST_PREFIX


def _date_time(value: object) -> object:
    """A time as RFC 3339 writes it; not a number of seconds, which pydantic would take too."""
    if not isinstance(value, str) or not re.match(r"[0-9]{4}-", value):
        raise ValueError("not a date and time (2026-01-02T10:00:00+08:00)")
    return value


DateTime = Annotated[AwareDatetime, BeforeValidator(_date_time)]  # with its UTC offset


def _decimal(value: object) -> object:
    """A query's integer as decimal digits, with a minus or not: pydantic would take ``1.0``, ``1_0``,
    ``+1`` and `` 1`` as integers too, and a careless client would never learn that its value is wrong."""
    if isinstance(value, str) and not re.fullmatch(r"-?[0-9]+", value):
        raise PydanticCustomError("int_parsing", "Input should be a valid integer: decimal digits, e.g. 5")
    return value


DECIMAL = BeforeValidator(_decimal)  # of every integer query parameter: Annotated[int, Query(...), DECIMAL]

# -- execute ---------------------------------------------------------------------------------------


def _integral(value: Any) -> Any:
    """JSON has one kind of number: 300.0 is the integer 300 (so says JSON Schema's integer); 300.5 is not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _not_a_slots(request_id: str) -> str:
    if request_id.startswith(SLOT_REQUEST_PREFIX):
        raise ValueError(f"request ids that begin with {SLOT_REQUEST_PREFIX} are the RunbookSchedules' own")
    return request_id


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
    mode: Annotated[Name, Strict()] | None = Field(None, description="Environment mode.")
    window: WindowChoice | None = Field(
        None, description="Trading window; auto: resolved from the session calendar when the run starts."
    )
    profile: Annotated[Name, Strict()] | None = Field(None, description="Feed profile.")
    config: Annotated[ConfigSet, Strict()] | None = Field(None, description="Configuration set.")
    request_id: Annotated[RequestId, Strict(), AfterValidator(_not_a_slots)] | None = Field(
        None,
        description="Idempotency key: the same id returns the same run. Default: a new UUID4. Ids that "
        f"begin with {SLOT_REQUEST_PREFIX} are the schedules' own.",
    )
    enforce: StrictBool | None = Field(None, description="Fail the run when the health gate fails.")
    dry_run: StrictBool | None = Field(None, description="Plan only; changes nothing.")
    reason: Annotated[ReasonText, Strict()] | None = Field(None, description="Why (kept in the audit).")
    timeout_seconds: Annotated[TimeoutSeconds, Strict(), BeforeValidator(_integral)] | None = Field(
        None, description="Stop and fail the run after this."
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
    """Every error but a 422."""

    detail: str


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(description="Where: body, query or path, then the field.")
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    """A 422: what in the request is invalid (the request's values are never echoed back)."""

    detail: list[ValidationIssue]


# -- status ----------------------------------------------------------------------------------------


class RunbookSummary(RunbookResult):
    name: str
    uid: str | None = Field(
        description="The Runbook's metadata.uid: a run deleted and asked for again with its request id is "
        "another Runbook, with another uid, even within the second its creation time is counted in."
    )
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


class ResultingState(BaseModel):
    """The environment state a run reported, named as in status (never for dry runs)."""

    environment_mode: str | None
    active_profile: str | None
    active_window: str | None


class ConditionView(BaseModel):
    """One of the Runbook's status conditions, its time in the configured zone."""

    type: str
    status: str
    reason: str
    message: str
    last_transition_time: str


class CancelView(BaseModel):
    """The Runbook's spec.cancel: who cancelled the run, and why."""

    requested_by: str | None = Field(
        description="The token's (or Kubernetes user's) name; null: nobody named."
    )
    reason: str


class RunView(BaseModel):
    """One run: the execute response's shape, its ``runbook`` extended as in status' history, with the
    resulting state, the Runbook's conditions (its Succeeded condition's reason says why it waits) and
    its cancel."""

    runbook: RunbookSummary
    health: dict[str, Any] | None
    state: ResultingState | None = Field(description="null until the run reports one, and for a dry run.")
    conditions: list[ConditionView]
    cancel: CancelView | None = Field(
        description="Added to execute's shape: set once the run was asked to be cancelled (it may still be "
        "running until the stop reaches it); null otherwise."
    )
    state_unreported: bool = Field(
        description="Added to execute's shape: the run may have changed the platform without reporting the "
        "state it left (a command that changes it, not a dry run, that ran and failed without a report: "
        "stopped at its timeout, cancelled, its runner dead); the status names the newest such run in "
        "state_stale_by until a run reports the state again."
    )


class RunbooksPage(BaseModel):
    """A page of the runs list, newest first."""

    runbooks: list[RunbookSummary]
    matched: int = Field(description="How many runs pass the filters, on all pages together.")
    next_cursor: str | None = Field(
        description="The next (older) page: pass it as `cursor` with the same filters; null on the last page."
    )


class AuditEntry(BaseModel):
    request_id: str
    who: str
    what: str
    why: str
    when: str | None
    outcome: str


class SessionView(BaseModel):
    """The venue's session now (``MDOPS_VENUE``), from the calendar library; nulls until it is loaded."""

    venue: str
    state: SessionState | None = Field(description="pre_open, open, lunch_break, closed or holiday.")
    next_open: str | None = Field(description="The next session's open (ISO 8601, the configured zone).")
    next_close: str | None = Field(description="The next close, of this session or the next.")
    calendar: str = Field(description="The calendar library and its version, e.g. exchange_calendars 4.13.2.")
    note: str | None = Field(None, description="Why the state is unknown: still loading, an unknown venue.")


class RunReference(BaseModel):
    request_id: str
    command: str
    exit_code: int | None
    finished_at: str | None = Field(description="ISO 8601 with the configured zone's offset.")


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
    session: SessionView = Field(description="Added to the spec's shape: the venue's session now.")
    state_reported_by: RunReference | None = Field(
        description="Added to the spec's shape: the run whose reported state environment_mode, "
        "active_profile and active_window show (the newest finished run, not a dry run, that reported one); "
        "null if none did."
    )
    state_stale_by: RunReference | None = Field(
        description="Added to the spec's shape: the newest run since state_reported_by that may have changed "
        "the platform without reporting the state it left (a command that changes it, not a dry run, that "
        "ran and failed without a report: stopped at its timeout, cancelled, its runner dead); null if none. "
        "Otherwise the three environment fields may be stale: a health_check reports the state as it is."
    )


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


# -- probes ----------------------------------------------------------------------------------------


class Readiness(BaseModel):
    status: str = Field(description="ready, or not ready")
    reason: str | None = Field(None, description="Why it is not ready.")
    venue: str = Field(description="The venue whose sessions count (MDOPS_VENUE).")
    session: SessionState | None = Field(description="Its state now; null until its calendar is loaded.")
    calendar: str = Field(description="The calendar library and its version.")


# -- approvals (four eyes) -------------------------------------------------------------------------


class DecisionRequest(BaseModel):
    """The body of approve and reject (optional)."""

    model_config = ConfigDict(extra="forbid")

    comment: Annotated[ReasonText, Strict()] = Field("", description="Why, for the audit.")
    created_at: DateTime | None = Field(
        None,
        description="The run decided on: its created_at as the client was shown it (a run's page, the runs "
        "list). A request id freed again (its run expired, was rejected or was deleted before it ran) may "
        "be asked for anew, with other parameters: when its run now is another one, the decision is "
        "refused (409) and nothing is recorded. Without it, the decision is on the run the request id names "
        "now.",
    )
    uid: UUID | None = Field(
        None,
        description="The run decided on: its uid as the client was shown it (a run's page, mdops get, the "
        "runs list). Creation times are whole seconds: a run deleted and asked for again within the second "
        "the one shown was made in has its created_at, never its uid. When the request id names another "
        "Runbook now, the decision is refused (409) and nothing is recorded.",
    )


class DecisionResponse(BaseModel):
    """The RunbookApproval made for the token."""

    name: str = Field(description="The RunbookApproval's name.")
    request_id: str
    decision: ApprovalDecision
    approver: str = Field(description="The token's name.")
    requester: str = Field(description="Who asked for the run (its requestedBy).")
    comment: str
    created_at: str | None


# -- cancel ----------------------------------------------------------------------------------------


class CancelRequest(BaseModel):
    """The body of cancel (optional)."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[ReasonText, Strict()] = Field("", description="Why, for the audit.")
    uid: UUID | None = Field(
        None,
        description="The run cancelled: its uid as the client was shown it (a run's page, mdops get). When "
        "the request id names another Runbook now (the one shown deleted and asked for again), the cancel "
        "is refused (409) and nothing is cancelled. Without it, the cancel is of the run the request id "
        "names now.",
    )


class CancelRefused(RunView):
    """A cancel refused because the run has finished: why, and the run as it ended."""

    detail: str


# -- schedules -------------------------------------------------------------------------------------


class ScheduleView(BaseModel):
    name: str
    schedule: str | None = Field(description="The trigger in words, e.g. every 5m during open.")
    command: str | None
    profile: str | None
    mode: str | None
    suspended: bool
    concurrency_policy: str | None
    next_slots: list[str] | None = Field(
        description="The next slots that will run (none while suspended); null when they cannot be computed."
    )
    last_slot: str | None
    last_runbook: str | None = Field(description="The name of the Runbook of the latest slot run.")
    last_request_id: str | None = Field(
        description="Its request id, to read it by (/api/ops/runbooks/{request_id}); null if the API "
        "does not hold it (deleted)."
    )
    last_result: str | None
    missed_slots: int
    skipped_slots: int
    problem: str | None = Field(description="Why the schedule does not run as it says, if it does not.")


class SchedulesResponse(BaseModel):
    schedules: list[ScheduleView]
    truncated: bool = Field(description="More schedules exist than one answer lists (see MAX_SCHEDULES).")


# -- the console -----------------------------------------------------------------------------------


class ExecuteDefaults(BaseModel):
    mode: str
    window: str
    profile: str
    config: str
    enforce: bool
    timeout_seconds: int


class WhoamiResponse(BaseModel):
    name: str = Field(description="The token's name (recorded as requestedBy).")
    permissions: list[str]
    commands: list[Command] = Field(description="The commands this token may execute.")
    mutating_commands: list[Command] = Field(
        description="The commands that change the platform (the console plans them first)."
    )
    execute_defaults: ExecuteDefaults = Field(description="What execute fills in for a field left out.")
    time_zone: str = Field(description="The exchange's time zone (IANA name): the API's times are in it.")
    events_heartbeat_seconds: float = Field(
        description="Seconds between the event stream's heartbeats: a stream silent for three is dropped."
    )
    execute_wait_seconds: float = Field(
        description="How long execute waits for the run's end before it answers 202: a client waits longer "
        "for its answer, then takes it as lost (the run may exist: look it up by its request id)."
    )
