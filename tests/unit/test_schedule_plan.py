"""The schedule reconciler's step, as a pure function of the schedule, its status, its Runbooks and the
time (XHKG at fixed instants): what it creates, records, announces and deletes."""

from __future__ import annotations

import datetime

import pytest

from controller.schedules import (
    CATCH_UP,
    SlotRun,
    beyond_history,
    ends_skips,
    plan,
    problem,
    refused,
    renamed,
    skips,
    slot_run,
)
from runbooks.contract import format_time
from runbooks.schedule import (
    SCHEDULE_LABEL,
    SLOT_ANNOTATION,
    RunbookScheduleSpec,
    RunbookScheduleStatus,
    slot_runbook,
)
from tests.unit.conftest import HK, at

CREATED = at("2026-01-05 10:00:30")  # a Monday, while XHKG is open


def _spec(**fields) -> RunbookScheduleSpec:
    return RunbookScheduleSpec.model_validate(
        {"template": {"command": "health_check"}, "trigger": {"every": "5m"}, **fields}
    )


def _plan(spec, now: str, status=None, runs=(), calendar=None, edited=None):
    return plan(
        "hc",
        spec,
        status or RunbookScheduleStatus(),
        created=CREATED,
        generation=2,
        now=at(now),
        zone=HK,
        calendar=calendar,
        runs=runs,
        edited=edited,
    )


def _recorded(slot: str, **fields) -> RunbookScheduleStatus:
    return RunbookScheduleStatus(last_slot=format_time(at(slot)), **fields)


def test_a_due_slot_gets_its_runbook_and_the_step_is_recorded(xhkg):
    step = _plan(_spec(), "2026-01-05 10:05:01", calendar=xhkg)
    assert step.create["metadata"]["name"] == "hc-20260105020500"
    assert step.create["spec"]["requestedBy"] == "schedule:hc"
    status = step.status
    assert (status.last_slot, status.next_slot) == ("2026-01-05T02:05:00.000Z", "2026-01-05T02:10:00.000Z")
    assert (status.last_runbook, status.last_result, status.schedule) == (
        "hc-20260105020500",
        None,
        "every 5m",
    )
    assert (status.missed_slots, status.skipped_slots, status.observed_generation) == (0, 0, 2)
    assert [(c.type, c.status, c.reason) for c in status.conditions] == [("Ready", "True", "Scheduled")]
    assert [reason for _, reason, _ in step.events] == ["SlotCreated"]
    assert step.counts == {"created": 1}


def test_a_trigger_without_sessions_is_planned_without_the_calendar():
    without = _plan(_spec(), "2026-01-05 10:05:01")
    assert without.create["metadata"]["name"] == "hc-20260105020500"
    assert (without.status.last_slot, without.status.next_slot) == (
        "2026-01-05T02:05:00.000Z",
        "2026-01-05T02:10:00.000Z",
    )


def test_looking_again_changes_nothing(xhkg):
    first = _plan(_spec(), "2026-01-05 10:05:01", calendar=xhkg)
    run = SlotRun("hc-20260105020500", at("2026-01-05 10:05"))
    again = _plan(_spec(), "2026-01-05 10:05:02", first.status, [run], xhkg)
    assert again.create is None and again.events == [] and again.counts == {}
    assert again.status == first.status


def test_a_slot_made_under_another_name_is_recorded_and_announced_under_it(xhkg):
    """Its planned name was taken by another's Runbook: the step records the name made, and says why."""
    step = renamed(_plan(_spec(), "2026-01-05 10:05:01", calendar=xhkg), "hc-20260105020500-x7k2q", "mallory")
    assert step.status.last_runbook == "hc-20260105020500-x7k2q"
    assert step.events == [
        ("Normal", "SlotCreated", "created hc-20260105020500-x7k2q for the slot 2026-01-05T10:05:00+08:00"),
        (
            "Warning",
            "SlotNameTaken",
            "the name hc-20260105020500 is taken by a Runbook requested by mallory, not this slot's: "
            "created hc-20260105020500-x7k2q",
        ),
    ]
    assert step.counts == {"created": 1}
    run = SlotRun("hc-20260105020500-x7k2q", at("2026-01-05 10:05"), finished=True, result="success")
    again = _plan(_spec(), "2026-01-05 10:05:02", step.status, [run], xhkg)
    assert again.create is None and again.status.last_result == "success"


