"""``RunbookSchedule``: runbooks at the session's rhythm, each slot run at most once.

A schedule is a template of a Runbook spec and a trigger, which is one of

- ``cron``: a cron expression (five fields, Debian cron's meaning, evaluated by cronsim) in
  ``timeZone`` (default: the processes' ``MDOPS_TIMEZONE``, +08:00);
- ``every``: an interval (``30s``, ``5m``, ``1h``), slots at its multiples since the Unix epoch, only
  while the venue is in one of the ``during`` states if given (``every: 5m, during: [open]``);
- ``session``: an event of the venue's sessions, ``open`` or ``close`` with an offset (``open-30m``,
  ``close+15m``), on trading days only (a day without a session has no such event).

With ``tradingDaysOnly``, a cron or every slot on a venue-local day without a session is *skipped*
(recorded, not run). A slot is *missed* when it cannot run on time: past its starting deadline, while
the schedule is suspended, or superseded by a later slot that is also due (at most one slot runs at a
time, never a burst of late ones). The Runbook of a slot has a request id derived from the schedule's
name and the slot's instant, so the ledger refuses a second run of a slot whatever happens.
"""

from __future__ import annotations

import bisect
import datetime
import functools
import itertools
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import ConfigDict, Field, create_model, field_validator

from runbooks import keys, models
from runbooks.calendar import UTC, SessionCalendar, State
from runbooks.models import Condition, Person, RunbookSpec, _Model
from runbooks.policy import states_field

KIND = "RunbookSchedule"
PLURAL = "runbookschedules"
SINGULAR = "runbookschedule"
SHORT_NAMES = ["rbs"]

# A slot's Runbook is named <schedule>-<yyyymmddhhmmss, UTC>: 48 + 1 + 14 = 63, a DNS label.
MAX_NAME_LENGTH = 48
SLOT_FORMAT = "%Y%m%d%H%M%S"
SCHEDULE_LABEL = f"{keys.GROUP}/schedule"
SLOT_ANNOTATION = f"{keys.GROUP}/slot"
REQUESTER_PREFIX = "schedule:"  # a slot's Runbook names "schedule:<name>" when its schedule names nobody
SLOT_REQUEST_PREFIX = "schedule."  # and its request id is "schedule.<name>.<slot>"
# The reasons of a schedule's Events (and of its Ready condition).
CREATED, MISSED, SKIPPED, NAME_TAKEN = "SlotCreated", "SlotsMissed", "SlotsSkipped", "SlotNameTaken"
SCHEDULED, INVALID, NO_CALENDAR, REFUSED = "Scheduled", "InvalidSpec", "CalendarUnavailable", "SlotRefused"
NEXT_HORIZON = datetime.timedelta(days=31)  # how far ahead the next slot is looked for
TICK = datetime.timedelta(microseconds=1)  # slots are whole seconds: [a, b) is (a - TICK, b - TICK]

DURATION_PATTERN = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
SESSION_PATTERN = r"^(open|close)([+-][0-9]{1,4}[hm])?$"
ZONE_PATTERN = r"^([+-]([01][0-9]|2[0-3]):[0-5][0-9]|[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*)$"
CRON_PATTERN = r"^\S+( \S+){4}$"
# The zones Etc/GMT+N have POSIX's sign, the opposite of ISO's: Etc/GMT+8 is UTC-08:00, sixteen hours from
# the +08:00 that whoever writes it most likely means. The offset itself says the same without the doubt.
ETC_GMT = "Etc/GMT+N is UTC-N, Etc/GMT-N is UTC+N (POSIX's sign): give the offset itself, e.g. +08:00"
ETC_GMT_PATTERN = r"^Etc/GMT[+-]0*[1-9]"
# The controller looks at a schedule once a second, each look a second after the last one ended: a slot on
# time may be looked at a second and a little later, past a deadline of one second. The API server refuses
# a shorter one when it is set; a schedule that has one already keeps it (a rule on changes), and parses.
MIN_STARTING_DEADLINE = 2
SHORT_DEADLINE = (
    f"startingDeadlineSeconds is at least {MIN_STARTING_DEADLINE}: the controller looks at a schedule once a "
    "second, so a shorter deadline misses slots that were on time"
)
MAX_SESSION_OFFSET = datetime.timedelta(hours=24)
SESSION_OFFSET = "a session offset is at most 24h (1440m) before or after the event"

