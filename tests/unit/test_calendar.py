"""The session calendar at fixed instants in +08:00: a holiday, a lunch break, an early close, the
minutes around the open, weekends; the day/night mapping; loading in a child process."""

from __future__ import annotations

import datetime
import re
import threading
from zoneinfo import ZoneInfo

import dateutil.easter
import pytest
from pydantic import ValidationError

from runbooks.calendar import (
    DEFAULT_WINDOWS,
    CalendarError,
    SessionCalendar,
    SessionTable,
    State,
    UnknownVenue,
    VenueCalendar,
    build_table,
    library_version,
    load_table,
)
from runbooks.settings import CommonSettings
from runbooks.venues import VENUES
from tests.unit.conftest import FIRST, HK, LAST, XSHG_KNOWN_UNTIL, at


@pytest.mark.parametrize(
    ("instant", "state"),
    [
        ("2026-01-05 08:59:59", State.CLOSED),  # Monday, before the pre-open
        ("2026-01-05 09:00", State.PRE_OPEN),  # the pre-open: 30 minutes before the open
        ("2026-01-05 09:29", State.PRE_OPEN),  # the minute before the open
        ("2026-01-05 09:30", State.OPEN),  # the open itself
        ("2026-01-05 09:31", State.OPEN),  # the minute after
        ("2026-01-05 11:59:59", State.OPEN),
        ("2026-01-05 12:00", State.LUNCH_BREAK),
        ("2026-01-05 12:59:59", State.LUNCH_BREAK),
        ("2026-01-05 13:00", State.OPEN),
        ("2026-01-05 15:59:59", State.OPEN),
        ("2026-01-05 16:00", State.CLOSED),
        ("2025-12-24 11:59", State.OPEN),  # Christmas Eve closes early, at 12:00, without a lunch break
        ("2025-12-24 12:00", State.CLOSED),
        ("2025-12-24 13:30", State.CLOSED),
        ("2025-12-25 00:00", State.HOLIDAY),  # Christmas: the whole day
        ("2025-12-25 10:00", State.HOLIDAY),
        ("2025-12-26 23:59:59", State.HOLIDAY),
        ("2025-12-27 10:00", State.CLOSED),  # Saturday: closed, not a holiday
        ("2025-12-28 10:00", State.CLOSED),  # Sunday
        ("2026-02-16 11:00", State.OPEN),  # Lunar New Year's Eve, an early close
        ("2026-02-16 12:30", State.CLOSED),
        ("2026-02-18 10:00", State.HOLIDAY),  # Lunar New Year
    ],
)
def test_state_at_fixed_instants(xhkg, instant, state):
    assert xhkg.state(at(instant)) == state


def test_the_same_instant_in_another_zone_is_the_same_state(xhkg):
    utc = at("2026-01-05 09:30").astimezone(datetime.UTC)
    assert utc.hour == 1 and xhkg.state(utc) == State.OPEN


@pytest.mark.parametrize(
    ("instant", "window"),
    [
        ("2026-01-05 08:59", "night"),
        ("2026-01-05 09:00", "day"),
        ("2026-01-05 12:30", "day"),
        ("2026-01-05 16:00", "night"),
        ("2025-12-25 10:00", "night"),
        ("2025-12-27 10:00", "night"),
    ],
)
def test_window_by_the_default_mapping(xhkg, instant, window):
    assert xhkg.window(at(instant)) == window


def test_the_mapping_and_the_pre_open_are_configurable(xhkg_table):
    calendar = SessionCalendar(
        xhkg_table,
        pre_open=datetime.timedelta(minutes=15),
        windows={**DEFAULT_WINDOWS, State.LUNCH_BREAK: "night"},
    )
    assert calendar.state(at("2026-01-05 09:14")) == State.CLOSED
    assert calendar.state(at("2026-01-05 09:15")) == State.PRE_OPEN
    assert calendar.window(at("2026-01-05 12:30")) == "night"


