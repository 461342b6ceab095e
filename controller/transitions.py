"""Pure functions from what happened to a Runbook to its next status, with conditions per the Kubernetes API
conventions (the types and reasons are in :mod:`runbooks.contract`).

Each function takes the status as it is and returns the fields to change, as a :class:`RunbookStatus` whose
set fields are the merge patch (:func:`patch`). ``Succeeded`` is Unknown while the run is pending, queued or
running, then True or False; ``Ready``, ``Reconciling`` and ``Stalled`` summarise it for kstatus and Argo CD.

A run may also wait for its change window (:func:`held`) or for approvals (:func:`approvals_counted`), both
``Queued`` with their own reason, and may end without executing (:func:`not_run`): refused by a policy, by a
person, or for want of approvals in time. Such a run has no exit code (no script ran) and result ``failed``.
"""

from __future__ import annotations

import datetime
from typing import Any

from runbooks.approval import Tally
from runbooks.contract import (
    LOG_LEVELS,
    NOT_RUN,
    WAITING,
    ConditionType,
    ExitCode,
    Reason,
    format_time,
    now,
    parse_time,
    reason_of,
)
from runbooks.models import (
    ApprovalRecord,
    Condition,
    EnvironmentState,
    Execution,
    LogLine,
    PolicyRequirement,
    RunbookStatus,
    RunSession,
)
from runbooks.policy import Allowed, Reject, Wait

LOG_LINES = 50
MESSAGE_CHARS = 1024
APPROVAL_RECORDS = 32  # the schema's bound of status.approvals
IGNORED_CHARS = 256  # the schema's bound of status.approvals[].ignored (its reason may name a requester)
POLICY_RULES = 64  # the schema's bound of status.policy.rules (a namespace may hold more policies' rules)

Update = tuple[str, str, str]  # (status, reason, message)


def patch(change: RunbookStatus) -> dict[str, Any]:
    """The merge patch of the status subresource: the fields ``change`` sets (None deletes)."""
    return change.model_dump(by_alias=True, exclude_unset=True, mode="json")


def conditions(
    old: list[Condition], generation: int, updates: dict[ConditionType, Update]
) -> list[Condition]:
    """Merge ``updates`` into the old conditions (of a Runbook, or a schedule); lastTransitionTime moves only
    when a status changes."""
    by_type = {c.type: c for c in old}
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
    queued, running = reason in WAITING, reason is Reason.RUNNING
    return {
        ConditionType.SUCCEEDED: ("Unknown", reason, message),
        ConditionType.QUEUED: ("True", reason, message) if queued else ("False", Reason.NOT_QUEUED, ""),
        ConditionType.RUNNING: ("True", reason, message) if running else ("False", reason, ""),
        ConditionType.READY: ("False", reason, message),
        ConditionType.RECONCILING: ("True", reason, message),
        ConditionType.STALLED: ("False", reason, ""),
    }


def _waiting(old: RunbookStatus, generation: int, reason: Reason, message: str) -> RunbookStatus:
    """A run that waits: for the lock, its change window or approvals. ``waitingUntil`` belongs to the wait
    for the window only: it is cleared when the run waits for anything else."""
    change = RunbookStatus(
        observed_generation=generation,
        conditions=conditions(old.conditions, generation, _in_progress(reason, message)),
    )
    if old.waiting_until is not None:
        change.waiting_until = None
    return change


def _ended(
    old: RunbookStatus, generation: int, success: bool, reason: Reason, message: str
) -> list[Condition]:
    return conditions(
        old.conditions,
        generation,
        {
            ConditionType.SUCCEEDED: ("True" if success else "False", reason, message),
            ConditionType.QUEUED: ("False", Reason.NOT_QUEUED, ""),
            ConditionType.RUNNING: ("False", reason, ""),
            ConditionType.READY: ("True" if success else "False", reason, message),
            ConditionType.RECONCILING: ("False", reason, ""),
            ConditionType.STALLED: ("False" if success else "True", reason, "" if success else message),
        },
    )