TRIGGER_RULES = [
    {
        "rule": "[has(self.cron), has(self.every), has(self.session)].filter(x, x).size() == 1",
        "message": "give exactly one of cron, every and session",
    },
    {"rule": "!has(self.timeZone) || has(self.cron)", "message": "timeZone goes with cron only"},
    {"rule": f"!has(self.timeZone) || !self.timeZone.matches('{ETC_GMT_PATTERN}')", "message": ETC_GMT},
    {"rule": "!has(self.during) || has(self.every)", "message": "during goes with every only"},
    {
        "rule": "!has(self.every) || (duration(self.every) >= duration('5s') "
        "&& duration(self.every) <= duration('24h'))",
        "message": "every is from 5s to 24h",
    },
    {
        # The offset alone ("-30m" of "open-30m"): a Go duration, signed.
        "rule": "!has(self.session) || self.session in ['open', 'close'] || "
        "(duration(self.session.replace('open', '').replace('close', '')) <= duration('24h') && "
        "duration(self.session.replace('open', '').replace('close', '')) >= duration('-24h'))",
        "message": SESSION_OFFSET,
    },
]


def parse_duration(text: str) -> datetime.timedelta:
    """``1h30m``, ``5m``, ``45s`` (the subset of Go's durations that the schema allows)."""
    match = re.fullmatch(DURATION_PATTERN, text)
    if not text or match is None:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m or 1h30m")
    hours, minutes, seconds = (int(part[:-1]) if part else 0 for part in match.groups())
    return datetime.timedelta(hours=hours, minutes=minutes, seconds=seconds)


def session_offset(event: str) -> datetime.timedelta:
    """The offset of a session event (``open-30m``: -30 minutes; ``close``: none)."""
    offset = re.fullmatch(SESSION_PATTERN, event).group(2)
    if not offset:
        return datetime.timedelta(0)
    amount = int(offset[1:-1]) * (-1 if offset[0] == "-" else 1)
    return datetime.timedelta(hours=amount) if offset[-1] == "h" else datetime.timedelta(minutes=amount)


def parse_zone(text: str) -> datetime.tzinfo:
    """``+08:00`` or an IANA name such as ``Asia/Hong_Kong``."""
    if text[:1] in "+-":
        hours, minutes = int(text[1:3]), int(text[4:6])
        offset = datetime.timedelta(hours=hours, minutes=minutes) * (-1 if text[0] == "-" else 1)
        return datetime.timezone(offset)
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"{text!r} is not a known time zone") from error


