"""The controller's status transitions, as pure functions: what a Runbook's status becomes at each step."""

from __future__ import annotations

import pytest

from controller import transitions
from runbooks.contract import ConditionType, ExitCode, Reason
from runbooks.models import Execution, RunbookStatus

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
