"""When a look at a schedule needs its Runbooks (a list from the API server) and when it does not: only a
slot come since the last one handled, or a last run whose result is not known yet, can change its step."""

from __future__ import annotations

import pytest

from controller.schedules import idle, plan
from runbooks.contract import format_time
from runbooks.schedule import RunbookScheduleSpec, RunbookScheduleStatus
from tests.unit.conftest import HK, at

CREATED = at("2026-01-05 10:00:30")  # a Monday, while XHKG is open


def _spec(**trigger) -> RunbookScheduleSpec:
    return RunbookScheduleSpec.model_validate(
        {"template": {"command": "health_check"}, "trigger": trigger or {"every": "5m"}}
    )


def _idle(spec, now: str, status: RunbookScheduleStatus, calendar=None, edited=None) -> bool:
    return idle(spec, status, created=CREATED, now=at(now), zone=HK, calendar=calendar, edited=edited)


def _handled(slot: str, spec: RunbookScheduleSpec, **fields) -> RunbookScheduleStatus:
    return RunbookScheduleStatus(last_slot=format_time(at(slot)), schedule=spec.trigger.describe(), **fields)


def test_a_look_between_slots_after_a_finished_run_needs_no_list():
    spec = _spec()
    status = _handled("2026-01-05 10:05", spec, last_runbook="hc-20260105020500", last_result="success")
    assert _idle(spec, "2026-01-05 10:09:59", status)
    assert not _idle(spec, "2026-01-05 10:10:00", status)  # the next slot has come


def test_a_look_while_the_last_run_has_no_result_lists_the_runs():
    spec = _spec()
    assert not _idle(spec, "2026-01-05 10:06", _handled("2026-01-05 10:05", spec, last_runbook="hc-x"))
    assert _idle(spec, "2026-01-05 10:06", _handled("2026-01-05 10:05", spec))  # no run yet: none to learn


def test_a_new_schedule_lists_its_runs_once_its_first_slot_comes():
    spec = _spec()
    assert _idle(spec, "2026-01-05 10:04", RunbookScheduleStatus(), edited=CREATED)
    assert not _idle(spec, "2026-01-05 10:05", RunbookScheduleStatus(), edited=CREATED)


def test_a_changed_trigger_counts_from_its_change_as_the_plan_does():
    """Changed at 10:07 to every 5m from a daily cron: the slot 10:05 was never due, 10:10 is."""
    spec, before = _spec(), _spec(cron="0 8 * * *")
    status = _handled("2026-01-05 08:00", before, last_runbook="hc-x", last_result="success")
    assert _idle(spec, "2026-01-05 10:08", status, edited=at("2026-01-05 10:07"))
    assert not _idle(spec, "2026-01-05 10:10", status, edited=at("2026-01-05 10:07"))


@pytest.mark.parametrize("now", ["2026-01-05 10:09:59", "2026-01-05 10:10:00", "2026-01-05 10:12"])
def test_an_idle_look_plans_what_a_listed_one_would_with_no_new_runs(now):
    """Where the look is idle, the plan made without the Runbooks creates nothing and counts nothing."""
    spec = _spec()
    status = _handled("2026-01-05 10:05", spec, last_runbook="hc-20260105020500", last_result="success")
    step = plan(
        "hc", spec, status, created=CREATED, generation=1, now=at(now), zone=HK, calendar=None, runs=[]
    )
    assert _idle(spec, now, status) == (step.create is None and not step.counts)


def test_a_skipped_slot_is_a_slot_come(xhkg):
    """tradingDaysOnly, on a Saturday: the slot is skipped, and the look that skips it lists the runs (a
    Runbook made by a look whose step was never recorded would be among them)."""
    spec = _spec(every="5m", tradingDaysOnly=True)
    status = _handled("2026-01-10 10:05", spec, last_runbook="hc-x", last_result="success")
    assert _idle(spec, "2026-01-10 10:09", status, calendar=xhkg)
    assert not _idle(spec, "2026-01-10 10:10", status, calendar=xhkg)