class Trigger(_Model):
    """When the slots are: exactly one of cron, every and session."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": TRIGGER_RULES})

    cron: str | None = Field(
        None,
        max_length=128,
        pattern=CRON_PATTERN,
        description="A cron expression, five fields (minute hour day-of-month month day-of-week), in "
        "timeZone. Checked in full by the controller, not by the API server.",
    )
    time_zone: str | None = Field(
        None,
        max_length=64,
        pattern=ZONE_PATTERN,
        description="The cron expression's time zone: an offset (+08:00) or an IANA name, but not "
        "Etc/GMT+N (POSIX's sign: UTC-N). Default: MDOPS_TIMEZONE.",
    )
    every: str | None = Field(
        None,
        min_length=2,
        max_length=16,
        pattern=DURATION_PATTERN,
        description="A slot at each multiple of this interval (5s..24h, e.g. 5m) since the Unix epoch.",
    )
    during: list[State] | None = states_field(
        "With every: slots only while the venue is in one of these session states."
    )
    session: str | None = Field(
        None,
        max_length=16,
        pattern=SESSION_PATTERN,
        description="A session event of the venue, on trading days: open or close, with an offset of at "
        "most 24h (open-30m, close+15m, open+1h).",
    )
    trading_days_only: bool = Field(
        False, description="With cron or every: a slot on a day the venue does not trade is skipped."
    )

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                CronSim(value, datetime.datetime(2000, 1, 1, tzinfo=UTC))
            except CronSimError as error:
                raise ValueError(f"cron {value!r}: {error}") from error
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None and re.match(ETC_GMT_PATTERN, value):
            raise ValueError(ETC_GMT)
        if value is not None:
            parse_zone(value)
        return value

    @field_validator("every")
    @classmethod
    def _every(cls, value: str | None) -> str | None:
        if value is not None and not (
            datetime.timedelta(seconds=5) <= parse_duration(value) <= datetime.timedelta(hours=24)
        ):
            raise ValueError("every is from 5s to 24h")
        return value

    @field_validator("session")
    @classmethod
    def _session(cls, value: str | None) -> str | None:
        if value is not None and abs(session_offset(value)) > MAX_SESSION_OFFSET:
            raise ValueError(SESSION_OFFSET)
        return value

    @property
    def kind(self) -> Literal["cron", "every", "session"]:
        given = [k for k in ("cron", "every", "session") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of cron, every and session")
        return given[0]

    @property
    def uses_sessions(self) -> bool:
        """Whether its slots depend on the venue's sessions (then they need its calendar): session events,
        ``during`` and ``tradingDaysOnly``; a plain ``cron`` or ``every`` does not."""
        return self.kind == "session" or self.during is not None or self.trading_days_only

    def describe(self) -> str:
        """The trigger in a few words, for the SCHEDULE column."""
        if self.kind == "cron":
            text = f"{self.cron} ({self.time_zone})" if self.time_zone else self.cron
        elif self.kind == "every":
            text = f"every {self.every}" + (f" during {','.join(self.during)}" if self.during else "")
        else:
            return str(self.session)
        return f"{text}, trading days" if self.trading_days_only else text


RunbookTemplate = create_model(
    "RunbookTemplate",
    __base__=_Model,
    __doc__="The spec of each slot's Runbook: a Runbook's spec without requestId and requestedBy, "
    "which the controller sets, and cancel, which a slot's Runbook may be given later.",
    **{
        name: (field.annotation, field)
        for name, field in RunbookSpec.model_fields.items()
        if name not in ("request_id", "requested_by", "cancel")
    },
)


class RunbookScheduleSpec(_Model):
    """A Runbook template and when to run it."""

    template: RunbookTemplate = Field(description="The spec of each slot's Runbook.")
    trigger: Trigger
    requested_by: Person = Field(
        "",
        description="Who asks for the slots' runs, as the requester of each: the user who creates the "
        "schedule, resumes it or changes its template or trigger (the API server refuses another name), or "
        "empty: the runs are then requested by schedule:<name>, for whom no approval can count.",
    )
    suspend: bool = Field(
        False,
        description="No slot's Runbook is made while suspended; the slots that pass are missed. A Runbook "
        "made before (waiting at the gate or for its lock) is not stopped: cancel it (spec.cancel).",
    )
    starting_deadline_seconds: int = Field(
        60,
        ge=1,
        le=86400,
        description=f"A slot that cannot start within this long after its time is missed; at least "
        f"{MIN_STARTING_DEADLINE} (a schedule is looked at once a second).",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self >= {MIN_STARTING_DEADLINE} || oldSelf.hasValue() && oldSelf.value() == "
                    "self",
                    "optionalOldSelf": True,
                    "message": SHORT_DEADLINE,
                }
            ]
        },
    )
    concurrency_policy: Literal["Forbid", "Queue"] = Field(
        "Forbid",
        description="Forbid: skip a slot while the previous run is unfinished. Queue: create it anyway "
        "(it waits for its target's lock like any Runbook).",
    )
    successful_history_limit: int = Field(
        3, ge=0, le=100, description="Succeeded Runbooks of this schedule to keep."
    )
    failed_history_limit: int = Field(
        1, ge=0, le=100, description="Failed Runbooks of this schedule to keep."
    )


class RunbookScheduleStatus(_Model):
    """Written only by the controller."""

    observed_generation: int | None = Field(None, description="The generation this status was written for.")
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=8,
        description="Ready: True (Scheduled), or False and why it does not run.",
    )
    schedule: str | None = Field(None, description="The trigger in words.")
    last_slot: str | None = Field(None, description="The latest slot handled: run, missed or skipped.")
    next_slot: str | None = Field(None, description="The next slot that will run (within 31 days).")
    last_runbook: str | None = Field(None, description="The Runbook of the latest slot run.")
    last_result: Literal["success", "failed"] | None = Field(None, description="Its result, once finished.")
    missed_slots: int = Field(0, ge=0, description="Slots missed so far.")
    skipped_slots: int = Field(0, ge=0, description="Slots skipped so far.")


@dataclass(frozen=True)
class Slot:
    at: datetime.datetime
    skipped: bool = False  # on a day the venue does not trade (tradingDaysOnly)


def slots_between(
    trigger: Trigger,
    after: datetime.datetime,
    until: datetime.datetime,
    zone: datetime.tzinfo,
    calendar: SessionCalendar | None = None,
) -> Iterator[Slot]:
    """The slots in (``after``, ``until``], in order, in ``zone`` (also cron's default time zone). A
    trigger that uses sessions needs the venue's ``calendar``, covering that range (CalendarError
    otherwise); the others never look at it."""
    if trigger.uses_sessions:
        calendar.check(after)  # never a slot silently missing or skipped for want of sessions
        calendar.check(until)
    if trigger.kind == "cron":
        times = _cron(trigger, after, zone)
    elif trigger.kind == "every":
        times = _every(trigger, after, until, zone, calendar)
    else:
        times = _session_events(str(trigger.session), after, until, zone, calendar)
    for at in times:
        if at > until:
            return
        skipped = trigger.trading_days_only and not calendar.trades(at)
        yield Slot(at, skipped)


def _cron(trigger: Trigger, after: datetime.datetime, zone: datetime.tzinfo) -> Iterator[datetime.datetime]:
    """The cron trigger's times after ``after``, in ``zone``, without end."""
    # A local time that happens twice (a DST change) has its slot at its first pass: cronsim, started
    # within the second, gives that slot again, behind `after`.
    sim = CronSim(str(trigger.cron), after.astimezone(_cron_zone(trigger, zone)))
    return (t.astimezone(zone) for t in sim if t > after)


