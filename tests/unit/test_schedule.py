"""Slots of the four example schedules at fixed instants (a holiday, a weekend, an early close), what is
due after a controller was down or the clock jumped, and the request id of a slot."""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from pydantic import ValidationError

from runbooks import keys
from runbooks.calendar import CalendarError, SessionCalendar, build_table
from runbooks.models import RunbookSpec
from runbooks.schedule import (
    ETC_GMT,
    MAX_NAME_LENGTH,
    RunbookScheduleSpec,
    RunbookTemplate,
    Trigger,
    due,
    parse_duration,
    slot_name,
    slot_request_id,
    slot_runbook,
    slots_between,
    upcoming,
)
from tests.unit.conftest import HK, at

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "schedules"
DNS_LABEL = re.compile(keys.DNS_LABEL)


def _example(name: str) -> RunbookScheduleSpec:
    return RunbookScheduleSpec.model_validate(yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())["spec"])


def _slots(trigger: Trigger, after: str, until: str, calendar) -> list[tuple[str, bool]]:
    return [
        (s.at.strftime("%m-%d %H:%M"), s.skipped)
        for s in slots_between(trigger, at(after), at(until), HK, calendar)
    ]


def test_start_before_the_open_on_trading_days_only(xhkg):
    slots = _slots(_example("start-before-open").trigger, "2025-12-22 00:00", "2025-12-29 23:59", xhkg)
    # Christmas and Boxing Day are holidays, the 27th and 28th a weekend: no session, no slot.
    assert slots == [
        ("12-22 09:00", False),
        ("12-23 09:00", False),
        ("12-24 09:00", False),
        ("12-29 09:00", False),
    ]


def test_stop_after_the_close_follows_an_early_close(xhkg):
    slots = _slots(_example("stop-after-close").trigger, "2025-12-23 00:00", "2025-12-24 23:59", xhkg)
    assert slots == [("12-23 16:15", False), ("12-24 12:15", False)]


def test_health_checks_every_five_minutes_while_open(xhkg):
    trigger = _example("health-check-while-open").trigger
    day = [s for s, _ in _slots(trigger, "2026-01-04 23:59", "2026-01-05 23:59", xhkg)]
    assert len(day) == 30 + 36  # 09:30-11:55 and 13:00-15:55: not at the lunch break, not at 16:00
    assert (day[0], day[29], day[30], day[-1]) == ("01-05 09:30", "01-05 11:55", "01-05 13:00", "01-05 15:55")
    assert len(_slots(trigger, "2025-12-23 23:59", "2025-12-24 23:59", xhkg)) == 30  # early close
    assert _slots(trigger, "2025-12-24 23:59", "2025-12-28 23:59", xhkg) == []  # holidays, weekend


def test_the_saturday_drill(xhkg):
    trigger = _example("drill-saturday").trigger
    assert _slots(trigger, "2025-12-22 00:00", "2026-01-05 00:00", xhkg) == [
        ("12-27 10:00", False),
        ("01-03 10:00", False),
    ]


def test_cron_slots_on_days_without_trading_are_skipped(xhkg):
    trigger = Trigger(cron="0 8 * * *", trading_days_only=True)
    assert _slots(trigger, "2025-12-24 00:00", "2025-12-29 23:59", xhkg) == [
        ("12-24 08:00", False),
        ("12-25 08:00", True),  # Christmas
        ("12-26 08:00", True),  # Boxing Day
        ("12-27 08:00", True),  # Saturday
        ("12-28 08:00", True),
        ("12-29 08:00", False),
    ]


def test_the_next_slot_on_trading_days_only_is_found_a_day_at_a_time(xhkg, monkeypatch):
    """Every 5 s on trading days, looked at on Christmas: the next slot that runs is four days of skipped
    slots away (69,120). The controller finds it at each look, once a second, on its event loop: it asks
    the calendar about each day once, not about each slot (half a second a look)."""
    spec = RunbookScheduleSpec.model_validate(
        {"template": {"command": "health_check"}, "trigger": {"every": "5s", "tradingDaysOnly": True}}
    )
    session, asked = xhkg.session, []
    monkeypatch.setattr(xhkg, "session", lambda day: asked.append(day) or session(day))
    step = due(spec, at("2025-12-25 00:00:01"), at("2025-12-25 00:00:02"), HK, xhkg)
    assert step.next_slot == at("2025-12-29 00:00")
    assert len(asked) < 100