@pytest.mark.parametrize(
    ("instant", "next_open", "next_close"),
    [
        ("2026-01-05 09:00", "2026-01-05 09:30", "2026-01-05 16:00"),
        ("2026-01-05 09:30", "2026-01-06 09:30", "2026-01-05 16:00"),  # strictly after
        ("2025-12-24 09:00", "2025-12-24 09:30", "2025-12-24 12:00"),  # the early close
        ("2025-12-24 12:00", "2025-12-29 09:30", "2025-12-29 16:00"),  # over Christmas and a weekend
        ("2026-02-16 13:00", "2026-02-20 09:30", "2026-02-20 16:00"),  # over Lunar New Year
    ],
)
def test_next_open_and_close(xhkg, instant, next_open, next_close):
    assert xhkg.next_open(at(instant)) == at(next_open)
    assert xhkg.next_close(at(instant)) == at(next_close)
    assert xhkg.next_open(at(instant)).utcoffset() == datetime.timedelta(hours=8)


@pytest.mark.parametrize(
    ("instant", "states", "start"),
    [
        ("2026-01-05 10:00", {State.OPEN}, "2026-01-05 10:00"),  # already: now
        ("2026-01-05 10:00", {State.LUNCH_BREAK}, "2026-01-05 12:00"),
        ("2026-01-05 10:00", {State.CLOSED, State.HOLIDAY}, "2026-01-05 16:00"),
        ("2025-12-24 10:00", {State.CLOSED, State.HOLIDAY}, "2025-12-24 12:00"),  # the early close
        ("2025-12-24 10:00", {State.HOLIDAY}, "2025-12-25 00:00"),
        ("2025-12-24 10:00", {State.LUNCH_BREAK}, "2025-12-29 12:00"),  # no break on a half day
        ("2025-12-24 12:00", {State.PRE_OPEN, State.OPEN}, "2025-12-29 09:00"),
        ("2026-01-02 16:30", {State.OPEN}, "2026-01-05 09:30"),  # Friday evening to Monday's open
    ],
)
def test_next_start_of_a_set_of_states(xhkg, instant, states, start):
    assert xhkg.next_start(at(instant), states) == at(start)


def test_next_start_is_none_when_it_does_not_happen_within_the_table(xhkg):
    assert xhkg.next_start(at("2027-01-04 10:00"), {State.HOLIDAY}) is None


def test_instants_outside_the_table_or_without_a_zone_are_refused(xhkg):
    with pytest.raises(CalendarError, match="outside the loaded XHKG calendar"):
        xhkg.state(at("2030-01-02 10:00"))
    with pytest.raises(ValueError, match="no time zone"):
        xhkg.state(datetime.datetime(2026, 1, 5, 10, 0))


def test_a_venue_in_another_zone(xhkg):
    """XTKS trades 09:00-15:30 in Tokyo (+09:00): its days are Tokyo days, the answers in +08:00."""
    tokyo = SessionCalendar(build_table("XTKS", datetime.date(2026, 12, 28), datetime.date(2027, 1, 8)))
    assert tokyo.state(at("2027-01-04 08:00")) == State.OPEN  # 09:00 in Tokyo
    # 30 December in +08:00 (a Tokyo trading day, after its close) but 31 December, 00:30, in Tokyo:
    # the venue's own day counts, and the exchange is closed for the New Year.
    assert tokyo.state(at("2026-12-30 23:30")) == State.HOLIDAY
    assert tokyo.next_open(at("2026-12-30 16:00")) == at("2027-01-04 08:00")


