"""A schedule's catch-up is counted, not walked: :func:`runbooks.schedule.tally` gives what the slot-by-slot
walk of :func:`runbooks.schedule.walked` gives (how many slots run and are skipped, the latest of each),
for many triggers over XHKG's holidays, lunch breaks and early closes, CME's Sunday evenings, and DST
changes of a cron's time zone; and after a long outage ``due`` and ``plan`` report what the walk would."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest

from controller.schedules import plan
from runbooks import schedule
from runbooks.calendar import SessionCalendar, build_table
from runbooks.contract import format_time
from runbooks.schedule import (
    RunbookScheduleSpec,
    RunbookScheduleStatus,
    Trigger,
    due,
    slots_between,
    tally,
    walked,
)
from tests.unit.conftest import HK, at

CHICAGO = ZoneInfo("America/Chicago")

# Triggers whose slots are many: over a few days only, so that the walk they are compared with is quick.
DENSE = [
    {"every": "5s"},
    {"every": "5s", "tradingDaysOnly": True},
    {"every": "5s", "during": ["lunch_break", "pre_open"]},
    {"cron": "* * * * *", "tradingDaysOnly": True},
    {"cron": "* * * * *", "timeZone": "Europe/London"},
]
TRIGGERS = [
    {"every": "7s", "during": ["open"]},
    {"every": "1m"},
    {"every": "5m", "during": ["open"]},
    {"every": "5m", "during": ["open"], "tradingDaysOnly": True},
    {"every": "13m", "during": ["closed", "holiday"], "tradingDaysOnly": True},
    {"every": "10m", "during": ["holiday", "pre_open", "open", "lunch_break", "closed"]},
    {"every": "1h30m", "tradingDaysOnly": True},
    {"every": "24h"},
    {"cron": "*/7 9-16 * * 1-5"},
    {"cron": "*/10 * * * *", "tradingDaysOnly": True},
    {"cron": "0 12 * * *"},
    {"cron": "0 9 1,15 * MON"},  # day of month or day of week (Debian cron)
    {"cron": "0 0 L * *"},
    {"cron": "0 10 * * 6#1", "tradingDaysOnly": True},
    {"cron": "30 1 * * *", "timeZone": "Europe/London"},  # 01:30 is skipped in March, twice in October
    {"cron": "15 2 * * *", "timeZone": "America/New_York"},
    {"cron": "*/5 * * * *", "timeZone": "America/New_York", "tradingDaysOnly": True},
    {"cron": "0 * * * *", "timeZone": "+05:30"},
    {"session": "open-30m"},
    {"session": "close+15m"},
]
# XHKG (the fixture's 2025-12-01..2027-01-31, in +08:00): Christmas and New Year, Lunar New Year, the DST
# changes of March and of October-November in London and New York; starts and ends within a second.
RANGES = [
    ("2025-12-20 00:00", "2026-01-06 00:00"),
    ("2026-02-10 09:31:17.5", "2026-02-24 12:00"),
    ("2026-03-05 23:59:59", "2026-03-31 16:00:00.000001"),
    ("2026-10-20 12:00", "2026-11-03 08:59:59.999999"),
]
DENSE_RANGES = [
    ("2025-12-23 11:58:01", "2025-12-27 13:00"),  # an early close, Christmas, a weekend
    ("2026-03-07 23:00:00.25", "2026-03-09 09:35"),  # New York's spring change
    ("2026-10-24 12:00", "2026-10-26 12:00:05"),  # London's autumn change
]


def _compare(trigger: dict, after: datetime.datetime, until: datetime.datetime, calendar) -> None:
    t = Trigger.model_validate(trigger)
    assert tally(t, after, until, HK, calendar) == walked(t, after, until, HK, calendar)


@pytest.mark.parametrize("trigger", TRIGGERS, ids=str)
@pytest.mark.parametrize(("after", "until"), RANGES)
def test_counted_as_walked(xhkg, trigger, after, until):
    _compare(trigger, at(after), at(until), xhkg)


@pytest.mark.parametrize("trigger", DENSE, ids=str)
@pytest.mark.parametrize(("after", "until"), DENSE_RANGES)
def test_many_slots_counted_as_walked(xhkg, trigger, after, until):
    _compare(trigger, at(after), at(until), xhkg)


@pytest.fixture(scope="module")
def cme() -> SessionCalendar:
    return SessionCalendar(build_table("CMES", datetime.date(2026, 12, 10), datetime.date(2027, 1, 15)))


@pytest.mark.filterwarnings("ignore")  # exchange_calendars' own Pandas4Warnings, as in build_table
@pytest.mark.parametrize(
    "trigger",
    [
        {"every": "5m", "tradingDaysOnly": True},
        {"every": "7m", "during": ["pre_open", "open"], "tradingDaysOnly": True},
        {"every": "15m", "during": ["closed", "holiday"]},
        {"cron": "30 * * * *", "timeZone": "America/Chicago", "tradingDaysOnly": True},
        {"cron": "*/5 16-18 * * 0", "timeZone": "America/Chicago", "tradingDaysOnly": True},
    ],
    ids=str,
)
def test_counted_as_walked_where_a_session_opens_the_evening_before_its_day(cme, trigger):
    """CME's Monday session opens on Sunday at 17:00 Chicago time: a slot then is on a trading day."""
    after = datetime.datetime(2026, 12, 18, 0, 0, 1, tzinfo=CHICAGO)
    _compare(trigger, after, datetime.datetime(2027, 1, 8, 12, 0, tzinfo=CHICAGO), cme)


