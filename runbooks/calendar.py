"""The venue's trading sessions: what state the venue is in at an instant, and when that changes.

Sessions come from ``exchange_calendars`` (holidays, lunch breaks, early closes), never from a list kept
here. That library stands on pandas and numpy, which cost a process about 56 MB and 0.3 s to import
(measured; the README has the numbers), more than the controller's memory budget allows. So the
library runs in a short-lived child process (``python -m runbooks.calendar VENUE START END``) that
prints a compact table of the sessions over a bounded range as JSON; the controller and the API keep
only that table, as plain datetimes, and never import pandas.

The session states, at an instant ``t``:

- ``pre_open``: the ``pre_open`` minutes (30 by default: XHKG's pre-opening session) before a
  session's open, while the previous session is closed (CME's close at 17:00 as the next one opens);
- ``open``: from the open to the close, except the lunch break;
- ``lunch_break``: between a session's break start and break end (XHKG: 12:00-13:00);
- ``holiday``: the whole venue-local day of a weekday on which the venue does not trade, outside any
  session's pre-open;
- ``closed``: any other time (before the pre-open, after the close, weekends).

Every interval includes its start and excludes its end: at 09:30:00 XHKG is ``open``.
"""

from __future__ import annotations

import bisect
import datetime
import functools
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from runbooks.contract import SessionState as State  # kept with the rest of the vocabulary
from runbooks.models import Window

log = logging.getLogger(__name__)
UTC = datetime.UTC
LIBRARY = "exchange_calendars"
DEFAULT_ZONE = ZoneInfo("Asia/Shanghai")  # +08:00
DEFAULT_PRE_OPEN = datetime.timedelta(minutes=30)  # XHKG's pre-opening session: 09:00-09:30


# The spec's ``day``/``night`` windows from the session state: ``day`` is the venue's trading day from
# its pre-open to its close; ``night`` is everything else. XHKG has no night session in
# exchange_calendars, so there ``night`` means "the venue is not trading": the time for overnight work.
DEFAULT_WINDOWS: dict[State, Window] = {
    State.PRE_OPEN: "day",
    State.OPEN: "day",
    State.LUNCH_BREAK: "day",
    State.CLOSED: "night",
    State.HOLIDAY: "night",
}


class CalendarError(Exception):
    """The calendar cannot answer: an unknown venue, or an instant outside the loaded range."""


class UnknownVenue(CalendarError):
    """The venue is not one of the library's calendars: asking again will not help."""


UNKNOWN_VENUE_EXIT = 3  # the child's exit code for an unknown venue


@dataclass(frozen=True, slots=True)
class Session:
    """One trading session; times are aware datetimes in UTC."""

    day: datetime.date
    open: datetime.datetime
    close: datetime.datetime
    break_start: datetime.datetime | None = None
    break_end: datetime.datetime | None = None