def test_cron_in_another_time_zone_answers_in_the_calendar_zone(xhkg):
    trigger = Trigger(cron="0 9 * * 1", time_zone="Asia/Tokyo")
    assert _slots(trigger, "2026-01-04 00:00", "2026-01-06 00:00", xhkg) == [("01-05 08:00", False)]


def test_cron_at_a_local_time_that_happens_twice_runs_once_and_never_before_the_start(xhkg):
    """New York's 01:00-02:00 happens twice on 2026-11-01 (EDT, then EST): a daily 01:30 runs at its first
    one (05:30 UTC), once. Asked from within the second one (a schedule created then, or its next slot
    looked for then), that slot is behind: it is never due again, nor the next slot."""
    trigger = Trigger(cron="30 1 * * *", time_zone="America/New_York")
    utc = datetime.UTC
    day = datetime.datetime(2026, 11, 1, 4, 0, tzinfo=utc)  # 00:00 EDT
    first = [s.at for s in slots_between(trigger, day, day + datetime.timedelta(days=1), HK, xhkg)]
    assert first == [datetime.datetime(2026, 11, 1, 5, 30, tzinfo=utc)]
    second = datetime.datetime(2026, 11, 1, 6, 15, tzinfo=utc)  # 01:15 EST
    assert [
        s.at for s in slots_between(trigger, second, second + datetime.timedelta(hours=12), HK, xhkg)
    ] == []
    spec = RunbookScheduleSpec.model_validate({"template": {"command": "drill"}, "trigger": trigger.to_k8s()})
    step = due(spec, second, second + datetime.timedelta(seconds=1), HK)
    assert (step.run, step.missed, step.last_slot) == (None, 0, second)
    assert step.next_slot == datetime.datetime(2026, 11, 2, 6, 30, tzinfo=utc)  # 01:30 EST


def test_session_slots_outside_the_calendar_are_an_error_not_a_gap(xhkg):
    with pytest.raises(CalendarError, match="outside the loaded XHKG calendar"):
        list(
            slots_between(
                Trigger(session="open-30m"), at("2027-01-20 00:00"), at("2027-02-20 00:00"), HK, xhkg
            )
        )
    plain_cron = Trigger(cron="0 10 * * 6")  # needs no sessions
    assert len(list(slots_between(plain_cron, at("2030-01-01 00:00"), at("2030-01-08 00:00"), HK, xhkg))) == 1


def test_slots_are_after_the_start_and_up_to_the_end(xhkg):
    trigger = Trigger(every="5m")
    assert _slots(trigger, "2026-01-05 10:00", "2026-01-05 10:10", xhkg) == [
        ("01-05 10:05", False),
        ("01-05 10:10", False),
    ]


# -- due -----------------------------------------------------------------------------------------

EVERY_5M = RunbookScheduleSpec.model_validate(
    {"template": {"command": "health_check"}, "trigger": {"every": "5m"}}
)


def _spec(**changes) -> RunbookScheduleSpec:
    return EVERY_5M.model_copy(update=changes)


def test_a_slot_runs_once(xhkg):
    first = due(EVERY_5M, at("2026-01-05 10:00"), at("2026-01-05 10:05:02"), HK, xhkg)
    assert (first.run, first.missed, first.skipped) == (at("2026-01-05 10:05"), 0, 0)
    assert (first.last_slot, first.next_slot) == (at("2026-01-05 10:05"), at("2026-01-05 10:10"))
    again = due(EVERY_5M, first.last_slot, at("2026-01-05 10:05:30"), HK, xhkg)  # the next reconcile
    assert (again.run, again.missed, again.last_slot) == (None, 0, at("2026-01-05 10:05"))


def test_nothing_is_due_before_the_first_slot(xhkg):
    result = due(EVERY_5M, at("2026-01-05 10:00"), at("2026-01-05 10:04:59"), HK, xhkg)
    assert (result.run, result.missed, result.skipped, result.last_slot) == (
        None,
        0,
        0,
        at("2026-01-05 10:00"),
    )
    assert result.next_slot == at("2026-01-05 10:05")


def test_a_controller_down_across_two_slots_runs_only_the_latest_in_time(xhkg):
    back_in_time = due(EVERY_5M, at("2026-01-05 10:00"), at("2026-01-05 10:10:30"), HK, xhkg)
    assert (back_in_time.run, back_in_time.missed) == (at("2026-01-05 10:10"), 1)
    too_late = due(EVERY_5M, at("2026-01-05 10:00"), at("2026-01-05 10:11:30"), HK, xhkg)  # deadline 60 s
    assert (too_late.run, too_late.missed, too_late.last_slot) == (None, 2, at("2026-01-05 10:10"))
    assert too_late.next_slot == at("2026-01-05 10:15")