@pytest.mark.parametrize(
    "trigger", [{"every": "5m"}, {"cron": "*/5 * * * *", "tradingDaysOnly": True}], ids=str
)
def test_nothing_is_counted_in_a_range_without_slots_or_backwards(xhkg, trigger):
    t = Trigger.model_validate(trigger)
    for after, until in [
        ("2026-01-05 10:00", "2026-01-05 10:04:59"),
        ("2026-01-05 10:10", "2026-01-05 10:01"),
    ]:
        assert tally(t, at(after), at(until), HK, xhkg) == walked(t, at(after), at(until), HK, xhkg)
        assert tally(t, at(after), at(until), HK, xhkg).last is None


def test_the_latest_slot_on_time_runs_though_thousands_of_skipped_slots_follow_it(xhkg):
    """A day's starting deadline: Friday's last slot before midnight is 20 hours late on Saturday evening,
    within its deadline, and runs; Saturday's 14,401 slots are skipped. (Caught up 10,000 slots at a time,
    the slots were cut after 9,281 of Saturday's: the first cut's were all missed, the second's all
    skipped, and none ran.)"""
    spec = RunbookScheduleSpec.model_validate(
        {
            "template": {"command": "health_check"},
            "trigger": {"every": "5s", "tradingDaysOnly": True},
            "startingDeadlineSeconds": 86400,
        }
    )
    result = due(spec, at("2026-01-09 23:00"), at("2026-01-10 20:00:00.5"), HK, xhkg)
    assert (result.run, result.missed, result.skipped) == (at("2026-01-09 23:59:55"), 718, 14401)
    assert result.last_slot == at("2026-01-10 20:00")


@pytest.mark.parametrize(
    "trigger",
    [
        {"every": "5s"},
        {"every": "5s", "tradingDaysOnly": True},
        {"cron": "* * * * *", "tradingDaysOnly": True},
    ],
    ids=str,
)
def test_a_year_behind_is_caught_up_in_one_look_that_does_not_hold_the_event_loop(xhkg, trigger, monkeypatch):
    """A schedule whose last slot is a year back (6.3 million slots every 5s) is caught up by one look:
    the latest slot's Runbook is created, each other slot counted once, missed or skipped. Walked slot by
    slot, that look held kopf's event loop for a minute or more; counted, it takes milliseconds
    (bench.schedule_catchup). Here the slots walked are counted: a handful (the next slot), not the year's."""
    walked_slots = []

    def counting(*args, **options):
        for slot in slots_between(*args, **options):
            walked_slots.append(slot)
            yield slot

    monkeypatch.setattr(schedule, "slots_between", counting)
    spec = RunbookScheduleSpec.model_validate({"template": {"command": "health_check"}, "trigger": trigger})
    last, now = at("2025-12-07 10:00"), at("2026-12-07 10:00:00.5")  # a Monday while XHKG is open
    status = RunbookScheduleStatus(schedule=spec.trigger.describe(), last_slot=format_time(last))
    step = plan("behind", spec, status, created=last, generation=1, now=now, zone=HK, calendar=xhkg, runs=[])
    assert len(walked_slots) < 100, len(walked_slots)
    assert step.create is not None and step.status.last_slot == format_time(at("2026-12-07 10:00"))
    counted = step.status.missed_slots + step.status.skipped_slots + 1
    assert counted == (365 * 86400 // 5 if "every" in trigger else 365 * 1440)


@pytest.mark.parametrize("cron", ["*/10 * * * *", "30 0 * * *", "0 23 * * *"])
@pytest.mark.parametrize(
    ("after", "until"), [("2026-04-03 12:00", "2026-04-06 12:00"), ("2026-09-04", "2026-09-08")]
)
def test_counted_as_walked_where_midnight_is_skipped_or_repeated(cron, after, until):
    """Santiago changes at midnight: on 2026-04-05 00:00 back to 23:00 (the 4th has 25 hours), on
    2026-09-06 forward to 01:00 (the 6th begins at 01:00)."""
    _compare({"cron": cron, "timeZone": "America/Santiago"}, at(after), at(until), None)