@dataclass(frozen=True)
class SessionTable:
    """The sessions of ``venue`` on the venue-local days ``first``..``last`` (both included). ``bounded``:
    ``last`` is the last day the library knows the venue's holidays for, before the day asked for (XSHG's
    end with 2026 in exchange_calendars 4.13.2): a table asked for later days would go no further."""

    venue: str
    tz: str
    weekmask: str  # Monday first, "1" for a weekday the venue normally trades: XHKG "1111100"
    first: datetime.date
    last: datetime.date
    library: str  # "exchange_calendars 4.13.2", for the status endpoints
    sessions: tuple[Session, ...]
    bounded: bool = False

    def to_json(self) -> str:
        def epoch(t: datetime.datetime | None) -> int | None:
            return None if t is None else int(t.timestamp())

        rows = [
            [s.day.isoformat(), epoch(s.open), epoch(s.close), epoch(s.break_start), epoch(s.break_end)]
            for s in self.sessions
        ]
        head = {k: str(v) for k, v in vars(self).items() if k != "sessions"}
        return json.dumps({**head, "sessions": rows}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SessionTable:
        data = json.loads(text)

        def instant(seconds: int | None) -> datetime.datetime | None:
            return None if seconds is None else datetime.datetime.fromtimestamp(seconds, UTC)

        sessions = tuple(
            Session(datetime.date.fromisoformat(day), instant(o), instant(c), instant(bs), instant(be))
            for day, o, c, bs, be in data["sessions"]
        )
        return cls(
            venue=data["venue"],
            tz=data["tz"],
            weekmask=data["weekmask"],
            first=datetime.date.fromisoformat(data["first"]),
            last=datetime.date.fromisoformat(data["last"]),
            library=data["library"],
            sessions=sessions,
            bounded=data.get("bounded") == "True",
        )


@functools.cache
def library_version() -> str:
    """The pinned calendar library, e.g. ``exchange_calendars 4.13.2``, without importing it."""
    return f"{LIBRARY} {version('exchange-calendars')}"


def build_table(venue: str, first: datetime.date, last: datetime.date) -> SessionTable:
    """The table, from exchange_calendars in this process (pandas and all): for the child process and
    for tests, not for the long-running processes (they use :func:`load_table`)."""
    import warnings

    import exchange_calendars
    import pandas
    from exchange_calendars.pandas_extensions.offsets import OrthodoxEaster

    # exchange_calendars 4.13.2's Orthodox Easter offset (the holidays of ASEX, XBEL, XBSE and XCYS)
    # implements `_apply`, which the pinned pandas no longer calls: it calls `_add_datetime`, and raises
    # NotImplementedError for an offset without one, so these venues had no calendar at all.
    if "_add_datetime" not in vars(OrthodoxEaster):
        OrthodoxEaster._add_datetime = OrthodoxEaster._apply

    def instant(value: pandas.Timestamp) -> datetime.datetime | None:
        return None if pandas.isna(value) else value.to_pydatetime().astimezone(UTC)

    with warnings.catch_warnings():
        # exchange_calendars 4.13 still uses pandas APIs that pandas announces it will remove
        # (Pandas4Warning); pandas is pinned with it, so these are not ours to act on.
        warnings.simplefilter("ignore")
        end = last
        try:
            calendar = exchange_calendars.get_calendar(venue, start=first, end=last)
        except exchange_calendars.errors.InvalidCalendarName as error:
            raise UnknownVenue(f"unknown venue {venue!r}: not a calendar of {library_version()}") from error
        except ValueError:  # past the last day the library knows (its default range never is)
            bound = type(exchange_calendars.get_calendar(venue)).bound_max()
            if bound is None or bound.date() >= last:
                raise
            end = bound.date()
            first = min(first, end - datetime.timedelta(days=7))  # asked beyond it: its last week
            calendar = exchange_calendars.get_calendar(venue, start=first, end=end)
        sessions = tuple(
            Session(
                row.Index.date(),
                instant(row.open),
                instant(row.close),
                instant(row.break_start),
                instant(row.break_end),
            )
            for row in calendar.schedule.itertuples()
        )
    return SessionTable(
        venue, str(calendar.tz), calendar.weekmask, first, end, library_version(), sessions, end < last
    )


def load_table(venue: str, first: datetime.date, last: datetime.date) -> SessionTable:
    """The table, built by exchange_calendars in a child process, so that pandas never loads here."""
    try:
        result = subprocess.run(
            [sys.executable, "-m", "runbooks.calendar", venue, first.isoformat(), last.isoformat()],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise CalendarError(f"the {venue} calendar took more than {error.timeout} s to build") from error
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit code {result.returncode}"]
        kind = UnknownVenue if result.returncode == UNKNOWN_VENUE_EXIT else CalendarError
        raise kind(f"the {venue} calendar could not be built: {lines[-1]}")
    return SessionTable.from_json(result.stdout)


class SessionCalendar:
    """Questions about one loaded table; pure (no I/O, no clock). Instants must be aware; the instants
    it answers with are in ``zone`` (the display zone, +08:00 by default)."""

    def __init__(
        self,
        table: SessionTable,
        *,
        pre_open: datetime.timedelta = DEFAULT_PRE_OPEN,
        windows: Mapping[State, Window] = DEFAULT_WINDOWS,
        zone: datetime.tzinfo = DEFAULT_ZONE,
    ):
        self.table, self.pre_open, self.windows, self.zone = table, pre_open, dict(windows), zone
        self._venue_zone = ZoneInfo(table.tz)
        self._days = {s.day: s for s in table.sessions}
        self._holidays = frozenset(
            d
            for d in _days(table.first, table.last)
            if table.weekmask[d.weekday()] == "1" and d not in self._days
        )
        self._starts = [s.open - pre_open for s in table.sessions]
        self._opens = [s.open for s in table.sessions]
        self._closes = [s.close for s in table.sessions]
        # Every instant at which the state may change, in order: what next_start walks.
        changes = {
            t
            for s in table.sessions
            for t in (s.open - pre_open, s.open, s.break_start, s.break_end, s.close)
            if t is not None
        }
        for day in self._holidays:
            midnight = datetime.datetime.combine(day, datetime.time(), self._venue_zone)
            changes |= {midnight.astimezone(UTC), (midnight + datetime.timedelta(days=1)).astimezone(UTC)}
        self._changes = sorted(changes)

    @property
    def venue(self) -> str:
        return self.table.venue

    def venue_day(self, at: datetime.datetime) -> datetime.date:
        return at.astimezone(self._venue_zone).date()

    def covers(self, at: datetime.datetime) -> bool:
        return self.table.first <= self.venue_day(at) <= self.table.last

    def check(self, at: datetime.datetime) -> None:
        """Raise unless the table answers for ``at`` (an aware instant)."""
        if at.tzinfo is None:
            raise ValueError(f"{at!r} has no time zone")
        if self.ended(at):
            raise CalendarError(self.beyond(at))
        if not self.covers(at):
            raise CalendarError(
                f"{at.isoformat()} is outside the loaded {self.venue} calendar "
                f"({self.table.first}..{self.table.last})"
            )

    def ended(self, at: datetime.datetime) -> bool:
        """Whether ``at`` is past the last day the library knows the venue for: no table goes further."""
        return self.table.bounded and self.venue_day(at) > self.table.last

    def beyond(self, at: datetime.datetime) -> str:
        """What to say of an instant past that day."""
        return (
            f"{at.isoformat()} is beyond the {self.venue} calendar: {self.table.library} records its "
            f"holidays only up to {self.table.last}"
        )

    @property
    def end(self) -> datetime.datetime:
        """The first instant past the table: the midnight that ends its last venue-local day."""
        return self.day_end(self.table.last)

    def day_end(self, day: datetime.date) -> datetime.datetime:
        """The midnight that ends the venue-local ``day``."""
        after = day + datetime.timedelta(days=1)
        return datetime.datetime.combine(after, datetime.time(), self._venue_zone).astimezone(self.zone)

    def answers(self, start: datetime.datetime, end: datetime.datetime) -> bool:
        """Whether this table answers from ``start`` to ``end`` as well as any table could: it covers
        both, or what it does not cover is past the library's knowledge of the venue (asked about, it
        says so: :meth:`check`)."""
        return (self.covers(start) and (self.covers(end) or self.table.bounded)) or self.ended(start)

    def session(self, day: datetime.date) -> Session | None:
        """The session of a venue-local day, or None when the venue does not trade that day."""
        return self._days.get(day)

    def trades(self, at: datetime.datetime) -> bool:
        """Whether ``at`` is on a day the venue trades, as exchange_calendars has it: a session is under
        way (CME's Monday session from Sunday 17:00 Chicago time), or its venue-local date is a session's."""
        return self.session(self.venue_day(at)) is not None or bool(self.sessions_over(at, at))

    def sessions_over(self, start: datetime.datetime, end: datetime.datetime) -> list[Session]:
        """The sessions under way at some instant from ``start`` to ``end`` (both included)."""
        index = bisect.bisect_right(self._closes, start)  # the first session that closes after start
        over = []
        while index < len(self._opens) and self._opens[index] <= end:
            over.append(self.table.sessions[index])
            index += 1
        return over

    def state(self, at: datetime.datetime) -> State:
        self.check(at)
        index = bisect.bisect_right(self._starts, at) - 1
        if index >= 0:
            s = self.table.sessions[index]
            if at < s.open and index > 0 and at < self.table.sessions[index - 1].close:
                s = self.table.sessions[index - 1]  # still trading (CME's 17:00-17:00): open, not pre-open
            if at < s.close:
                if at < s.open:
                    return State.PRE_OPEN
                if s.break_start is not None and s.break_start <= at < s.break_end:
                    return State.LUNCH_BREAK
                return State.OPEN
        return State.HOLIDAY if self.venue_day(at) in self._holidays else State.CLOSED

    def window(self, at: datetime.datetime) -> Window:
        """The spec's window at ``at``: ``day`` or ``night``, through :attr:`windows`."""
        return self.windows[self.state(at)]

    def next_open(self, at: datetime.datetime) -> datetime.datetime | None:
        """The first session open strictly after ``at``, or None past the table."""
        return self._first_after(at, self._opens)

    def next_close(self, at: datetime.datetime) -> datetime.datetime | None:
        """The first session close strictly after ``at``, or None past the table."""
        return self._first_after(at, self._closes)

    def _first_after(self, at: datetime.datetime, times: list[datetime.datetime]) -> datetime.datetime | None:
        self.check(at)
        index = bisect.bisect_right(times, at)
        return times[index].astimezone(self.zone) if index < len(times) else None

    def next_start(self, at: datetime.datetime, states: Iterable[State]) -> datetime.datetime | None:
        """The first instant at or after ``at`` at which the venue is in one of ``states``: ``at``
        itself when it already is; None when that does not happen within the loaded table."""
        wanted = frozenset(states)
        if self.state(at) in wanted:
            return at.astimezone(self.zone)
        for change in self._changes[bisect.bisect_right(self._changes, at) :]:
            if not self.covers(change):
                return None
            if self.state(change) in wanted:
                return change.astimezone(self.zone)
        return None

    def sessions_between(self, start: datetime.datetime, end: datetime.datetime) -> Iterator[Session]:
        """The sessions whose venue-local day lies between those of ``start`` and ``end``."""
        first, last = self.venue_day(start), self.venue_day(end)
        return (s for s in self.table.sessions if first <= s.day <= last)


def _days(first: datetime.date, last: datetime.date) -> Iterator[datetime.date]:
    day = first
    while day <= last:
        yield day
        day += datetime.timedelta(days=1)


class VenueCalendar:
    """The calendar a long-running process holds: the table is loaded at first use (in a child
    process, see :func:`load_table`), over a bounded range around the instant asked about, and loaded
    again when an instant falls outside it (after about a year of running). Thread-safe.

    With a ``cache`` file, the table loaded is kept there, and a process that starts again (a restarted
    controller) reads it in milliseconds instead of waiting about 1.5 s of CPU for the child: while it
    answers for the range asked about and the pinned library built it; otherwise it is built again."""

    BEHIND = datetime.timedelta(days=35)
    AHEAD = datetime.timedelta(days=400)
    RETRY = datetime.timedelta(minutes=5)  # a failed load is raised again, not tried again, for this long

    def __init__(
        self,
        venue: str,
        *,
        loader: Callable[[str, datetime.date, datetime.date], SessionTable] = load_table,
        cache: Path | None = None,
        retry: datetime.timedelta = RETRY,
        **options: Any,
    ):
        """``options``: the keyword arguments of :class:`SessionCalendar` (pre_open, windows, zone)."""
        self.venue = venue
        self.zone: datetime.tzinfo = options.get("zone", DEFAULT_ZONE)  # its calendars' answers are in it
        self._options = options
        self._loader = loader
        self._cache = cache
        self._lock = threading.Lock()
        self._current: SessionCalendar | None = None
        self._unknown: UnknownVenue | None = None  # remembered: no child process per question
        # A load that failed otherwise (the library cannot build the venue, a child that timed out) and
        # when it did (time.monotonic): the same load fails again, so it is tried again only after retry.
        self._failed: tuple[CalendarError, float] | None = None
        self._retry = retry.total_seconds()
        self._prefetching: threading.Thread | None = None
        self._prefetch_lock = threading.Lock()  # never held during a load: prefetch() does not wait

    def covering(self, start: datetime.datetime, end: datetime.datetime) -> SessionCalendar:
        """A calendar that answers for every instant from ``start`` to ``end``."""
        with self._lock:
            if self._unknown is not None:
                raise self._unknown
            current = self._current
            if current is None or not current.answers(start, end):
                if (failed := self._failure()) is not None:
                    raise failed
                current = self._cached(start, end) or self._load(start, end)
                self._current = current
            return current

    def _failure(self) -> CalendarError | None:
        """The failure of the latest load, while it is too recent to try again."""
        if self._failed is not None and time.monotonic() - self._failed[1] < self._retry:
            return self._failed[0]
        return None

    def _load(self, start: datetime.datetime, end: datetime.datetime) -> SessionCalendar:
        first = start.date() - datetime.timedelta(days=1)
        # A year from its start, and at least the weeks after its end (what `at` asks beyond an instant):
        # a range from long ago (a schedule's last slot) then also answers the runs of now.
        last = max(end + self.BEHIND, start + self.AHEAD).date() + datetime.timedelta(days=1)
        try:
            table = self._loader(self.venue, first, last)
        except UnknownVenue as error:
            self._unknown = error
            raise
        except CalendarError as error:
            self._failed = (error, time.monotonic())
            raise
        self._failed = None
        if self._cache is not None:
            self._keep(table, self._cache)
        return SessionCalendar(table, **self._options)

    def _keep(self, table: SessionTable, cache: Path) -> None:
        """Whole or not at all: written aside under a name of its own (another venue's calendar, or
        another process, may be keeping its table at the same moment), then renamed over the old one."""
        aside = None
        try:
            handle, aside = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.")
            with os.fdopen(handle, "w") as out:
                out.write(table.to_json())
            os.replace(aside, cache)
        except OSError as error:
            if aside is not None:
                Path(aside).unlink(missing_ok=True)
            log.warning("the %s calendar is not kept in %s: %s", self.venue, cache, error)

    def _cached(self, start: datetime.datetime, end: datetime.datetime) -> SessionCalendar | None:
        """The table an earlier process kept, if it answers from ``start`` to ``end``."""
        if self._cache is None:
            return None
        try:
            table = SessionTable.from_json(self._cache.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning(
                "the %s calendar kept in %s is not readable (%s): building it", self.venue, self._cache, error
            )
            return None
        if table.venue != self.venue or table.library != library_version():
            return None
        calendar = SessionCalendar(table, **self._options)
        return calendar if calendar.answers(start, end) else None

    def at(self, instant: datetime.datetime, ahead: datetime.timedelta = BEHIND) -> SessionCalendar:
        """A calendar that answers for ``instant``, the weeks before it and ``ahead`` after it (by default
        the weeks after it: the waits of a policy, the next slots of a schedule)."""
        return self.covering(instant - self.BEHIND, instant + ahead)

    def window(self, at: datetime.datetime) -> Window:
        return self.at(at).window(at)

    def loaded(self, at: datetime.datetime) -> SessionCalendar | None:
        """The calendar already loaded, if it answers for ``at``, without loading one: for readers that
        must not wait seconds for a child process (the REST API's status). None otherwise: then a load
        is started in the background, unless one is under way, the venue is unknown or ``at`` is past
        what the library knows of it (:meth:`note` says why)."""
        current = self._current
        if current is not None and current.covers(at):
            return current
        if self.note(at) is None:
            self.prefetch(at)
        return None

    def note(self, at: datetime.datetime) -> str | None:
        """Why no calendar answers for ``at`` (an unknown venue, a load that failed lately, or ``at`` past
        what the library knows of the venue), or None: it does, or it is loading."""
        failed = self._unknown or self._failure()
        if failed is not None:
            return str(failed)
        current = self._current
        return current.beyond(at) if current is not None and current.ended(at) else None

    def prefetch(self, at: datetime.datetime) -> threading.Thread:
        """Load the table now, in the background, so that the first question (the first run's
        ``window: auto``) does not wait seconds for it; that question waits for this load instead of
        starting another. A failure is logged here and raised again to whoever asks next. While a
        prefetch is under way, asking for another returns it."""

        def load() -> None:
            try:
                self.at(at)
            except CalendarError as error:
                log.error("%s", error)

        with self._prefetch_lock:
            if self._prefetching is not None and self._prefetching.is_alive():
                return self._prefetching
            thread = self._prefetching = threading.Thread(
                target=load, name=f"{self.venue} calendar", daemon=True
            )
        thread.start()
        return thread


def main(argv: list[str]) -> int:
    """``python -m runbooks.calendar VENUE FIRST LAST``: the session table as JSON on stdout."""
    if len(argv) != 3:
        print("usage: python -m runbooks.calendar VENUE FIRST-DAY LAST-DAY", file=sys.stderr)
        return 2
    venue, first, last = argv
    try:
        table = build_table(venue, datetime.date.fromisoformat(first), datetime.date.fromisoformat(last))
    except UnknownVenue as error:
        print(error, file=sys.stderr)
        return UNKNOWN_VENUE_EXIT
    except (CalendarError, ValueError) as error:
        print(error, file=sys.stderr)
        return 1
    sys.stdout.write(table.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
