"""The controller's status transitions, as pure functions: what a Runbook's status becomes at each step."""

from __future__ import annotations

import datetime

import pytest

from controller import transitions
from runbooks.approval import Tally, Vote, tally
from runbooks.contract import NOT_RUN, ConditionType, ExitCode, Reason
from runbooks.models import ApprovalRecord, Execution, PolicyRequirement, RunbookStatus, RunSession
from runbooks.policy import Allowed, Reject, Wait
from tests.unit.conftest import at

TYPES = [c.value for c in ConditionType]


def conditions(status: RunbookStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def apply(old: RunbookStatus, change: RunbookStatus) -> RunbookStatus:
    """The status after the merge patch ``change``, as the API server would store it."""
    return RunbookStatus.model_validate({**old.to_k8s(), **transitions.patch(change)})


def result(code: int = 0, **extra) -> dict:
    return {
        "exitCode": code,
        "result": "success" if code == 0 else "failed",
        "message": extra.pop("message", ""),
        "startedAt": "2026-11-26T08:00:00.000Z",
        "finishedAt": "2026-11-26T08:00:01.000Z",
        **extra,
    }


def test_every_step_sets_all_six_conditions_for_its_generation():
    status = apply(
        RunbookStatus(), transitions.pending(RunbookStatus(), 3, request_id="r", window="day", target="t")
    )
    assert sorted(conditions(status)) == sorted(TYPES)
    assert {c.observed_generation for c in status.conditions} == {3}
    assert (status.request_id, status.window, status.target) == ("r", "day", "t")


@pytest.mark.parametrize(
    ("step", "succeeded", "queued", "running", "ready", "reconciling", "stalled"),
    [
        ("pending", ("Unknown", "Pending"), "False", "False", "False", "True", "False"),
        ("queued", ("Unknown", "Queued"), "True", "False", "False", "True", "False"),
        ("running", ("Unknown", "Running"), "False", "True", "False", "True", "False"),
        ("success", ("True", "Succeeded"), "False", "False", "True", "False", "False"),
        ("failure", ("False", "Failed"), "False", "False", "False", "False", "True"),
    ],
)
def test_conditions_of_each_step(step, succeeded, queued, running, ready, reconciling, stalled):
    old = RunbookStatus()
    change = {
        "pending": lambda: transitions.pending(old, 1, request_id="r", window="day", target="t"),
        "queued": lambda: transitions.queued(old, 1, "waiting for a"),
        "running": lambda: transitions.running(old, 1, Execution(executor="local", name="pid/1"), "now"),
        "success": lambda: transitions.finished(old, 1, result(0), dry_run=False),
        "failure": lambda: transitions.finished(old, 1, result(1), dry_run=False),
    }[step]()
    got = {kind: status for kind, (status, _) in conditions(apply(old, change)).items()}
    assert conditions(apply(old, change))["Succeeded"] == succeeded
    assert (got["Queued"], got["Running"], got["Ready"], got["Reconciling"], got["Stalled"]) == (
        queued,
        running,
        ready,
        reconciling,
        stalled,
    )


@pytest.mark.parametrize("code", list(ExitCode))
def test_the_reason_of_a_finished_run_follows_its_exit_code(code):
    status = apply(RunbookStatus(), transitions.finished(RunbookStatus(), 1, result(code), dry_run=False))
    expected = {
        0: "Succeeded",
        1: "Failed",
        2: "InvalidArguments",
        3: "HealthGateFailed",
        124: "TimedOut",
        125: "ExecutionError",
        130: "Cancelled",
    }[code]
    assert conditions(status)["Succeeded"][1] == expected
    assert (status.exit_code, status.result) == (code, "success" if code == 0 else "failed")
    assert status.finished


def test_transition_time_moves_only_when_a_condition_changes_status():
    first = apply(RunbookStatus(), transitions.queued(RunbookStatus(), 1, "waiting for a"))
    stamps = {c.type: c.last_transition_time for c in first.conditions}
    for condition in first.conditions:
        condition.last_transition_time = "2000-01-01T00:00:00.000Z"
    second = apply(first, transitions.queued(first, 1, "waiting for b"))
    assert {c.type: c.last_transition_time for c in second.conditions} == dict.fromkeys(
        stamps, "2000-01-01T00:00:00.000Z"
    )
    third = apply(second, transitions.running(second, 1, Execution(executor="job", name="j"), "now"))
    moved = {c.type for c in third.conditions if c.last_transition_time != "2000-01-01T00:00:00.000Z"}
    assert moved == {"Queued", "Running"}  # the others kept their status


def test_dry_runs_report_no_state_and_real_runs_do():
    report = result(0, state={"environment_mode": "live", "active_profile": "backup", "active_window": None})
    real = apply(RunbookStatus(), transitions.finished(RunbookStatus(), 1, report, dry_run=False))
    dry = apply(RunbookStatus(), transitions.finished(RunbookStatus(), 1, report, dry_run=True))
    assert real.state is not None and (real.state.environment_mode, real.state.active_profile) == (
        "live",
        "backup",
    )
    assert real.state.active_window is None
    assert dry.state is None
    assert "state" in transitions.patch(transitions.finished(RunbookStatus(), 1, report, dry_run=True))


def test_logs_are_bounded_and_made_valid():
    lines = [{"time": "t", "level": "info", "message": "x" * 5000}] + [
        {"time": "t", "level": "LOUD", "message": str(i)} for i in range(80)
    ]
    status = apply(RunbookStatus(), transitions.progress_logs(lines))
    assert len(status.logs) == transitions.LOG_LINES
    assert {line.level for line in status.logs} == {"INFO"}
    assert status.logs[-1].message == "79"
    assert transitions.patch(transitions.progress_logs(lines)).keys() == {"logs"}


def test_a_duplicate_shows_the_earlier_result_and_never_a_state():
    earlier = result(3, message="health gate failed", state={"active_profile": "backup"})
    change = transitions.duplicate(
        RunbookStatus(),
        1,
        earlier="ns/first",
        result=earlier,
        request_id="r",
        window="day",
        target="ns/default",
    )
    status = apply(RunbookStatus(), change)
    assert (status.exit_code, status.duplicate_of, status.state) == (3, "ns/first", None)
    assert conditions(status)["Succeeded"] == ("False", Reason.DUPLICATE)
    assert status.message == "request id already ran as ns/first; not run again"


def test_a_runbook_beyond_the_namespaces_cap_fails_at_once_with_its_own_reason_and_the_numbers():
    status = apply(RunbookStatus(), transitions.over_quota(RunbookStatus(), 1, unfinished=500, cap=500))
    assert (status.result, status.exit_code, status.execution) == ("failed", ExitCode.NOT_EXECUTED, None)
    assert conditions(status)["Succeeded"] == ("False", Reason.QUOTA_EXCEEDED)
    assert conditions(status)["Stalled"] == ("True", Reason.QUOTA_EXCEEDED)
    assert "500 Runbooks in this namespace are unfinished, at the cap of 500" in status.message
    assert "MDOPS_MAX_UNFINISHED_PER_NAMESPACE" in status.message


def test_a_patch_holds_only_what_changed():
    patch = transitions.patch(transitions.queued(RunbookStatus(), 2, "waiting"))
    assert patch.keys() == {"observedGeneration", "conditions"}


# -- change windows and four eyes ---------------------------------------------------------------------

HK = datetime.timezone(datetime.timedelta(hours=8))
REQUESTED = datetime.datetime(2026, 1, 5, 10, 0, tzinfo=HK)
RULES = Allowed(approvals=2, expire_after=datetime.timedelta(hours=1), rules=("four-eyes/failover",))


def _vote(approver: str, minute: int, decision: str = "Approve", comment: str = "") -> Vote:
    return Vote(approver, decision, REQUESTED + datetime.timedelta(minutes=minute), "alice", comment)


def _counted(*votes: Vote, minute: int = 30) -> Tally:
    return tally(
        votes,
        runbook_uid="",
        requester="alice",
        required=2,
        requested_at=REQUESTED,
        waiting_since=REQUESTED,
        now=REQUESTED + datetime.timedelta(minutes=minute),
        expire_after=datetime.timedelta(hours=1),
    )


def test_a_run_held_outside_its_window_is_queued_until_a_time_and_then_no_longer():
    wait = Wait(REQUESTED + datetime.timedelta(hours=6), "drill waits until 16:00")
    held = apply(RunbookStatus(), transitions.held(RunbookStatus(), 1, wait))
    assert conditions(held)["Succeeded"] == ("Unknown", Reason.OUTSIDE_CHANGE_WINDOW)
    assert conditions(held)["Queued"] == ("True", Reason.OUTSIDE_CHANGE_WINDOW)
    assert (held.waiting_until, held.run_state, held.finished) == (
        "2026-01-05T08:00:00.000Z",
        "queued",
        False,
    )
    # Its window came: it waits for the lock, then runs; the time it waited for is gone from the status.
    locked = apply(held, transitions.queued(held, 1, "waiting for x"))
    assert (locked.waiting_until, conditions(locked)["Queued"]) == (None, ("True", Reason.QUEUED))
    assert "waitingUntil" not in transitions.patch(transitions.queued(locked, 1, "waiting for y"))
    assert (
        apply(held, transitions.running(held, 1, Execution(executor="local", name="1"), "t")).waiting_until
        is None
    )


@pytest.mark.parametrize("reason", sorted(NOT_RUN))
def test_a_run_that_ends_without_executing_has_no_exit_code_and_failed(reason):
    status = apply(RunbookStatus(), transitions.not_run(RunbookStatus(), 1, reason, "not now"))
    assert (status.exit_code, status.result, status.run_state, status.finished) == (
        None,
        "failed",
        "failed",
        True,
    )
    assert conditions(status)["Succeeded"] == ("False", reason)
    assert conditions(status)["Stalled"] == ("True", reason)
    assert [(line.level, line.message) for line in status.logs] == [("ERROR", "not now")]
    assert status.finished_at and status.started_at is None


def test_only_the_reasons_of_a_refusal_end_a_run_without_executing():
    with pytest.raises(ValueError, match="Failed"):
        transitions.not_run(RunbookStatus(), 1, Reason.FAILED, "no")


def test_a_rejecting_rule_ends_the_run_at_once():
    reject = Reject("restart may not start now: live-restarts: blackout until 2027-01-02T00:00:00+08:00")
    status = apply(RunbookStatus(), transitions.refused(RunbookStatus(), 1, reject))
    assert (status.exit_code, status.result, status.message) == (None, "failed", reject.message)
    assert conditions(status)["Succeeded"] == ("False", Reason.OUTSIDE_CHANGE_WINDOW)


def test_approvals_counted_waiting_n_of_n_with_who_and_when():
    counted = _counted(_vote("bob", 1, comment="checked"), _vote("alice", 2))
    requirement = transitions.requirement(RULES, counted.expires_at)
    change = transitions.approvals_counted(RunbookStatus(), 1, counted, requirement, HK)
    status = apply(RunbookStatus(), change)
    assert conditions(status)["Queued"] == ("True", Reason.AWAITING_APPROVAL)
    assert conditions(status)["Succeeded"][1] == Reason.AWAITING_APPROVAL
    assert status.run_state == "queued"
    # The deadline in the exchange's zone, as a change window's wait says its time (the field keeps UTC).
    assert (
        status.conditions[0].message == "waiting for 1 of 2 approvals (bob) until 2026-01-05T11:00:00+08:00"
    )
    assert [(a.approver, a.decision, a.at, a.comment, a.ignored) for a in status.approvals] == [
        ("bob", "Approve", "2026-01-05T02:01:00.000Z", "checked", None),
        (
            "alice",
            "Approve",
            "2026-01-05T02:02:00.000Z",
            "",
            "the requester cannot approve their own request",
        ),
    ]
    assert (status.policy.approvals_required, status.policy.approvals_expire_at) == (
        2,
        "2026-01-05T03:00:00.000Z",
    )


def test_the_rules_that_matched_are_kept_within_the_schemas_bound():
    """Each policy holds at most 64 rules, but a namespace may hold many policies: more rules than
    status.policy.rules may hold can match one run (the requirement could not be made: the gate failed on
    every look, and the Runbook said nothing)."""
    many = Allowed(
        approvals=1, expire_after=datetime.timedelta(hours=1), rules=tuple(f"p/r{i}" for i in range(70))
    )
    requirement = transitions.requirement(many)
    assert requirement.rules == [f"p/r{i}" for i in range(transitions.POLICY_RULES)]
    change = transitions.approvals_counted(RunbookStatus(), 1, _counted(), requirement, HK)
    assert len(apply(RunbookStatus(), change).policy.rules) == transitions.POLICY_RULES


def test_why_an_approval_did_not_count_is_kept_within_the_schemas_bound():
    """Anyone who may approve may name any requester, of up to 253 characters: the reason it did not count
    names it, and was too long for status.approvals[].ignored (the gate failed on every look: the run was
    never approved, nor expired)."""
    stranger = Vote("bob", "Approve", REQUESTED + datetime.timedelta(minutes=1), "x" * 253)
    [record] = transitions.approval_records(_counted(stranger))
    assert record.ignored == f"it names another requester ({'x' * 253})"[: transitions.IGNORED_CHARS]
    change = transitions.approvals_counted(
        RunbookStatus(), 1, _counted(stranger), transitions.requirement(RULES), HK
    )
    assert apply(RunbookStatus(), change).approvals[0].ignored.startswith("it names another requester (xxx")


def test_approvals_counted_approved_records_them_and_changes_no_condition():
    change = transitions.approvals_counted(
        RunbookStatus(), 1, _counted(_vote("bob", 1), _vote("carol", 2)), transitions.requirement(RULES), HK
    )
    assert transitions.patch(change).keys() == {"observedGeneration", "approvals", "policy"}
    assert [a.approver for a in change.approvals] == ["bob", "carol"]


def test_approvals_counted_rejected_or_expired_ends_the_run_without_executing():
    rejected = transitions.approvals_counted(
        RunbookStatus(),
        1,
        _counted(_vote("bob", 1), _vote("dave", 3, "Reject", "not today")),
        transitions.requirement(RULES),
        HK,
    )
    status = apply(RunbookStatus(), rejected)
    assert (status.exit_code, status.result, status.message) == (
        None,
        "failed",
        "rejected by dave: not today",
    )
    assert conditions(status)["Succeeded"] == ("False", Reason.REJECTED)
    assert [(a.approver, a.decision) for a in status.approvals] == [("bob", "Approve"), ("dave", "Reject")]

    expired = transitions.approvals_counted(
        RunbookStatus(), 1, _counted(_vote("bob", 1), minute=60), transitions.requirement(RULES), HK
    )
    status = apply(RunbookStatus(), expired)
    assert conditions(status)["Succeeded"] == ("False", Reason.APPROVAL_EXPIRED)
    assert status.message == "expired with 1 of 2 approvals (bob)"


def test_the_session_is_recorded_with_the_window():
    session = RunSession(venue="XHKG", state="lunch_break")
    change = transitions.pending(
        RunbookStatus(), 1, request_id="r", window="day", target="t", session=session
    )
    assert transitions.patch(change)["session"] == {"venue": "XHKG", "state": "lunch_break"}


def test_the_record_of_decisions_is_bounded_and_keeps_every_one_that_counted():
    noise = [_vote("alice", minute) for minute in range(1, 41)]  # the requester, forty times
    records = transitions.approval_records(_counted(_vote("bob", 1), *noise, _vote("carol", 45)))
    assert len(records) == transitions.APPROVAL_RECORDS
    assert [r.approver for r in records if r.ignored is None] == ["bob", "carol"]
    assert records[1].at == "2026-01-05T02:11:00.000Z"  # the oldest ignored ones were left out


def test_a_run_is_approved_when_its_status_counts_the_approvals_its_policies_required():
    def status(required: int, *records: tuple[str, str, str | None]) -> RunbookStatus:  # who, when, why not
        return RunbookStatus(
            policy=PolicyRequirement(approvals_required=required),
            approvals=[
                ApprovalRecord(approver=who, decision="Approve", at=t, ignored=w) for who, t, w in records
            ],
        )

    bob, carol = ("bob", "2026-01-05T02:01:00.000Z", None), ("carol", "2026-01-05T02:03:00.000Z", None)
    own = ("alice", "2026-01-05T02:05:00.000Z", "the requester cannot approve their own request")
    assert transitions.approved_at(status(2, bob, carol, own)) == at("2026-01-05 10:03")
    assert transitions.approved_at(status(2, bob, own)) is None  # 1 of 2
    assert transitions.approved_at(status(0)) is None and transitions.approved_at(RunbookStatus()) is None


def test_an_approvals_deadline_holds_only_while_the_run_waits_for_approvals():
    expires = REQUESTED + datetime.timedelta(hours=1)
    waiting = transitions.approvals_counted(
        RunbookStatus(), 1, _counted(_vote("bob", 1)), transitions.requirement(RULES, expires), HK
    )
    awaiting = apply(RunbookStatus(), waiting)
    assert transitions.approvals_deadline(awaiting) == expires  # kept across a restart

    # Then held by a window that closed, or queued for the lock after approvals a stricter policy no
    # longer finds enough: the old deadline is still written, but the next wait for approvals is a new one.
    wait = Wait(REQUESTED + datetime.timedelta(hours=6), "failover waits until 16:00")
    held = apply(awaiting, transitions.held(awaiting, 1, wait))
    queued = apply(awaiting, transitions.queued(awaiting, 1, "waiting for failover-0 to finish on target t"))
    for status in (held, queued):
        assert status.policy is not None and status.policy.approvals_expire_at is not None
        assert transitions.approvals_deadline(status) is None
    assert transitions.approvals_deadline(RunbookStatus()) is None


@pytest.mark.parametrize(
    ("cancel", "started", "message"),
    [
        (
            {"requestedBy": "alice", "reason": "wrong venue"},
            False,
            "cancelled by alice before it started: wrong venue",
        ),
        ({"requestedBy": "alice"}, False, "cancelled by alice before it started"),
        ({"reason": "wrong venue"}, False, "cancelled before it started: wrong venue"),
        ({}, False, "cancelled before it started"),
        ({"requestedBy": "alice", "reason": "wrong venue"}, True, "cancelled by alice: wrong venue"),
        ({"requestedBy": "", "reason": ""}, True, "cancelled"),
    ],
)
def test_a_cancelled_runs_message_names_who_and_why_only_when_given(cancel, started, message):
    assert transitions.cancel_message(cancel, started=started) == message


def test_a_duplicate_of_a_run_cancelled_before_it_started_shows_that_end_without_an_exit_code():
    cancelled = apply(
        RunbookStatus(),
        transitions.not_run(RunbookStatus(), 1, Reason.CANCELLED, "cancelled by alice before it started"),
    )
    recorded = {key: cancelled.to_k8s().get(key) for key in ("exitCode", "result", "message", "finishedAt")}
    status = apply(
        RunbookStatus(),
        transitions.duplicate(
            RunbookStatus(), 1, earlier="ops/rb-1", result=recorded, request_id="r", window=None, target="t"
        ),
    )
    assert (status.exit_code, status.result, status.duplicate_of) == (None, "failed", "ops/rb-1")
    assert conditions(status)["Succeeded"] == ("False", Reason.DUPLICATE)