def test_a_session_that_opens_the_evening_before_its_day():
    """CME's sessions run 17:00-17:00 Chicago time, each opening the evening before its day (across
    midnight in +08:00 too): the pre-open of the next session begins while the previous one still
    trades, and the venue is open then, not in its pre-open. Thanksgiving closes at 12:00."""
    cme = SessionCalendar(build_table("CMES", datetime.date(2026, 11, 20), datetime.date(2026, 12, 4)))
    chicago = ZoneInfo("America/Chicago")

    def state(text: str) -> State:
        return cme.state(datetime.datetime.fromisoformat(text).replace(tzinfo=chicago))

    assert state("2026-11-24 16:40") == State.OPEN  # 30 minutes before the next session's open
    assert state("2026-11-24 17:00") == State.OPEN  # the next session
    assert state("2026-11-25 23:59:59") == State.OPEN  # Thanksgiving's session, opened the evening before
    assert state("2026-11-26 12:00") == State.CLOSED
    assert state("2026-11-26 16:40") == State.PRE_OPEN  # after the early close: a pre-open of its own
    assert cme.next_start(at("2026-11-25 06:00"), [State.PRE_OPEN]) == at("2026-11-27 06:30")


def test_the_child_process_builds_the_same_table(xhkg_table):
    first, last = datetime.date(2025, 12, 20), datetime.date(2026, 1, 10)
    loaded = load_table("XHKG", first, last)
    assert loaded == build_table("XHKG", first, last)
    assert loaded.library == library_version() == "exchange_calendars 4.13.2"
    assert loaded.sessions == tuple(s for s in xhkg_table.sessions if first <= s.day <= last)


def test_an_unknown_venue_is_named_in_the_error():
    with pytest.raises(UnknownVenue, match="unknown venue 'XXXX'"):
        load_table("XXXX", FIRST, LAST)


def test_the_venue_calendar_loads_once_and_again_only_outside_its_range(xhkg_table):
    loads: list[tuple[datetime.date, datetime.date]] = []

    def loader(venue: str, first: datetime.date, last: datetime.date):
        loads.append((first, last))
        return build_table(venue, first, last)

    venue = VenueCalendar("XHKG", zone=HK, loader=loader)
    assert loads == []  # nothing until the first question
    assert venue.window(at("2026-01-05 10:00")) == "day"
    assert venue.at(at("2026-06-01 10:00")).state(at("2026-06-01 10:00")) == State.OPEN
    assert len(loads) == 1
    first, last = loads[0]
    assert first <= datetime.date(2025, 12, 1) and last >= datetime.date(2027, 1, 1)
    venue.at(at("2027-01-20 10:00"))  # the weeks after it are no longer covered
    assert len(loads) == 2
    assert loads[1][0] <= datetime.date(2026, 12, 16)


def test_a_range_from_long_ago_and_the_weeks_around_now_share_one_load():
    """A schedule whose last slot is a year behind (a cron on leap days, on trading days only) has the
    controller ask, each second, for the sessions from that slot to a month after now; a run asks for the
    weeks around now. One load answers both: not a child process of pandas (seconds of CPU) each time
    one asks after the other."""
    loads: list[tuple[datetime.date, datetime.date]] = []

    def loader(venue: str, first: datetime.date, last: datetime.date):
        loads.append((first, last))
        return build_table(venue, first, last)

    venue = VenueCalendar("XHKG", zone=HK, loader=loader)
    last_slot, now = at("2025-12-05 00:00"), at("2026-12-10 10:00")
    for _ in range(3):
        venue.covering(last_slot, now + datetime.timedelta(days=32))  # the schedule's look
        assert venue.window(now) == "day"  # a run's window: auto
    assert len(loads) == 1


