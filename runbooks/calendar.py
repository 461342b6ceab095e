"""The trading session calendar: which window (``day`` or ``night``) a moment belongs to."""

from __future__ import annotations

import datetime
from dataclasses import dataclass


def _parse_range(text: str) -> tuple[datetime.time, datetime.time]:
    try:
        start, end = (datetime.time.fromisoformat(part.strip()) for part in text.split("-"))
    except ValueError as error:
        raise ValueError(f"session {text!r} is not HH:MM-HH:MM") from error
    return start, end


def _minutes(t: datetime.time) -> int:
    return t.hour * 60 + t.minute


@dataclass(frozen=True)
class SessionCalendar:
    day: tuple[datetime.time, datetime.time]
    night: tuple[datetime.time, datetime.time]
    zone: datetime.tzinfo

    @classmethod
    def parse(cls, day: str, night: str, zone: datetime.tzinfo) -> SessionCalendar:
        return cls(_parse_range(day), _parse_range(night), zone)

    def window(self, at: datetime.datetime) -> str:
        """The window in session at ``at``; between sessions, the next one to open."""
        now = _minutes(at.astimezone(self.zone).time())
        sessions = {"day": self.day, "night": self.night}
        for name, (start, end) in sessions.items():
            s, e = _minutes(start), _minutes(end)
            inside = s <= now < e if s < e else now >= s or now < e
            if inside:
                return name
        # Between sessions: the one that opens soonest.
        return min(sessions, key=lambda name: (_minutes(sessions[name][0]) - now) % 1440)
