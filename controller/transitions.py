"""Pure functions from what happened to a Runbook to its next status, with conditions per the Kubernetes API
conventions (the types and reasons are in :mod:`runbooks.contract`).

Each function takes the status as it is and returns the fields to change, as a :class:`RunbookStatus` whose
set fields are the merge patch (:func:`patch`). ``Succeeded`` is Unknown while the run is pending, queued or
running, then True or False; ``Ready``, ``Reconciling`` and ``Stalled`` summarise it for kstatus and Argo CD.
"""

from __future__ import annotations

from typing import Any

from runbooks.contract import LOG_LEVELS, ConditionType, ExitCode, Reason, now, reason_of
from runbooks.models import Condition, EnvironmentState, Execution, LogLine, RunbookStatus

LOG_LINES = 50
MESSAGE_CHARS = 1024

Update = tuple[str, str, str]  # (status, reason, message)


def patch(change: RunbookStatus) -> dict[str, Any]:
    """The merge patch of the status subresource: the fields ``change`` sets (None deletes)."""
    return change.model_dump(by_alias=True, exclude_unset=True, mode="json")


def _conditions(old: RunbookStatus, generation: int, updates: dict[ConditionType, Update]) -> list[Condition]:
    """Merge ``updates`` into the old conditions; lastTransitionTime moves only when a status changes."""
    by_type = {c.type: c for c in old.conditions}
    stamp = now()
    for kind, (status, reason, message) in updates.items():
        previous = by_type.get(kind)
        changed = previous is None or previous.status != status
        by_type[kind] = Condition(
            type=kind,
            status=status,
            reason=reason,
            message=message[:MESSAGE_CHARS],
            last_transition_time=stamp if changed else previous.last_transition_time,
            observed_generation=generation,
        )
    return list(by_type.values())


def _in_progress(reason: Reason, message: str) -> dict[ConditionType, Update]:
    queued, running = reason is Reason.QUEUED, reason is Reason.RUNNING
    return {
        ConditionType.SUCCEEDED: ("Unknown", reason, message),
        ConditionType.QUEUED: ("True", reason, message) if queued else ("False", Reason.NOT_QUEUED, ""),
        ConditionType.RUNNING: ("True", reason, message) if running else ("False", reason, ""),
        ConditionType.READY: ("False", reason, message),
        ConditionType.RECONCILING: ("True", reason, message),
        ConditionType.STALLED: ("False", reason, ""),
    }


def pending(
    old: RunbookStatus, generation: int, *, request_id: str, window: str, target: str
) -> RunbookStatus:
    return RunbookStatus(
        observed_generation=generation,
        request_id=request_id,
        window=window,
        target=target,
        conditions=_conditions(old, generation, _in_progress(Reason.PENDING, "accepted")),
    )


def queued(old: RunbookStatus, generation: int, message: str) -> RunbookStatus:
    return RunbookStatus(
        observed_generation=generation,
        conditions=_conditions(old, generation, _in_progress(Reason.QUEUED, message)),
    )


def running(old: RunbookStatus, generation: int, execution: Execution, started_at: str) -> RunbookStatus:
    message = f"running as {execution.executor} {execution.name}"
    return RunbookStatus(
        observed_generation=generation,
        execution=execution,
        attempts=1,
        started_at=started_at,
        conditions=_conditions(old, generation, _in_progress(Reason.RUNNING, message)),
    )


def finished(old: RunbookStatus, generation: int, result: dict[str, Any], *, dry_run: bool) -> RunbookStatus:
    """The terminal status from a runner result (see runner/README.md)."""
    code = int(result["exitCode"])
    success = code == ExitCode.SUCCESS
    reason = Reason.LOST if result.get("reason") == Reason.LOST else reason_of(code)
    message = result.get("message") or ("succeeded" if success else f"failed with exit code {code}")
    return RunbookStatus(
        observed_generation=generation,
        exit_code=code,
        result="success" if success else "failed",
        message=message[:MESSAGE_CHARS],
        started_at=result.get("startedAt") or old.started_at or now(),
        finished_at=result.get("finishedAt") or now(),
        logs=log_lines(result.get("logs") or []),
        health=result.get("health"),
        state=None if dry_run else _state(result.get("state")),
        conditions=_conditions(
            old,
            generation,
            {
                ConditionType.SUCCEEDED: ("True" if success else "False", reason, message),
                ConditionType.QUEUED: ("False", Reason.NOT_QUEUED, ""),
                ConditionType.RUNNING: ("False", reason, ""),
                ConditionType.READY: ("True" if success else "False", reason, message),
                ConditionType.RECONCILING: ("False", reason, ""),
                ConditionType.STALLED: ("False" if success else "True", reason, "" if success else message),
            },
        ),
    )


def duplicate(
    old: RunbookStatus,
    generation: int,
    *,
    earlier: str,
    result: dict[str, Any],
    request_id: str,
    window: str | None,
    target: str,
) -> RunbookStatus:
    """A Runbook whose request id already ran as ``earlier``: it shows that result and never runs (so it
    resolves no ``window: auto``)."""
    message = f"request id already ran as {earlier}; not run again"
    change = finished(old, generation, {**result, "message": message}, dry_run=True)
    for condition in change.conditions:
        if condition.type in (ConditionType.SUCCEEDED, ConditionType.READY):
            condition.reason = Reason.DUPLICATE
    change.request_id, change.window, change.target, change.duplicate_of = request_id, window, target, earlier
    return change


def over_quota(old: RunbookStatus, generation: int, *, unfinished: int, cap: int) -> RunbookStatus:
    """A Runbook created while its namespace holds ``cap`` unfinished Runbooks already: it fails at once,
    never runs, and leaves its request id unused (deleted and created again later, it runs)."""
    message = (
        f"not run: {unfinished} Runbooks in this namespace are unfinished, at the cap of {cap} "
        "(MDOPS_MAX_UNFINISHED_PER_NAMESPACE); create it again once fewer are"
    )
    result = {"exitCode": ExitCode.NOT_EXECUTED, "message": message}
    change = finished(old, generation, result, dry_run=True)
    for condition in change.conditions:
        if condition.reason == reason_of(ExitCode.NOT_EXECUTED):
            condition.reason = Reason.QUOTA_EXCEEDED
    return change


def waiting_for_original(
    old: RunbookStatus, generation: int, original: str, request_id: str
) -> RunbookStatus:
    """A duplicate whose original is still running: it waits for that result."""
    message = f"request id {request_id} is running as {original}; waiting for its result"
    change = queued(old, generation, message)
    change.duplicate_of = original
    return change


def progress_logs(lines: list[dict[str, Any]]) -> RunbookStatus:
    return RunbookStatus(logs=log_lines(lines))


def log_lines(lines: list[dict[str, Any]]) -> list[LogLine]:
    """The last log lines, each made valid for the schema (a level it knows, a bounded message)."""
    return [_log_line(line) for line in lines[-LOG_LINES:]]


def _log_line(line: dict[str, Any]) -> LogLine:
    level = str(line.get("level", "INFO")).upper()
    return LogLine(
        time=str(line.get("time", "")),
        level=level if level in LOG_LEVELS else "INFO",
        message=str(line.get("message", ""))[:MESSAGE_CHARS],
    )


def _state(state: dict[str, Any] | None) -> EnvironmentState | None:
    if not state:
        return None
    return EnvironmentState(**{key: str(value) for key, value in state.items() if value is not None})