def test_a_venue_whose_holidays_end_gives_a_table_up_to_there_and_says_so_beyond(tmp_path):
    """Asked for a year ahead (as every long-running process does), a venue the library knows less far
    gives what it knows, not an error for all of it; an instant past that is refused in words a person
    can act on."""
    table = load_table("XSHG", datetime.date(2026, 11, 1), datetime.date(2027, 12, 1))
    assert (table.last, table.bounded) == (XSHG_KNOWN_UNTIL, True)
    assert SessionTable.from_json(table.to_json()) == table
    calendar = SessionCalendar(table, zone=HK)
    assert calendar.state(at("2026-12-31 10:00")) == State.OPEN
    assert calendar.state(at("2026-12-25 10:00")) == State.OPEN  # no Christmas holiday in Shanghai
    with pytest.raises(CalendarError, match=r"records its holidays only up to 2026-12-31$"):
        calendar.state(at("2027-01-04 10:00"))
    unbounded = build_table("XHKG", datetime.date(2026, 11, 1), datetime.date(2027, 12, 1))
    assert (unbounded.last, unbounded.bounded) == (datetime.date(2027, 12, 1), False)


def test_the_end_of_a_table_is_the_midnight_after_its_last_venue_day(xhkg, xshg):
    assert (xhkg.end, xshg.end) == (at("2027-02-01 00:00"), at("2027-01-01 00:00"))
    assert xshg.covers(xshg.end - datetime.timedelta(microseconds=1)) and not xshg.covers(xshg.end)
    tokyo = SessionCalendar(build_table("XTKS", datetime.date(2026, 12, 28), datetime.date(2027, 1, 8)))
    assert tokyo.end == at("2027-01-08 23:00")  # midnight in Tokyo


def test_past_the_library_s_knowledge_the_venue_calendar_loads_no_more():
    loads: list[tuple[datetime.date, datetime.date]] = []

    def loader(venue: str, first: datetime.date, last: datetime.date):
        loads.append((first, last))
        return build_table(venue, first, last)

    venue = VenueCalendar("XSHG", zone=HK, loader=loader)
    assert venue.window(at("2026-12-03 10:00")) == "day"
    assert venue.window(at("2026-12-30 21:00")) == "night"  # its last weeks
    for instant in ("2027-01-04 10:00", "2027-06-01 10:00"):
        with pytest.raises(CalendarError, match="beyond the XSHG calendar"):
            venue.window(at(instant))
    assert len(loads) == 1
    assert venue.loaded(at("2027-06-01 10:00")) is None  # and no load in the background either
    assert "only up to 2026-12-31" in venue.note(at("2027-06-01 10:00"))
    assert venue.note(at("2026-12-30 10:00")) is None
    started_later = VenueCalendar("XSHG", zone=HK, loader=loader)  # a process started in mid-2027
    for _ in range(3):
        with pytest.raises(CalendarError, match="only up to 2026-12-31"):
            started_later.window(at("2027-06-01 10:00"))
    assert len(loads) == 2


class Loads(list):
    """A loader that records the venues it was asked for, each load held until ``gate`` (if any) is set."""

    def __init__(self, load=build_table, gate: threading.Event | None = None):
        super().__init__()
        self.load, self.gate = load, gate

    def __call__(self, venue: str, first: datetime.date, last: datetime.date) -> SessionTable:
        self.append(venue)
        if self.gate is not None:
            self.gate.wait(30)
        return self.load(venue, first, last)


def test_a_prefetched_table_is_the_one_the_first_question_gets():
    loads = Loads()
    venue = VenueCalendar("XHKG", zone=HK, loader=loads)
    prefetching = venue.prefetch(at("2026-01-05 08:00"))
    assert venue.window(at("2026-01-05 10:00")) == "day"  # waits for the prefetch, or loads first
    prefetching.join()
    assert len(loads) == 1


def test_a_failed_prefetch_is_raised_to_the_next_question_without_loading_again(caplog):
    loads = Loads(load_table)
    venue = VenueCalendar("XXXX", loader=loads)
    venue.prefetch(at("2026-01-05 08:00")).join()
    assert "unknown venue 'XXXX'" in caplog.text
    for _ in range(2):
        with pytest.raises(UnknownVenue, match="unknown venue"):
            venue.window(at("2026-01-05 10:00"))
    assert loads == ["XXXX"]  # an unknown venue stays unknown: one child process, not one per run