def pending(
    old: RunbookStatus,
    generation: int,
    *,
    request_id: str,
    window: str,
    target: str,
    session: RunSession | None = None,
) -> RunbookStatus:
    return RunbookStatus(
        observed_generation=generation,
        request_id=request_id,
        window=window,
        target=target,
        session=session,
        conditions=conditions(old.conditions, generation, _in_progress(Reason.PENDING, "accepted")),
    )


def queued(old: RunbookStatus, generation: int, message: str) -> RunbookStatus:
    return _waiting(old, generation, Reason.QUEUED, message)


def running(old: RunbookStatus, generation: int, execution: Execution, started_at: str) -> RunbookStatus:
    change = _waiting(old, generation, Reason.RUNNING, f"running as {execution.executor} {execution.name}")
    change.execution, change.attempts, change.started_at = execution, 1, started_at
    return change


def finished(old: RunbookStatus, generation: int, result: dict[str, Any], *, dry_run: bool) -> RunbookStatus:
    """The terminal status from a runner result (see runner/README.md), or from a ledger's record of a run
    that never executed (no exit code: a duplicate of a run cancelled before it started shows it so)."""
    code = None if result.get("exitCode") is None else int(result["exitCode"])
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
        conditions=_ended(old, generation, success, reason, message),
    )


# -- change windows and four eyes ---------------------------------------------------------------------


def held(old: RunbookStatus, generation: int, wait: Wait) -> RunbookStatus:
    """Outside its change window (a rule with ``outside: Wait``): Queued, reason OutsideChangeWindow, until
    ``wait.until``; the run holds no lock meanwhile."""
    change = _waiting(old, generation, Reason.OUTSIDE_CHANGE_WINDOW, wait.message)
    change.waiting_until = format_time(wait.until)
    return change


def pending_because(old: RunbookStatus, generation: int, message: str) -> RunbookStatus:
    """Pending, saying why: through the gate (its window open, its approvals given), no longer held, until
    it takes its lock or starts; or not able to start yet for want of what only the controller can get
    (the venue's calendar)."""
    return _waiting(old, generation, Reason.PENDING, message)


def refused(old: RunbookStatus, generation: int, reject: Reject) -> RunbookStatus:
    """Outside its change window with ``outside: Reject``: the run ends at once, without executing."""
    return not_run(old, generation, Reason.OUTSIDE_CHANGE_WINDOW, reject.message)


def requirement(allowed: Allowed, expires_at: datetime.datetime | None = None) -> PolicyRequirement:
    """What the policies asked: the rules that matched (the first POLICY_RULES), the approvals needed, when
    waiting for them ends."""
    return PolicyRequirement(
        rules=list(allowed.rules[:POLICY_RULES]),
        approvals_required=allowed.approvals,
        approvals_expire_at=format_time(expires_at) if expires_at else None,
    )


def approvals_counted(
    old: RunbookStatus, generation: int, tally: Tally, requirement: PolicyRequirement, zone: datetime.tzinfo
) -> RunbookStatus:
    """The status after counting the decisions on a run that needs approvals (``tally``): still waiting
    (AwaitingApproval, n of N, until a deadline said in ``zone``, as a change window's wait is), rejected
    or expired (the run ends without executing), or approved (only the record of who approved: the run
    goes on to its lock)."""
    records = approval_records(tally)
    if tally.state == Reason.APPROVED:
        return RunbookStatus(observed_generation=generation, approvals=records, policy=requirement)
    if tally.state == Reason.AWAITING_APPROVAL:
        until = tally.expires_at and tally.expires_at.astimezone(zone).isoformat(timespec="seconds")
        expires = f" until {until}" if until else ""
        change = _waiting(old, generation, Reason.AWAITING_APPROVAL, f"waiting for {tally.summary}{expires}")
    elif tally.state == Reason.REJECTED and tally.rejected_by is not None:
        vote = tally.rejected_by
        message = f"rejected by {vote.approver}" + (f": {vote.comment}" if vote.comment else "")
        change = not_run(old, generation, Reason.REJECTED, message)
    else:
        change = not_run(old, generation, Reason.APPROVAL_EXPIRED, f"expired with {tally.summary}")
    change.approvals, change.policy = records, requirement
    return change


