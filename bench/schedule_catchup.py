"""Benchmark: what a schedule's catch-up after an outage costs the controller's event loop.

The look at a schedule (``controller.schedules.plan``, pure, run on kopf's event loop) handles every slot
since the schedule's last one: after the controller was down, or for a schedule whose status' lastSlot is
far back, that is many slots, and while it computes, no Runbook is admitted and kopf's /healthz does not
answer. This times ``plan`` once per case (the XHKG calendar, built by the library, as the controller
loads it), for outages of ``--days`` days ending at a fixed Monday 10:00 +08:00.

    python -m bench.schedule_catchup [--days 1 7 30 365]
"""

from __future__ import annotations

import argparse
import datetime
import time

from controller.schedules import plan
from runbooks.calendar import SessionCalendar, build_table
from runbooks.contract import format_time
from runbooks.schedule import RunbookScheduleSpec, RunbookScheduleStatus

HK = datetime.timezone(datetime.timedelta(hours=8))
NOW = datetime.datetime(2026, 3, 2, 10, 0, 0, 1, tzinfo=HK)  # a Monday while XHKG is open
TRIGGERS = {
    "every 5s": {"every": "5s"},
    "every 5s, trading days": {"every": "5s", "tradingDaysOnly": True},
    "every 5s during open": {"every": "5s", "during": ["open"]},
    "cron * * * * *": {"cron": "* * * * *"},
    "cron * * * * *, trading days": {"cron": "* * * * *", "tradingDaysOnly": True},
}


def catch_up(trigger: dict, days: int, calendar: SessionCalendar) -> tuple[float, int]:
    """The seconds ``plan`` takes to catch up ``days`` days of ``trigger``, and the slots it counted."""
    spec = RunbookScheduleSpec.model_validate({"template": {"command": "health_check"}, "trigger": trigger})
    last = NOW - datetime.timedelta(days=days)
    status = RunbookScheduleStatus(schedule=spec.trigger.describe(), last_slot=format_time(last))
    start = time.perf_counter()
    step = plan(
        "bench",
        spec,
        status,
        created=last,
        generation=1,
        now=NOW,
        zone=HK,
        calendar=calendar,
        runs=[],
    )
    took = time.perf_counter() - start
    counted = step.status.missed_slots + step.status.skipped_slots + (step.create is not None)
    return took, counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, nargs="+", default=[1, 7, 30, 365])
    args = parser.parse_args()
    first = (NOW - datetime.timedelta(days=max(args.days) + 2)).date()
    calendar = SessionCalendar(build_table("XHKG", first, (NOW + datetime.timedelta(days=40)).date()))
    print(f"{'trigger':32} {'days':>5} {'slots':>10} {'plan (s)':>9}")
    for name, trigger in TRIGGERS.items():
        for days in args.days:
            took, counted = catch_up(trigger, days, calendar)
            print(f"{name:32} {days:5} {counted:10} {took:9.4f}", flush=True)


if __name__ == "__main__":
    main()