def test_after_an_outage_the_latest_slot_runs_if_on_time_and_the_others_are_missed(xhkg):
    status = _recorded("2026-01-05 10:05", last_runbook="hc-20260105020500", last_result="success")
    on_time = _plan(_spec(), "2026-01-05 10:20:30", status, calendar=xhkg)
    assert on_time.create["metadata"]["name"] == "hc-20260105022000"
    assert (on_time.status.missed_slots, on_time.counts) == (2, {"created": 1, "missed": 2})
    assert on_time.status.last_result is None  # a new run: no result yet
    late = _plan(_spec(), "2026-01-05 10:21:30", status, calendar=xhkg)  # 10:20 is 90 s late: never run
    assert late.create is None and late.status.missed_slots == 3
    assert late.status.last_slot == "2026-01-05T02:20:00.000Z"
    assert [kind for kind, _, _ in late.events] == ["Warning"]
    # Which slot was missed for which reason, for whoever asks why the 10:20 did not run.
    assert (
        on_time.events[-1][2]
        == "2 slot(s) missed, never run late: superseded by the later slot 2026-01-05T10:20:00+08:00"
    )
    assert late.events[-1][2] == (
        "3 slot(s) missed, never run late: 2 superseded by the later slot 2026-01-05T10:20:00+08:00, and "
        "2026-01-05T10:20:00+08:00 past its starting deadline (60 s)"
    )


@pytest.mark.parametrize("trigger", [{"every": "5m"}, {"cron": "*/5 * * * *"}], ids=["every", "cron"])
def test_a_last_slot_beyond_ten_years_back_or_ahead_is_taken_as_ten_years(trigger):
    """A lastSlot written by hand (or by a clock gone astray): from the year 1, only the last ten years'
    slots are counted, as from a lastSlot ten years back; one in the year 9999 is taken as ten years ahead
    (the record says the slots until then were handled), not a look that fails."""
    spec = _spec(trigger=trigger)
    now = "2026-01-05 10:20:30"

    def step(last_slot: str):
        status = RunbookScheduleStatus(
            last_slot=last_slot, schedule=spec.trigger.describe(), observed_generation=1
        )
        done = _plan(spec, now, status)
        return done.create, done.status.missed_slots, done.status.last_slot, done.status.next_slot

    ten_years_back = format_time(at(now) - CATCH_UP)
    assert step("0001-01-01T00:00:00Z") == step(ten_years_back)
    assert step(ten_years_back)[1] == CATCH_UP // datetime.timedelta(minutes=5) - 1
    ten_years_ahead = format_time(at(now) + CATCH_UP)
    ahead = step("9999-12-31T23:59:59Z")
    assert ahead == step(ten_years_ahead) and ahead[:3] == (None, 0, ten_years_ahead)


def test_forbid_skips_while_the_previous_run_is_unfinished_and_queue_does_not(xhkg):
    status = _recorded("2026-01-05 10:05", last_runbook="hc-20260105020500")
    running = [SlotRun("hc-20260105020500", at("2026-01-05 10:05"))]
    forbid = _plan(_spec(), "2026-01-05 10:10:01", status, running, xhkg)
    assert forbid.create is None and forbid.status.skipped_slots == 1
    assert forbid.events == [] and "hc-20260105020500" in forbid.skipped_why  # told by Skips' one Event
    queue = _plan(_spec(concurrencyPolicy="Queue"), "2026-01-05 10:10:01", status, running, xhkg)
    assert queue.create["metadata"]["name"] == "hc-20260105021000"


def test_suspended_slots_are_missed_and_there_is_no_next_one(xhkg):
    status = _recorded("2026-01-05 10:05")
    step = _plan(_spec(suspend=True), "2026-01-05 10:10:01", status, calendar=xhkg)
    assert step.create is None and (step.status.missed_slots, step.status.next_slot) == (1, None)
    assert step.events == [("Warning", "SlotsMissed", "1 slot(s) missed, never run late: while suspended")]


def test_a_runbook_created_before_a_crash_counts_as_handled_not_missed(xhkg):
    """The controller created the 10:05 Runbook and died before recording it; back after the deadline."""
    status = _recorded("2026-01-05 10:00", last_runbook="hc-20260105020000", last_result="success")
    runs = [
        SlotRun("hc-20260105020000", at("2026-01-05 10:00"), True, "success"),
        SlotRun("hc-20260105020500", at("2026-01-05 10:05"), True, "failed"),
    ]
    step = _plan(_spec(), "2026-01-05 10:06:30", status, runs, xhkg)
    assert step.create is None and step.status.missed_slots == 0
    assert step.counts == {"created": 1} and [reason for _, reason, _ in step.events] == ["SlotCreated"]
    assert (step.status.last_slot, step.status.last_runbook) == (
        "2026-01-05T02:05:00.000Z",
        "hc-20260105020500",
    )
    assert step.status.last_result == "failed"