def approvals_deadline(status: RunbookStatus) -> datetime.datetime | None:
    """When the run's wait for approvals ends, if its status says it waits for them now (written when that
    wait began, so that a restarted controller keeps it). A deadline left from an earlier wait is not this
    wait's: a run that has waited for its window or its lock since begins a new wait, and is not expired
    the moment it is counted again."""
    waiting = status.succeeded is not None and status.succeeded.reason == Reason.AWAITING_APPROVAL
    return parse_time(status.policy.approvals_expire_at) if waiting and status.policy else None


def approved_at(status: RunbookStatus) -> datetime.datetime | None:
    """When the run was approved, if its status says it was (the approvals its policies required, counted):
    the latest of those approvals."""
    required = status.policy.approvals_required if status.policy else 0
    counted = [r for r in status.approvals if r.decision == "Approve" and r.ignored is None]
    if not required or len(counted) < required:
        return None
    times = [t for t in (parse_time(r.at) for r in counted) if t is not None]
    return max(times) if times else None


def approval_records(tally: Tally) -> list[ApprovalRecord]:
    """The decisions of a tally, oldest first: those that counted, and those that did not with why (the
    latest of them, up to APPROVAL_RECORDS in all: at most six count, five approvals and a rejection)."""
    counted = [(vote, None) for vote in (*tally.approved_by, tally.rejected_by) if vote is not None]
    ignored = sorted(tally.ignored, key=lambda pair: pair[0].at)[-(APPROVAL_RECORDS - len(counted)) :]
    return [
        ApprovalRecord(
            approver=vote.approver,
            decision=vote.decision,
            at=format_time(vote.at),
            comment=vote.comment[:MESSAGE_CHARS],
            ignored=why if why is None else why[:IGNORED_CHARS],
        )
        for vote, why in sorted([*counted, *ignored], key=lambda pair: pair[0].at)
    ]


def cancel_message(cancel: dict[str, Any], *, started: bool) -> str:
    """What a cancelled run's status says: who cancelled (``spec.cancel.requestedBy``), whether it had
    started, and why (``spec.cancel.reason``); each part only when there is one."""
    who = cancel.get("requestedBy") or ""
    why = cancel.get("reason") or ""
    return (
        "cancelled"
        + (f" by {who}" if who else "")
        + ("" if started else " before it started")
        + (f": {why}" if why else "")
    )


def not_run(old: RunbookStatus, generation: int, reason: Reason, message: str) -> RunbookStatus:
    """The end of a run that never executed (``reason`` is one of contract.NOT_RUN): result failed, no exit
    code, one log line saying why; the REST API answers it as a failed run (200), not as an error (500)."""
    if reason not in NOT_RUN:
        raise ValueError(f"{reason} is not a reason to end a run without executing it")
    stamp = now()
    change = RunbookStatus(
        observed_generation=generation,
        result="failed",
        message=message[:MESSAGE_CHARS],
        finished_at=stamp,
        logs=[LogLine(time=stamp, level="ERROR", message=message[:MESSAGE_CHARS])],
        conditions=_ended(old, generation, False, reason, message),
    )
    if old.waiting_until is not None:
        change.waiting_until = None
    return change


def duplicate(
    old: RunbookStatus,
    generation: int,
    *,
    earlier: str,
    result: dict[str, Any],
    request_id: str,
    window: str | None,
    target: str,
    session: RunSession | None = None,
    message: str | None = None,
) -> RunbookStatus:
    """A Runbook whose request id already ran as ``earlier``: it shows that result (or ``message`` with
    ``result``, when it is not shown it) and never runs (so it resolves no ``window: auto``)."""
    message = message or f"request id already ran as {earlier}; not run again"
    change = finished(old, generation, {**result, "message": message}, dry_run=True)
    for condition in change.conditions:
        if condition.type in (ConditionType.SUCCEEDED, ConditionType.READY):
            condition.reason = Reason.DUPLICATE
    change.request_id, change.window, change.target, change.duplicate_of = request_id, window, target, earlier
    change.session = session
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
