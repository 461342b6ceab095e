"""The REST API's pure views of sessions, policies' outcomes and schedules (XHKG at fixed instants)."""

from __future__ import annotations

import pytest

from api.auth import Principal
from api.records import record_of
from api.render import audit_entry, execute_response, session_view
from api.routes.approvals import approval_name
from api.routes.schedules import schedule_view
from runbooks import crd
from runbooks.approval import RunbookApprovalSpec
from runbooks.contract import APPROVE, PERMISSIONS
from tests.unit.conftest import HK, at


def test_the_session_now_with_the_next_open_and_close(xhkg):
    view = session_view("XHKG", xhkg, at("2026-01-05 12:30"), HK)
    assert view == {
        "venue": "XHKG",
        "state": "lunch_break",
        "next_open": "2026-01-06T09:30:00+08:00",
        "next_close": "2026-01-05T16:00:00+08:00",
        "calendar": "exchange_calendars 4.13.2",
        "note": None,
    }
    assert session_view("XHKG", xhkg, at("2025-12-25 10:00"), HK)["state"] == "holiday"


def test_a_session_not_loaded_yet_says_why():
    assert session_view("XHKG", None, at("2026-01-05 12:30"), HK)["note"] == "the XHKG calendar is loading"
    unknown = session_view("XXXX", None, at("2026-01-05 12:30"), HK, "unknown venue 'XXXX'")
    assert (unknown["state"], unknown["note"]) == (None, "unknown venue 'XXXX'")


REJECTED = {
    "result": "failed",
    "message": "rejected by bob: not now",
    "finishedAt": "2026-01-05T02:00:00.000Z",
    "logs": [{"time": "t", "level": "ERROR", "message": "rejected by bob: not now"}],
    "conditions": [
        {
            "type": "Succeeded",
            "status": "False",
            "reason": "Rejected",
            "lastTransitionTime": "2026-01-05T02:00:00Z",
        }
    ],
}


def test_a_run_refused_without_executing_is_a_failed_run_with_no_exit_code():
    obj = {
        "metadata": {
            "name": "fo-1",
            "uid": "u",
            "resourceVersion": "1",
            "creationTimestamp": "2026-01-05T01:00:00Z",
        },
        "spec": {"command": "failover", "requestedBy": "alice"},
        "status": REJECTED,
    }
    record = record_of(obj)
    assert (record.finished, record.execution_error) == (True, False)  # execute answers 200, not 500
    runbook = execute_response(record, HK)["runbook"]
    assert (runbook["status"], runbook["exit_code"]) == ("failed", None)
    assert runbook["logs"] == [{"level": "ERROR", "message": "rejected by bob: not now"}]
    assert audit_entry(record, HK)["outcome"] == "failed (Rejected)"


def test_approving_is_a_permission_of_its_own():
    assert APPROVE in PERMISSIONS
    assert not Principal("ops", frozenset({"runbooks:execute"})).allows(APPROVE)


def test_one_approval_name_per_runbook_and_person_and_a_valid_approval():
    names = {
        approval_name(r, u, p) for r in ("fo-1", "fo-2") for u in ("uid-1", "uid-2") for p in ("bob", "carol")
    }
    assert len(names) == 8 and all(len(n) <= 63 and n.startswith("rba-") for n in names)
    assert approval_name("fo-1", "uid-1", "bob") == approval_name("fo-1", "uid-1", "bob")
    spec = RunbookApprovalSpec(request_id="fo-1", decision="Approve", approver="bob", requester="alice")
    made = crd.APPROVAL.manifest(approval_name("fo-1", "uid-1", "bob"), spec.to_k8s())
    assert made["kind"] == "RunbookApproval"


def _schedule(spec: dict, status: dict | None = None) -> dict:
    return {
        "metadata": {"name": "hc"},
        "spec": {"template": {"command": "health_check"}, **spec},
        "status": status,
    }


def test_a_schedule_with_its_next_slots_in_the_configured_zone(xhkg):
    status = {"lastSlot": "2026-01-05T02:05:00.000Z", "lastRunbook": "hc-20260105020500", "missedSlots": 2}
    view = schedule_view(
        _schedule({"trigger": {"every": "5m", "during": ["open"]}}, status),
        at("2026-01-05 11:57"),
        xhkg,
        3,
        HK,
    )
    assert view["next_slots"] == [
        "2026-01-05T13:00:00+08:00",  # not at the lunch break
        "2026-01-05T13:05:00+08:00",
        "2026-01-05T13:10:00+08:00",
    ]
    assert (view["schedule"], view["last_slot"], view["missed_slots"], view["problem"]) == (
        "every 5m during open",
        "2026-01-05T10:05:00+08:00",
        2,
        None,
    )


@pytest.mark.parametrize(
    ("spec", "calendar", "next_slots", "problem"),
    [
        ({"trigger": {"every": "5m"}, "suspend": True}, "xhkg", [], None),
        ({"trigger": {"cron": "61 * * * *"}}, "xhkg", None, "invalid spec"),
        ({"trigger": {"session": "open"}}, "unknown venue 'XXXX'", None, "unknown venue 'XXXX'"),
    ],
)
def test_a_schedule_that_will_not_run_says_so(xhkg, spec, calendar, next_slots, problem):
    view = schedule_view(
        _schedule(spec), at("2026-01-05 10:00"), xhkg if calendar == "xhkg" else calendar, 3, HK
    )
    assert view["next_slots"] == next_slots
    assert (view["problem"] or "").startswith(problem or "")
    assert (problem is None) == (view["problem"] is None)


@pytest.mark.parametrize(
    ("trigger", "now", "next_slots", "problem"),
    [
        # XSHG's last day that the library knows: the slots up to its end, none guessed after it.
        ({"session": "open"}, "2026-12-30 10:00", ["2026-12-31T09:30:00+08:00"], None),
        # Past it: the schedules that use sessions say why, each in its own entry; the others go on.
        ({"session": "open"}, "2027-01-05 10:00", None, "beyond the XSHG calendar"),
        ({"every": "5m", "during": ["open"]}, "2027-01-05 10:00", None, "beyond the XSHG calendar"),
        (
            {"every": "5m"},
            "2027-01-05 10:00",
            ["2027-01-05T10:05:00+08:00", "2027-01-05T10:10:00+08:00"],
            None,
        ),
    ],
)
def test_a_calendar_that_ends_is_a_problem_of_the_schedules_that_use_sessions_only(
    xshg, trigger, now, next_slots, problem
):
    view = schedule_view(_schedule({"trigger": trigger}), at(now), xshg, 2, HK)
    assert view["next_slots"] == next_slots
    assert view["problem"] is None if problem is None else problem in view["problem"]


def test_a_calendar_that_cannot_be_loaded_is_a_problem_of_the_schedules_that_use_sessions_only():
    why = "the XHKG calendar took more than 120 s to build"
    plain = schedule_view(_schedule({"trigger": {"cron": "0 10 * * 6"}}), at("2026-01-05 10:00"), why, 1, HK)
    assert (plain["next_slots"], plain["problem"]) == (["2026-01-10T10:00:00+08:00"], None)
    days = schedule_view(
        _schedule({"trigger": {"cron": "0 10 * * *", "tradingDaysOnly": True}}),
        at("2026-01-05 10:00"),
        why,
        1,
        HK,
    )
    assert (days["next_slots"], days["problem"]) == (None, why)