def test_the_slots_a_look_handled_but_could_not_record_are_counted_by_the_next_one(xhkg):
    """Back at 10:15:05 after an outage, a look missed 10:05 and 10:10, made the 10:15 Runbook, and its
    status write was refused as stale (or it died). The next look records the Runbook, and the two slots
    missed too: before, only the Runbook, and the missed slots were never counted."""
    status = _recorded("2026-01-05 10:00", last_runbook="hc-20260105020000", last_result="success")
    made = SlotRun("hc-20260105021500", at("2026-01-05 10:15"))
    step = _plan(_spec(), "2026-01-05 10:15:06", status, [made], xhkg)
    assert step.create is None
    assert (step.status.missed_slots, step.counts) == (2, {"created": 1, "missed": 2})
    assert [reason for _, reason, _ in step.events] == ["SlotCreated", "SlotsMissed"]
    assert step.events[-1][2] == (
        "2 slot(s) missed before the slot 2026-01-05T10:15:00+08:00, never run late (counted late: the look "
        "that handled them could not record its step)"
    )
    assert (step.status.last_slot, step.status.last_runbook) == ("2026-01-05T02:15:00.000Z", made.name)
    # Two looks lost their steps: each Runbook is recorded, and the slot between them counted missed.
    first = SlotRun("hc-20260105020500", at("2026-01-05 10:05"), True, "success")
    step = _plan(_spec(), "2026-01-05 10:15:06", status, [first, made], xhkg)
    assert (step.status.missed_slots, step.counts) == (1, {"created": 2, "missed": 1})
    assert [event[2] for event in step.events][:2] == [
        "created hc-20260105020500 for the slot 2026-01-05T10:05:00+08:00",
        "created hc-20260105021500 for the slot 2026-01-05T10:15:00+08:00",
    ]
    # Looking again once recorded counts nothing more.
    again = _plan(_spec(), "2026-01-05 10:15:07", step.status, [first, made], xhkg)
    assert (again.counts, again.status.missed_slots) == ({}, 1)


def test_a_runbook_that_only_wears_a_schedule_s_label_and_slot_is_not_one_of_its_runs():
    """Anyone who may create Runbooks may give one a schedule's label and a slot annotation (here far
    ahead): its request id is not the slot's (only mdops may use those), so it is not the schedule's run.
    Taken for one, it would move the schedule's last slot to 2099 (nothing runs until then), skip every
    slot with Forbid while it is unfinished, and count against the history limits (then be deleted)."""
    genuine = slot_runbook("hc", _spec(), at("2026-01-05 10:05"))
    forged = {
        "metadata": {
            "name": "mine",
            "labels": {SCHEDULE_LABEL: "hc"},
            "annotations": {SLOT_ANNOTATION: "2099-01-01T00:00:00+08:00"},
        },
        "spec": {"command": "health_check", "requestId": "mine"},
    }
    assert slot_run(genuine) == SlotRun("hc-20260105020500", at("2026-01-05 10:05"))
    assert slot_run(forged) is None
    runs = [run for run in map(slot_run, [genuine, forged]) if run is not None]
    step = _plan(_spec(concurrencyPolicy="Queue"), "2026-01-05 10:10:01", _recorded("2026-01-05 10:05"), runs)
    assert step.create["metadata"]["name"] == "hc-20260105021000"


def test_slots_on_days_the_venue_does_not_trade_are_skipped(xhkg):
    spec = _spec(trigger={"cron": "0 8 * * *", "tradingDaysOnly": True})
    status = _recorded("2025-12-24 09:00")
    step = _plan(spec, "2025-12-25 08:00:10", status, calendar=xhkg)  # Christmas
    assert step.create is None and step.status.skipped_slots == 1
    assert step.events == [] and "does not trade" in step.skipped_why
    assert step.status.next_slot == format_time(at("2025-12-29 08:00"))  # the 26th, then a weekend


@pytest.mark.parametrize(
    ("limits", "doomed"),
    [
        ({}, ["s1", "s2", "f1", "f2"]),
        (
            {"successfulHistoryLimit": 0, "failedHistoryLimit": 0},
            ["s1", "s2", "s3", "s4", "s5", "f1", "f2", "f3"],
        ),
    ],
)
def test_history_limits_delete_the_oldest_finished_runbooks(limits, doomed):
    def run(name: str, minute: int, result: str | None) -> SlotRun:
        return SlotRun(name, CREATED + datetime.timedelta(minutes=minute), result is not None, result)

    runs = [run(f"s{i}", i, "success") for i in range(1, 6)] + [
        run(f"f{i}", 10 + i, "failed") for i in range(1, 4)
    ]
    runs.append(run("running", 30, None))
    assert sorted(beyond_history(_spec(**limits), runs)) == sorted(doomed)


def test_a_schedule_that_cannot_be_looked_at_says_why_and_keeps_its_record():
    status = _recorded("2026-01-05 10:05", next_slot="2026-01-05T02:10:00.000Z", missed_slots=4)
    bad = problem(status, 3, "InvalidSpec", "cron '61 * * * *': Bad minute")
    assert [(c.type, c.status, c.reason) for c in bad.conditions] == [("Ready", "False", "InvalidSpec")]
    assert (bad.last_slot, bad.missed_slots, bad.next_slot, bad.observed_generation) == (
        status.last_slot,
        4,
        None,
        3,
    )