def test_the_starting_deadline_is_the_schedules(xhkg):
    result = due(
        _spec(starting_deadline_seconds=600), at("2026-01-05 10:00"), at("2026-01-05 10:19"), HK, xhkg
    )
    assert (result.run, result.missed) == (at("2026-01-05 10:15"), 2)


def test_a_holiday_slot_is_skipped_not_run(xhkg):
    spec = _spec(trigger=Trigger(cron="0 8 * * *", trading_days_only=True))
    christmas = due(spec, at("2025-12-24 08:00"), at("2025-12-25 08:00:10"), HK, xhkg)
    assert (christmas.run, christmas.skipped, christmas.missed) == (None, 1, 0)
    assert christmas.next_slot == at("2025-12-29 08:00")  # past the holidays and the weekend


def test_suspended_slots_are_missed_and_resuming_runs_no_late_burst(xhkg):
    suspended = due(_spec(suspend=True), at("2026-01-05 10:00"), at("2026-01-05 10:20:05"), HK, xhkg)
    assert (suspended.run, suspended.missed, suspended.last_slot) == (None, 4, at("2026-01-05 10:20"))
    resumed = due(EVERY_5M, suspended.last_slot, at("2026-01-05 10:21"), HK, xhkg)
    assert (resumed.run, resumed.missed) == (None, 0)
    assert due(EVERY_5M, resumed.last_slot, at("2026-01-05 10:25:01"), HK, xhkg).run == at("2026-01-05 10:25")


@pytest.mark.parametrize(("policy", "runs"), [("Forbid", False), ("Queue", True)])
def test_concurrency_while_the_previous_run_is_unfinished(xhkg, policy, runs):
    spec = _spec(concurrency_policy=policy)
    result = due(spec, at("2026-01-05 10:00"), at("2026-01-05 10:05:01"), HK, xhkg, active=True)
    assert (result.run is not None, result.skipped) == (runs, 0 if runs else 1)
    assert result.last_slot == at("2026-01-05 10:05")  # a skipped slot is handled too


def test_a_clock_that_jumps_back_never_reruns_a_slot(xhkg):
    result = due(EVERY_5M, at("2026-01-05 10:10"), at("2026-01-05 10:01"), HK, xhkg)
    assert (result.run, result.missed, result.skipped) == (None, 0, 0)
    assert (result.last_slot, result.next_slot) == (at("2026-01-05 10:10"), at("2026-01-05 10:15"))


def test_a_clock_that_jumps_forward_misses_what_it_skipped_over(xhkg):
    result = due(EVERY_5M, at("2026-01-05 10:00"), at("2026-01-05 13:00:30"), HK, xhkg)
    assert (result.run, result.missed) == (at("2026-01-05 13:00"), 35)


def test_a_long_outage_is_caught_up_in_one_step(xhkg):
    spec = _spec(trigger=Trigger(every="5s"))
    step = due(spec, at("2026-01-05 00:00"), at("2026-01-06 00:00:01"), HK, xhkg)
    assert (step.missed, step.run, step.last_slot) == (
        17280 - 1,
        at("2026-01-06 00:00"),
        at("2026-01-06 00:00"),
    )


def test_every_during_jumps_over_closed_time(xhkg):
    spec = _example("health-check-while-open")
    result = due(spec, at("2026-01-02 15:55"), at("2026-01-05 09:30:10"), HK, xhkg)  # a weekend later
    assert (result.run, result.missed, result.next_slot) == (
        at("2026-01-05 09:30"),
        0,
        at("2026-01-05 09:35"),
    )


# -- a calendar that ends (XSHG's holidays are known up to 2026-12-31) ------------------------------


