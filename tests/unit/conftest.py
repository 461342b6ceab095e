"""Fixtures of the pure tests: the XHKG calendar over a fixed range, built once by the real library."""

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