def test_a_run_of_skipped_slots_is_one_event_whose_count_grows_until_a_slot_runs_or_is_missed(xhkg):
    """Every 5 s on trading days, from Christmas Eve's close over Christmas: each look skips a slot or a
    few; their run is told by one Event (Kubernetes' Event series), its count the run's length, and a
    slot that runs ends it: the next skip begins another."""
    spec = _spec(trigger={"every": "5s", "tradingDaysOnly": True})
    run, looks = None, ["2025-12-25 00:00:05", "2025-12-25 00:00:11", "2025-12-25 00:00:30"]
    status = _recorded("2025-12-25 00:00:00")
    for look in looks:
        step = _plan(spec, look, status, calendar=xhkg)
        run = skips(run, step, at(look))
        status = step.status
    assert (run.count, run.since) == (6, at(looks[0]))
    assert run.message == "6 slot(s) skipped since 2025-12-24T16:00:05.000Z: days the venue does not trade"
    assert (
        not ends_skips(step)
        and skips(run, _plan(spec, "2025-12-25 00:00:31", status, calendar=xhkg), at(looks[-1])) is None
    )
    ran = _plan(spec, "2025-12-29 00:00:01", _recorded("2025-12-28 23:59:55"), calendar=xhkg)
    assert ran.create is not None and ends_skips(ran)


def test_a_trigger_changed_since_the_last_slot_starts_at_the_change_not_at_that_slot():
    """A Saturday drill (cron) whose last slot was Saturday 10:00, changed on Thursday to every 5 m: the new
    trigger's slots before the change were never due. Counted from the old trigger's last slot they were
    1,428 missed slots and a Warning; from the change (the spec's latest write), none. A trigger not changed
    (the template edited) keeps its last slot: its slot due meanwhile still runs."""
    drill = _spec(trigger={"cron": "0 10 * * 6"})
    status = _recorded("2026-01-03 10:00", schedule=drill.trigger.describe(), observed_generation=1)
    changed = _plan(_spec(), "2026-01-08 09:05:01", status, edited=at("2026-01-08 09:04:59"))
    assert changed.counts == {"created": 1} and changed.status.missed_slots == 0
    assert changed.create["metadata"]["name"] == "hc-20260108010500"
    # The API server's clock ahead of the controller's: the change is taken as now, never later.
    ahead = _plan(_spec(), "2026-01-08 09:05:01", status, edited=at("2026-01-08 09:05:30"))
    assert ahead.status.last_slot == format_time(at("2026-01-08 09:05:01"))
    template_only = _spec(trigger={"cron": "0 10 * * 6"}, startingDeadlineSeconds=600)
    template = _plan(template_only, "2026-01-10 10:05:00", status, edited=at("2026-01-10 10:04:00"))
    assert template.create["metadata"]["name"] == "hc-20260110020000"


def test_a_schedule_fixed_after_an_invalid_spec_has_its_slots_from_the_fix():
    """Created at 10:00:30 with a cron expression only the models refuse (InvalidSpec: no step, no
    lastSlot, no words of its trigger in the status), fixed an hour later to every 5 m: its slots before
    the fix were never due, not 12 missed ones."""
    broken = problem(RunbookScheduleStatus(), 1, "InvalidSpec", "cron '0 25 * * *': Bad hour")
    fixed = _plan(_spec(), "2026-01-05 11:00:31", broken, edited=at("2026-01-05 11:00:29"))
    assert fixed.counts == {} and fixed.status.missed_slots == 0
    assert fixed.status.next_slot == format_time(at("2026-01-05 11:05"))


def test_a_refused_slot_is_said_until_a_slot_s_runbook_is_made():
    """The API server refused the Runbook of the 10:05 slot (a quota, an admission policy): looks that make
    none keep saying so (the slot missed past its deadline), not Scheduled; the next slot made ends it."""
    status = refused(_recorded("2026-01-05 10:00"), 2, "2026-01-05T10:05:00+08:00", "exceeded quota: q")
    missed = _plan(_spec(), "2026-01-05 10:06:01", status)
    assert (missed.create, missed.counts) == (None, {"missed": 1})
    ready = missed.status.conditions[0]
    assert (ready.status, ready.reason) == ("False", "SlotRefused")
    assert (
        ready.message
        == "the API server refuses the Runbook of the slot 2026-01-05T10:05:00+08:00: exceeded quota: q"
    )
    made = _plan(_spec(), "2026-01-05 10:10:01", missed.status)
    assert made.create is not None
    assert [(c.status, c.reason) for c in made.status.conditions] == [("True", "Scheduled")]