@pytest.mark.parametrize(
    ("trigger", "last_slot", "now", "run", "next_slot"),
    [
        # 2026-12-04, a Friday, while XSHG is open: 27 days before the end, under NEXT_HORIZON.
        ({"every": "5m", "during": ["open"]}, "12-04 09:55", "12-04 10:00:30", "12-04 10:00", "12-04 10:05"),
        ({"session": "open-30m"}, "12-03 09:00", "12-04 09:00:30", "12-04 09:00", "12-07 09:00"),
        (
            {"cron": "0 10 * * *", "tradingDaysOnly": True},
            "12-03 10:00",
            "12-04 10:00:30",
            "12-04 10:00",
            "12-07 10:00",
        ),
        # Its last slots: the next ones are not known.
        ({"every": "5m", "during": ["open"]}, "12-31 14:50", "12-31 14:55:30", "12-31 14:55", None),
        ({"session": "close+15m"}, "12-30 15:15", "12-31 15:15:30", "12-31 15:15", None),
    ],
)
def test_a_calendar_that_ends_runs_the_slots_it_can_judge_and_knows_no_next_slot_past_its_end(
    xshg, trigger, last_slot, now, run, next_slot
):
    spec = _spec(trigger=Trigger.model_validate(trigger))
    result = due(spec, at(f"2026-{last_slot}"), at(f"2026-{now}"), HK, xshg)
    assert (result.run, result.missed, result.skipped) == (at(f"2026-{run}"), 0, 0)
    assert result.next_slot == (at(f"2026-{next_slot}") if next_slot else None)


@pytest.mark.parametrize("trigger", [{"every": "5m"}, {"cron": "*/5 * * * *"}])
def test_triggers_without_sessions_need_no_calendar(xshg, trigger):
    spec = _spec(trigger=Trigger.model_validate(trigger))
    for calendar in (xshg, None):  # past the end of what the library knows of XSHG, or none at all
        result = due(spec, at("2027-01-05 09:55"), at("2027-01-05 10:00:30"), HK, calendar)
        assert (result.run, result.next_slot) == (at("2027-01-05 10:00"), at("2027-01-05 10:05"))


@pytest.mark.parametrize(
    "trigger",
    [{"every": "5m", "during": ["open"]}, {"session": "open"}, {"every": "1h", "tradingDaysOnly": True}],
)
def test_past_the_end_of_the_calendar_slots_that_use_sessions_are_not_guessed(xshg, trigger):
    spec = _spec(trigger=Trigger.model_validate(trigger))
    with pytest.raises(CalendarError, match="beyond the XSHG calendar"):
        due(spec, at("2026-12-31 15:00"), at("2027-01-04 10:00:30"), HK, xshg)


# -- request ids, models -------------------------------------------------------------------------


def test_the_name_and_request_id_of_a_slot_are_derived_from_the_schedule_and_the_instant():
    slot = at("2026-01-05 09:00")
    assert slot_name("start-before-open", slot) == "start-before-open-20260105010000"
    assert slot_request_id("start-before-open", slot) == "schedule.start-before-open.20260105010000"
    for derive in (slot_name, slot_request_id):
        assert derive("start-before-open", slot.astimezone(datetime.UTC)) == derive("start-before-open", slot)
        assert derive("s", slot) != derive("s", slot + datetime.timedelta(seconds=5))


def test_the_longest_slot_name_is_a_valid_runbook_name_and_its_request_id_valid():
    name = "a" * MAX_NAME_LENGTH
    slot = at("2026-01-05 09:00")
    assert len(slot_name(name, slot)) == 63 and DNS_LABEL.match(slot_name(name, slot))
    request_id = slot_request_id(name, slot)
    assert RunbookSpec(command="start", request_id=request_id).request_id == request_id
    manifest = slot_runbook(name, _example("start-before-open"), slot)
    assert manifest["metadata"]["name"] == slot_name(name, slot)
    assert manifest["spec"]["requestId"] == request_id
    assert manifest["metadata"]["labels"] == {"ops.mdops.io/schedule": name}
    assert manifest["spec"]["requestedBy"] == f"schedule:{name}"
    # A schedule that names its requester: its runs are that person's (who then may not approve them).
    signed = _example("start-before-open").model_copy(update={"requested_by": "alice"})
    assert slot_runbook(name, signed, slot)["spec"]["requestedBy"] == "alice"
    assert manifest["spec"]["command"] == "start" and manifest["spec"]["enforce"] is True


def test_the_template_is_a_runbook_spec_without_what_the_controller_sets():
    assert set(RunbookTemplate.model_fields) == set(RunbookSpec.model_fields) - {
        "request_id",
        "requested_by",
        "cancel",
    }
    template = RunbookTemplate.model_json_schema(by_alias=True)["properties"]
    spec = RunbookSpec.model_json_schema(by_alias=True)["properties"]
    assert template == {name: schema for name, schema in spec.items() if name in template}