def test_loaded_never_waits_and_starts_one_load_in_the_background():
    """The REST API's status asks without waiting: nothing until the table is loaded, then the table; one
    load however often it asks meanwhile."""
    loads = Loads(gate=threading.Event())
    venue = VenueCalendar("XHKG", zone=HK, loader=loads)
    assert [venue.loaded(at("2026-01-05 10:00")) for _ in range(5)] == [None] * 5
    loads.gate.set()
    venue.prefetch(at("2026-01-05 10:00")).join()
    assert venue.loaded(at("2026-01-05 10:00")).state(at("2026-01-05 10:00")) == "open"
    assert len(loads) == 1 and venue.note(at("2026-01-05 08:00")) is None


def test_an_unknown_venue_is_said_and_never_loaded_again_by_loaded():
    loads = Loads(load_table)
    venue = VenueCalendar("XXXX", loader=loads)
    venue.prefetch(at("2026-01-05 08:00")).join()
    assert [venue.loaded(at("2026-01-05 10:00")) for _ in range(3)] == [None] * 3
    assert "unknown venue 'XXXX'" in venue.note(at("2026-01-05 08:00"))
    assert loads == ["XXXX"]


def test_a_kept_table_spares_the_next_process_its_load(tmp_path):
    """A restarted process answers from the cache file, built by the first; not from a table that no
    longer covers the weeks asked about, nor from one the pinned library did not build."""
    cache = tmp_path / "sessions.json"
    first = Loads()
    assert VenueCalendar("XHKG", zone=HK, loader=first, cache=cache).window(at("2026-01-05 10:00")) == "day"
    assert first == ["XHKG"] and SessionTable.from_json(cache.read_text()).venue == "XHKG"
    assert [kept.name for kept in tmp_path.iterdir()] == ["sessions.json"]  # nothing left aside

    again = Loads()
    restarted = VenueCalendar("XHKG", zone=HK, loader=again, cache=cache)
    assert restarted.at(at("2026-01-05 12:30")).state(at("2026-01-05 12:30")) == State.LUNCH_BREAK
    assert restarted.window(at("2026-06-01 10:00")) == "day"  # a later day, still covered
    assert again == []

    restarted.at(at("2027-03-01 10:00"))  # beyond the kept table: loaded, and kept instead
    assert again == ["XHKG"] and SessionTable.from_json(cache.read_text()).last > datetime.date(2027, 4, 1)

    other = Loads()
    VenueCalendar("XNYS", zone=HK, loader=other, cache=cache).window(at("2026-01-05 10:00"))
    assert other == ["XNYS"]  # another venue's table is not this one's


@pytest.mark.parametrize("kept", ["", "{not json", '{"venue": "XHKG"}', "library"])
def test_a_kept_table_that_is_unreadable_or_from_another_library_is_built_again(tmp_path, kept):
    cache = tmp_path / "sessions.json"
    if kept == "library":
        table = build_table("XHKG", FIRST, LAST)
        kept = table.to_json().replace(library_version(), "exchange_calendars 0.0.1")
    cache.write_text(kept)
    loads = Loads()
    assert VenueCalendar("XHKG", zone=HK, loader=loads, cache=cache).window(at("2026-01-05 10:00")) == "day"
    assert loads == ["XHKG"] and library_version() in cache.read_text()


def test_a_cache_it_cannot_write_costs_nothing_but_the_next_load(tmp_path, caplog):
    cache = tmp_path / "missing-folder" / "sessions.json"
    venue = VenueCalendar("XHKG", zone=HK, loader=Loads(), cache=cache)
    assert venue.window(at("2026-01-05 10:00")) == "day"
    assert "not kept" in caplog.text and not cache.exists()


