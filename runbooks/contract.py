"""The contract between the runner, the controller and the API, in one place.

The commands, the runner's exit codes, the condition types and reasons of a Runbook's status, the run states
the REST API shows, the venue's session states, the log levels, who the audit names, the REST API's
permissions, and one time format.
Standard library only: the runner (which has no other dependency) imports it too.
"""

from __future__ import annotations

import datetime
from enum import IntEnum, StrEnum
from typing import Any


class Command(StrEnum):
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    FAILOVER = "failover"
    FAILBACK = "failback"
    DRILL = "drill"
    HEALTH_CHECK = "health_check"

    @property
    def mutating(self) -> bool:
        """Whether the command changes the platform (and so takes the target's lock)."""
        return self is not Command.HEALTH_CHECK

    @property
    def gated(self) -> bool:
        """Whether the health gate is checked after the command."""
        return self is not Command.STOP


class ConditionType(StrEnum):
    """``Succeeded`` is the one users wait on; ``Queued`` and ``Running`` say what happens now; ``Ready``,
    ``Reconciling`` and ``Stalled`` are the summary kstatus (Flux) and Argo CD understand."""

    SUCCEEDED = "Succeeded"
    QUEUED = "Queued"
    RUNNING = "Running"
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


class Reason(StrEnum):
    """CamelCase reasons of the conditions' transitions."""

    PENDING = "Pending"
    QUEUED = "Queued"
    NOT_QUEUED = "NotQueued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    INVALID_ARGUMENTS = "InvalidArguments"
    HEALTH_GATE_FAILED = "HealthGateFailed"
    TIMED_OUT = "TimedOut"
    EXECUTION_ERROR = "ExecutionError"
    CANCELLED = "Cancelled"
    DUPLICATE = "Duplicate"
    LOST = "Lost"  # what the run ran in (its Job, its folder) vanished: it is never started again
    QUOTA_EXCEEDED = "QuotaExceeded"  # created beyond the namespace's cap of unfinished Runbooks: never run
    # Change windows and four eyes (RunbookPolicy, RunbookApproval): a run waits (Queued) with the first two,
    # and ends failed without executing with the last three (OutsideChangeWindow when its rule says Reject).
    OUTSIDE_CHANGE_WINDOW = "OutsideChangeWindow"
    AWAITING_APPROVAL = "AwaitingApproval"
    APPROVED = "Approved"
    REJECTED = "Rejected"
    APPROVAL_EXPIRED = "ApprovalExpired"


# The reasons of a run that waits: the REST API shows it as queued. It holds no lock, but for Queued, which is
# the wait for the lock itself.
WAITING = frozenset({Reason.QUEUED, Reason.OUTSIDE_CHANGE_WINDOW, Reason.AWAITING_APPROVAL})
# The reasons of a run that ended without executing: no script ran, so it has no exit code (exitCode is left
# out, result is failed). Not a "script execution error" (125, the REST API's 500): the run was refused, by a
# policy or by a person, or cancelled before it started, which is a normal answer (200, status failed).
# (Cancelled is also the reason of a run stopped while it ran: that one has its exit code, 130.)
NOT_RUN = frozenset(
    {Reason.OUTSIDE_CHANGE_WINDOW, Reason.REJECTED, Reason.APPROVAL_EXPIRED, Reason.CANCELLED}
)


class ExitCode(IntEnum):
    """The runner's exit codes (see runner/README.md)."""

    SUCCESS = 0
    SCRIPT_FAILED = 1
    INVALID_ARGUMENTS = 2
    GATE_FAILED = 3
    TIMEOUT = 124
    NOT_EXECUTED = 125  # the script could not be executed: the REST API's 500
    CANCELLED = 130


_REASONS = {
    ExitCode.SUCCESS: Reason.SUCCEEDED,
    ExitCode.SCRIPT_FAILED: Reason.FAILED,
    ExitCode.INVALID_ARGUMENTS: Reason.INVALID_ARGUMENTS,
    ExitCode.GATE_FAILED: Reason.HEALTH_GATE_FAILED,
    ExitCode.TIMEOUT: Reason.TIMED_OUT,
    ExitCode.NOT_EXECUTED: Reason.EXECUTION_ERROR,
    ExitCode.CANCELLED: Reason.CANCELLED,
}