def _cron_zone(trigger: Trigger, zone: datetime.tzinfo) -> datetime.tzinfo:
    return parse_zone(trigger.time_zone) if trigger.time_zone else zone


def _every(
    trigger: Trigger,
    after: datetime.datetime,
    until: datetime.datetime,
    zone: datetime.tzinfo,
    calendar: SessionCalendar | None,
) -> Iterator[datetime.datetime]:
    step = int(parse_duration(str(trigger.every)).total_seconds())
    epoch = int(after.timestamp()) // step * step + step  # the first multiple after `after`
    while epoch <= until.timestamp():
        at = datetime.datetime.fromtimestamp(epoch, zone)
        if trigger.during is None or calendar.state(at) in trigger.during:
            yield at
            epoch += step
            continue
        # Outside the states: jump to the next time they begin, then to the multiple at or after it.
        start = calendar.next_start(at, trigger.during)
        if start is None:
            return
        epoch = -(-int(start.timestamp()) // step) * step


def _session_events(
    event: str,
    after: datetime.datetime,
    until: datetime.datetime,
    zone: datetime.tzinfo,
    calendar: SessionCalendar,
) -> Iterator[datetime.datetime]:
    name = "open" if event.startswith("open") else "close"
    delta = session_offset(event)
    margin = abs(delta) + datetime.timedelta(days=1)  # an offset may move the event to another day
    for s in calendar.sessions_between(after - margin, until + margin):
        at = (s.open if name == "open" else s.close) + delta
        if after < at:
            yield at.astimezone(zone)


def upcoming(
    trigger: Trigger, after: datetime.datetime, zone: datetime.tzinfo, calendar: SessionCalendar | None = None
) -> Iterator[datetime.datetime]:
    """The slots after ``after`` that would run (not skipped), within NEXT_HORIZON, in order. For a
    trigger that uses sessions, only up to the end of a calendar past which the library knows the venue
    no further (XSHG's 2026 in exchange_calendars 4.13.2): the slots after it are not known, not none."""
    until = after + NEXT_HORIZON
    if trigger.uses_sessions and calendar.ended(until):
        until = calendar.end - datetime.timedelta(microseconds=1)  # its last instant
    if trigger.trading_days_only:
        return _on_trading_days(trigger, after, until, zone, calendar)
    return (slot.at for slot in slots_between(trigger, after, until, zone, calendar))


def _on_trading_days(
    trigger: Trigger,
    after: datetime.datetime,
    until: datetime.datetime,
    zone: datetime.tzinfo,
    calendar: SessionCalendar,
) -> Iterator[datetime.datetime]:
    """The slots in (``after``, ``until``] on the days the venue trades (:func:`_trading_spans`): a day it
    does not trade costs one question, not one per slot (every 5s over a long holiday: 69,120)."""
    for start, end, trades in _trading_spans(after, until, calendar):
        if trades:
            yield from (slot.at for slot in slots_between(trigger, start, end, zone, calendar))


def _trading_spans(
    after: datetime.datetime, until: datetime.datetime, calendar: SessionCalendar
) -> Iterator[tuple[datetime.datetime, datetime.datetime, bool]]:
    """(``after``, ``until``] cut into spans (start, end], each on a day the venue trades or each not
    (:meth:`SessionCalendar.trades`), with which: a venue-local day at a time, a day without a session of
    its own cut where a session of another is under way (CME's Sunday from 17:00)."""
    day = calendar.venue_day(after)
    while after < until:
        last = min(calendar.day_end(day) - TICK, until)  # the day's last instant
        if calendar.session(day) is not None:
            yield after, last, True
        else:
            for s in calendar.sessions_over(after, last):
                start, end = max(after, s.open - TICK), min(s.close - TICK, last)
                if after < start:
                    yield after, start, False
                yield start, end, True
                after = end
            if after < last:
                yield after, last, False
        after, day = last, day + datetime.timedelta(days=1)


@dataclass(frozen=True)
class Tally:
    """The slots of a range, counted: what :func:`due` needs of them."""

    runs: int = 0  # slots that would run
    skipped: int = 0  # slots on days the venue does not trade (tradingDaysOnly)
    last: datetime.datetime | None = None  # the latest slot
    last_run: datetime.datetime | None = None  # the latest slot that would run

    def add(self, count: int, last: datetime.datetime | None, skipped: bool) -> Tally:
        """This tally and ``count`` slots after it, the latest at ``last``: all skipped, or none."""
        if not count:
            return self
        if skipped:
            return Tally(self.runs, self.skipped + count, last, self.last_run)
        return Tally(self.runs + count, self.skipped, last, last)


def tally(
    trigger: Trigger,
    after: datetime.datetime,
    until: datetime.datetime,
    zone: datetime.tzinfo,
    calendar: SessionCalendar | None = None,
) -> Tally:
    """The slots of :func:`slots_between` (``after``, ``until``], counted in a time that grows with the
    days of the range, not with its slots (every 5s over a year: 6.3 million): an ``every`` trigger's by
    arithmetic, a cron's a day at a time, over the spans in which the venue is alike for all (on a trading
    day or not, in a ``during`` state). A session trigger has a slot a day at most: they are walked."""
    if trigger.kind == "session":
        return walked(trigger, after, until, zone, calendar)
    spans: Iterable[tuple[datetime.datetime, datetime.datetime, bool]] = [(after, until, False)]
    if trigger.uses_sessions:
        calendar.check(after)  # never a slot silently missing or skipped for want of sessions
        calendar.check(until)
        spans = _spans(trigger, after, until, calendar)
    count = _count_every if trigger.kind == "every" else _count_cron
    counted = Tally()
    for start, end, skipped in spans:
        counted = counted.add(*count(trigger, start, end, zone), skipped)
    return counted


def walked(
    trigger: Trigger,
    after: datetime.datetime,
    until: datetime.datetime,
    zone: datetime.tzinfo,
    calendar: SessionCalendar | None = None,
) -> Tally:
    """The slots of :func:`slots_between` counted one by one: what :func:`tally` counts faster."""
    counted = Tally()
    for slot in slots_between(trigger, after, until, zone, calendar):
        counted = counted.add(1, slot.at, slot.skipped)
    return counted


def _spans(
    trigger: Trigger, after: datetime.datetime, until: datetime.datetime, calendar: SessionCalendar
) -> Iterator[tuple[datetime.datetime, datetime.datetime, bool]]:
    """The spans (start, end] of (``after``, ``until``] in which the trigger has slots (in its ``during``
    states), each with whether its slots are skipped (``tradingDaysOnly``, on a day the venue does not
    trade)."""
    days = _trading_spans(after, until, calendar) if trigger.trading_days_only else [(after, until, True)]
    for start, end, trades in days:
        if trigger.during is None:
            yield start, end, not trades
        else:
            yield from ((s, e, not trades) for s, e in _during(trigger.during, start, end, calendar))


def _during(
    states: Iterable[State], after: datetime.datetime, until: datetime.datetime, calendar: SessionCalendar
) -> Iterator[tuple[datetime.datetime, datetime.datetime]]:
    """The spans (start, end] of (``after``, ``until``] in which the venue is in one of ``states``."""
    others = set(State) - set(states)
    at = after + TICK
    while at <= until:
        start = calendar.next_start(at, states)
        if start is None or start > until:
            return
        end = calendar.next_start(start, others) if others else None
        if end is None or end - TICK >= until:
            yield start - TICK, until
            return
        yield start - TICK, end - TICK
        at = end


def _count_every(
    trigger: Trigger, after: datetime.datetime, until: datetime.datetime, zone: datetime.tzinfo
) -> tuple[int, datetime.datetime | None]:
    """How many multiples of the trigger's interval are in (``after``, ``until``], and the latest."""
    step = int(parse_duration(str(trigger.every)).total_seconds())
    first, last = math.floor(after.timestamp()) // step + 1, math.floor(until.timestamp()) // step
    if last < first:
        return 0, None
    return last - first + 1, datetime.datetime.fromtimestamp(last * step, zone)


def _count_cron(
    trigger: Trigger, after: datetime.datetime, until: datetime.datetime, zone: datetime.tzinfo
) -> tuple[int, datetime.datetime | None]:
    """How many of the cron trigger's times are in (``after``, ``until``], and the latest: a day of its
    time zone at a time. A day of 24 hours has each of the expression's hours and minutes once, if
    cronsim matches the day; a day of a DST change is walked by cronsim."""
    cron_zone = _cron_zone(trigger, zone)
    sim, seconds = _cron_day(str(trigger.cron))
    count, latest = 0, None
    day = after.astimezone(cron_zone).date()
    start = _midnight(day, cron_zone)
    while start <= until:
        end = _midnight(day + datetime.timedelta(days=1), cron_zone)
        low, high = max(after, start - TICK), min(until, end - TICK)
        if low < high and day.month in sim.months and sim.match_day(day):
            if end - start == datetime.timedelta(days=1):
                first = bisect.bisect_right(seconds, (low - start).total_seconds())
                last = bisect.bisect_right(seconds, (high - start).total_seconds())
                if last > first:
                    count += last - first
                    latest = (start + datetime.timedelta(seconds=seconds[last - 1])).astimezone(zone)
            else:
                for at in itertools.takewhile(lambda t, high=high: t <= high, _cron(trigger, low, zone)):
                    count, latest = count + 1, at
        day, start = day + datetime.timedelta(days=1), end
    return count, latest


@functools.lru_cache(maxsize=256)
def _cron_day(expression: str) -> tuple[CronSim, tuple[int, ...]]:
    """A cron expression's matching of days (cronsim's), and its times of day in seconds, in order."""
    sim = CronSim(expression, datetime.datetime(2000, 1, 1, tzinfo=UTC))
    return sim, tuple(sorted(hour * 3600 + minute * 60 for hour in sim.hours for minute in sim.minutes))


def _midnight(day: datetime.date, zone: datetime.tzinfo) -> datetime.datetime:
    """The first instant of the local ``day`` in ``zone``, in UTC (at a DST change at midnight too)."""
    return datetime.datetime.combine(day, datetime.time(), zone).astimezone(UTC)


@dataclass(frozen=True)
class Due:
    """What to do about a schedule now; see :func:`due`."""

    run: datetime.datetime | None  # the slot to run now
    missed: int  # slots missed in this step
    skipped: int  # slots skipped in this step
    last_slot: datetime.datetime  # the latest slot handled: the next step's last_slot
    next_slot: datetime.datetime | None  # the first slot after now that would run, if known: upcoming()
    latest: datetime.datetime | None = None  # the latest slot that would run: the others were superseded
    late: bool = False  # that one missed, past its starting deadline

    def why_missed(self, spec: RunbookScheduleSpec) -> str:
        """Why its missed slots were, for whoever asks why a slot did not run."""
        if spec.suspend:
            return "while suspended"
        superseded, latest = self.missed - self.late, self.latest.isoformat() if self.latest else ""
        late = f"{latest} past its starting deadline ({spec.starting_deadline_seconds} s)"
        if not self.late:
            return f"superseded by the later slot {latest}"
        return f"{superseded} superseded by the later slot {latest}, and {late}" if superseded else late


def due(
    spec: RunbookScheduleSpec,
    last_slot: datetime.datetime,
    now: datetime.datetime,
    zone: datetime.tzinfo,
    calendar: SessionCalendar | None = None,
    *,
    active: bool = False,
) -> Due:
    """The slots after ``last_slot`` (the latest slot handled; for a new schedule, its creation) up to
    ``now``: at most one to run, the others missed or skipped.

    - Skipped: on a day the venue does not trade (``tradingDaysOnly``); and, with ``Forbid``, the slot
      that would run while the previous run is ``active``.
    - Missed: while suspended; past the starting deadline; superseded by a later due slot.
    - The clock going back never runs a slot twice: nothing after ``now`` is due, and nothing at or
      before ``last_slot`` is looked at again.

    ``calendar`` (only for triggers that use sessions) must cover ``last_slot`` .. ``now`` + NEXT_HORIZON,
    or as far as the library knows the venue (a slot that it cannot judge is an error, never run nor
    missed; a next slot past it is not known: None).
    """
    counted = tally(spec.trigger, last_slot, now, zone, calendar)
    run = counted.last_run
    missed, skipped = counted.runs - (run is not None), counted.skipped
    deadline = datetime.timedelta(seconds=spec.starting_deadline_seconds)
    late = run is not None and now - run > deadline
    if run is not None and (spec.suspend or late):
        run, missed = None, missed + 1
    if run is not None and active and spec.concurrency_policy == "Forbid":
        run, skipped = None, skipped + 1
    handled = counted.last or last_slot
    next_slot = next(upcoming(spec.trigger, max(handled, now), zone, calendar), None)
    return Due(run, missed, skipped, handled, next_slot, counted.last_run, late)


def slot_name(schedule: str, slot: datetime.datetime) -> str:
    """The name of a slot's Runbook: the schedule's name and the slot in UTC, as every replica and every
    restart derives it (a second create of it is AlreadyExists)."""
    return f"{schedule}-{_stamp(slot)}"


def slot_request_id(schedule: str, slot: datetime.datetime) -> str:
    """The request id of a slot's Runbook, so that the ledger refuses a second run of the slot. Its form,
    ``schedule.<name>.<slot in UTC>``, is the schedules' own: the API server (``manifests/identities.yaml``)
    and the REST API refuse it from anyone else, so nobody can take a slot's request id first."""
    return f"{SLOT_REQUEST_PREFIX}{schedule}.{_stamp(slot)}"


def _stamp(slot: datetime.datetime) -> str:
    return slot.astimezone(UTC).strftime(SLOT_FORMAT)


def slot_runbook(schedule: str, spec: RunbookScheduleSpec, slot: datetime.datetime) -> dict[str, Any]:
    """The Runbook of one slot, requested by the schedule's ``requestedBy`` (else ``schedule:<name>``) and
    labelled with its schedule."""
    return models.manifest(
        slot_name(schedule, slot),
        {
            **spec.template.to_k8s(),
            "requestId": slot_request_id(schedule, slot),
            "requestedBy": spec.requested_by or REQUESTER_PREFIX + schedule,
        },
        labels={SCHEDULE_LABEL: schedule},
        annotations={SLOT_ANNOTATION: slot.isoformat()},
    )