def test_a_table_that_cannot_replace_the_kept_one_leaves_nothing_aside(tmp_path, caplog):
    cache = tmp_path / "sessions.json"
    cache.mkdir()  # a folder where the file should be: the rename fails after the write
    venue = VenueCalendar("XHKG", zone=HK, loader=Loads(), cache=cache)
    assert venue.window(at("2026-01-05 10:00")) == "day"
    assert "not kept" in caplog.text
    assert [kept.name for kept in tmp_path.iterdir()] == ["sessions.json"] and cache.is_dir()


@pytest.mark.parametrize("venue", ["ASEX", "XBEL", "XBSE", "XCYS"])
def test_venues_that_close_for_orthodox_easter_build_and_close_then(venue):
    """Their holidays are set from Orthodox Easter (2027: 2 May), through an offset of exchange_calendars'
    own that the pinned pandas did not apply: the table could not be built at all. Good Friday and Easter
    Monday, from dateutil's Orthodox Easter, are days these venues do not trade; the Thursday before
    they do."""
    table = load_table(venue, datetime.date(2027, 4, 1), datetime.date(2027, 5, 31))
    easter = dateutil.easter.easter(2027, dateutil.easter.EASTER_ORTHODOX)
    days = {s.day for s in table.sessions}
    good_friday, easter_monday = easter - datetime.timedelta(days=2), easter + datetime.timedelta(days=1)
    assert good_friday not in days and easter_monday not in days
    assert good_friday - datetime.timedelta(days=1) in days


def test_a_calendar_that_failed_to_build_is_not_built_again_at_each_question(caplog):
    """A venue the library fails to build fails again: each question that started another child process
    (a schedule's look each second, each run's window, each status read) cost about half a second of CPU
    and 85 MB for the same error. The failure is remembered, said by note(), and tried again only after
    ``retry``."""

    def broken(venue: str, first: datetime.date, last: datetime.date) -> SessionTable:
        raise CalendarError(f"the {venue} calendar could not be built: NotImplementedError")

    loads = Loads(broken)
    venue = VenueCalendar("XHKG", zone=HK, loader=loads)
    venue.prefetch(at("2026-01-05 08:00")).join()
    for _ in range(3):
        with pytest.raises(CalendarError, match="could not be built"):
            venue.window(at("2026-01-05 10:00"))
    assert [venue.loaded(at("2026-01-05 10:00")) for _ in range(3)] == [None] * 3
    assert "could not be built" in venue.note(at("2026-01-05 10:00"))
    assert loads == ["XHKG"]

    again = Loads(broken)
    impatient = VenueCalendar("XHKG", zone=HK, loader=again, retry=datetime.timedelta(0))
    for _ in range(2):
        with pytest.raises(CalendarError):
            impatient.window(at("2026-01-05 10:00"))
    assert again == ["XHKG", "XHKG"]  # once the retry interval has passed, it is built again


def test_the_venues_checked_by_the_settings_are_the_librarys():
    import exchange_calendars

    assert exchange_calendars.get_calendar_names(include_aliases=True) == sorted(VENUES)


@pytest.mark.parametrize(
    ("values", "said"),
    [
        (
            {"venue": "XHGK"},
            "unknown venue 'XHGK': not an exchange_calendars name; did you mean XSHG or XHKG?",
        ),
        ({"venue": "hkex"}, "did you mean HKEX?"),
        ({"timezone": "Asia/Hongkong_"}, "unknown time zone 'Asia/Hongkong_': give an IANA name"),
        ({"timezone": "../../etc/passwd"}, "unknown time zone '../../etc/passwd'"),
    ],
)
def test_a_venue_or_time_zone_that_does_not_exist_is_refused_as_the_process_starts(values, said):
    """Not at the first run that needs the sessions (CalendarUnavailable), or the first time shown."""
    with pytest.raises(ValidationError, match=re.escape(said)):
        CommonSettings(in_cluster=True, **values)
    assert CommonSettings(in_cluster=True, venue="NYSE", timezone="America/New_York").venue == "NYSE"