def is_exit_code(value: Any) -> bool:
    """Whether ``value`` is an exit code as a result carries it: an integer from 0 to 255 (not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255


def reason_of(exit_code: int) -> Reason:
    """The ``Succeeded`` condition's reason for a run that ended with ``exit_code``."""
    return _REASONS.get(exit_code, Reason.FAILED)  # type: ignore[call-overload]


class RunState(StrEnum):
    """A run's state as the REST API shows it."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"


def run_state(succeeded: str | None, reason: str | None) -> RunState:
    """The run state from the ``Succeeded`` condition's status and reason."""
    if succeeded == "True":
        return RunState.SUCCESS
    if succeeded == "False":
        return RunState.FAILED
    if reason in WAITING:
        return RunState.QUEUED
    if reason == Reason.RUNNING:
        return RunState.RUNNING
    return RunState.PENDING


def finished(succeeded: str | None) -> bool:
    """Whether a run has ended, from its ``Succeeded`` condition's status."""
    return succeeded in ("True", "False")


class SessionState(StrEnum):
    """A session state of the venue (runbooks.calendar computes it at an instant)."""

    PRE_OPEN = "pre_open"
    OPEN = "open"
    LUNCH_BREAK = "lunch_break"
    CLOSED = "closed"
    HOLIDAY = "holiday"


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def requester(spec: dict[str, Any]) -> str:
    """Who asked for a run, as the audit names them (the controller's lines, the API's entries): the
    spec's ``requestedBy``, or ``unknown`` for a Runbook that names nobody (one made with kubectl)."""
    return spec.get("requestedBy") or "unknown"


# -- time ---------------------------------------------------------------------------------------------
# Every timestamp mdops writes (status, conditions, logs, results, annotations) is RFC 3339 in UTC with
# milliseconds and a ``Z``: ``2026-11-26T08:00:00.123Z``. The REST API shows them in the exchange's zone.


# The REST API's permissions, which a token is given in its tokens file; `mdops` names the one an answer
# lacks. A token with EXECUTE runs every command, one with ``runbooks:execute:<command>`` that one only.
STATUS_READ = "status:read"
METRICS_READ = "metrics:read"
EXECUTE = "runbooks:execute"
APPROVE = "runbooks:approve"  # approve or reject others' runs (four eyes)
PERMISSIONS = frozenset(
    {STATUS_READ, METRICS_READ, EXECUTE, APPROVE} | {f"{EXECUTE}:{c.value}" for c in Command}
)


def is_token(text: str) -> bool:
    """Whether ``text`` can be a bearer token of the REST API: visible ASCII (``!`` to ``~``) only, what an
    HTTP header carries as it is. The API refuses another at start, the CLI before sending it."""
    return all("!" <= character <= "~" for character in text) and text != ""


def format_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now() -> str:
    return format_time(datetime.datetime.now(datetime.UTC))


# The times a run may report (a health report's ``generated_at``): any real clock is in this range, and every
# zone can show them (near the years 1 and 9999 a conversion to another offset overflows).
EARLIEST = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
LATEST = datetime.datetime(2200, 1, 1, tzinfo=datetime.UTC)


def parse_time(value: Any) -> datetime.datetime | None:
    """An RFC 3339 / ISO 8601 timestamp as an aware datetime (UTC when it names no zone), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


# -- log lines ----------------------------------------------------------------------------------------
# A Runbook's status keeps the last lines of its run's log, a window that moves on as lines come. Whoever
# compares two versions of that window (the API's live updates, mdops following a run) needs the same rule.


def new_lines(old: list[dict[str, str]], new: list[dict[str, str]]) -> list[dict[str, str]]:
    """The lines of ``new`` that ``old`` did not show. Both are the last lines of one growing log, so ``new``
    starts with a tail of ``old``: the longest one that matches (lines compared whole) is what they share;
    with no overlap, every line of ``new`` is new. Lines that are equal in every field cannot be told apart:
    when the windows repeat themselves line for line, the longest match (the fewest new lines) wins."""
    for start in range(max(0, len(old) - len(new)), len(old)):
        overlap = len(old) - start
        if old[start:] == new[:overlap]:
            return new[overlap:]
    return list(new)
