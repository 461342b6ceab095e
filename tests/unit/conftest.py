"""Fixtures of the pure tests: the XHKG calendar over a fixed range, and XSHG's up to the end of what the
library knows of it, built once by the real library."""

from __future__ import annotations

import datetime

import pytest

from runbooks.calendar import SessionCalendar, SessionTable, build_table

HK = datetime.timezone(datetime.timedelta(hours=8))
# Early closes on 2025-12-24, 2025-12-31 and 2026-02-16; holidays on 2025-12-25/26, 2026-01-01 and
# 2026-02-17..19 (Lunar New Year); the year-end freeze of examples/policies in 2026-12.
FIRST, LAST = datetime.date(2025, 12, 1), datetime.date(2027, 1, 31)


def at(text: str) -> datetime.datetime:
    """An instant in +08:00, e.g. ``at("2025-12-24 11:59")``."""
    return datetime.datetime.fromisoformat(text).replace(tzinfo=HK)


@pytest.fixture(scope="session")
def xhkg_table() -> SessionTable:
    return build_table("XHKG", FIRST, LAST)


@pytest.fixture(scope="session")
def xhkg(xhkg_table) -> SessionCalendar:
    return SessionCalendar(xhkg_table)


# exchange_calendars 4.13.2 records XSHG's holidays up to the end of 2026 (its class's bound_max): asked for
# 2027 too, as every long-running process asks for a year ahead, it gives a table that ends there, bounded.
XSHG_KNOWN_UNTIL = datetime.date(2026, 12, 31)


@pytest.fixture(scope="session")
def xshg_table() -> SessionTable:
    table = build_table("XSHG", datetime.date(2026, 11, 1), datetime.date(2027, 12, 1))
    assert (table.last, table.bounded) == (XSHG_KNOWN_UNTIL, True)
    return table


@pytest.fixture(scope="session")
def xshg(xshg_table) -> SessionCalendar:
    return SessionCalendar(xshg_table)