@pytest.mark.parametrize(
    ("trigger", "error"),
    [
        ({"cron": "61 * * * *"}, "Bad minute"),
        ({"cron": "0 0 * * * *"}, "should match pattern"),  # no seconds field: use every
        ({"cron": "0 10 * * 6", "timeZone": "Mars/Base"}, "not a known time zone"),
        # POSIX's sign: Etc/GMT+8 is UTC-08:00, sixteen hours from the +08:00 its writer likely meant
        ({"cron": "0 10 * * 6", "timeZone": "Etc/GMT+8"}, re.escape(ETC_GMT)),
        ({"cron": "0 10 * * 6", "timeZone": "Etc/GMT-8"}, re.escape(ETC_GMT)),
        ({"cron": "0 10 * * 6", "timeZone": "+24:00"}, "should match pattern"),  # no such offset
        ({"cron": "0 10 * * 6", "timeZone": "+08:60"}, "should match pattern"),
        ({"every": "2s"}, "every is from 5s to 24h"),
        ({"session": "lunch+5m"}, "should match pattern"),
        ({"session": "open-9999h"}, "at most 24h"),
        ({"session": "close+1441m"}, "at most 24h"),
    ],
)
def test_triggers_the_model_refuses(trigger, error):
    with pytest.raises(ValidationError, match=error):
        Trigger.model_validate(trigger)


def test_a_trigger_of_two_kinds_has_no_kind():
    with pytest.raises(ValueError, match="exactly one of cron, every and session"):
        Trigger(cron="0 10 * * 6", every="5m").kind  # noqa: B018


@pytest.mark.parametrize(
    ("text", "seconds"), [("5s", 5), ("5m", 300), ("1h30m", 5400), ("2h", 7200), ("1h1m1s", 3661)]
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == datetime.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5", "m5", "5d", "1m1h"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("name", "schedule"),
    [
        ("start-before-open", "open-30m"),
        ("stop-after-close", "close+15m"),
        ("health-check-while-open", "every 5m during open"),
        ("drill-saturday", "0 10 * * 6 (+08:00)"),
    ],
)
def test_the_schedule_column_text(name, schedule):
    assert _example(name).trigger.describe() == schedule


@pytest.mark.filterwarnings("ignore")  # exchange_calendars' own Pandas4Warnings, as in build_table
def test_cme_trades_from_the_evening_before_its_day_as_exchange_calendars_says():
    """CME's session for a day opens at 17:00 Chicago time the evening before (Sunday's evening for
    Monday): a slot then is on a trading day, though the local date (Sunday) has no session. Whether an
    instant is on a trading day is what exchange_calendars says: a trading minute, or a date that is a
    session. Hourly over the year end (early close on the 24th, Christmas, New Year, two weekends)."""
    import exchange_calendars

    chicago = ZoneInfo("America/Chicago")
    first, last = datetime.date(2026, 12, 18), datetime.date(2027, 1, 8)
    cme = SessionCalendar(build_table("CMES", first - datetime.timedelta(days=3), last))
    library = exchange_calendars.get_calendar("CMES", start=first - datetime.timedelta(days=3), end=last)
    hourly = Trigger(cron="30 * * * *", time_zone="America/Chicago", trading_days_only=True)
    start = datetime.datetime.combine(first, datetime.time(), chicago)
    end = datetime.datetime.combine(last, datetime.time(), chicago)
    slots = list(slots_between(hourly, start, end, HK, cme))
    assert len(slots) == 21 * 24
    for slot in slots:
        local = slot.at.astimezone(chicago)
        trading = library.is_trading_minute(slot.at) or library.is_session(local.date().isoformat())
        assert slot.skipped is not trading, local
    runs = {s.at.astimezone(chicago).strftime("%a %m-%d %H:%M") for s in slots if not s.skipped}
    assert "Sun 12-27 17:30" in runs and "Sun 12-27 16:30" not in runs  # Monday's session opened at 17:00
    assert "Fri 12-25 17:30" not in runs and "Sat 01-02 12:30" not in runs
    # The next slot that runs, found a day at a time, is the same one.
    assert next(upcoming(hourly, at("2026-12-27 00:00"), HK, cme)).astimezone(chicago).hour == 17
    # Its night window: closed from Friday's close to Sunday's open, not from midnight to midnight.
    assert cme.window(datetime.datetime(2027, 1, 3, 17, 30, tzinfo=chicago)) == "day"
    assert cme.window(datetime.datetime(2027, 1, 3, 16, 0, tzinfo=chicago)) == "night"
    assert cme.window(datetime.datetime(2027, 1, 1, 17, 30, tzinfo=chicago)) == "night"  # New Year's Day
