"""The runs list (``GET /api/ops/runbooks``): filters, order and the cursor of its pages. Pure functions of
the cache's records.

Newest first by creation: ``creationTimestamp`` (seconds), then the API's own request time (microseconds),
then the name. A cursor is the place of a page's last run in that order (``<created>-<requested>-<name>``,
times in microseconds since 1970): any place is a valid cursor, so a client may also start a list from a
time it chose. Unlike the cache's own order (:func:`api.records.order`, which also uses the order in which
one cache saw the objects), this order is the same in every replica and after a restart, so a cursor
stays valid across them. Runs created after a page was read come
before its cursor and are not in the next pages: a list is read again from its first page.
"""

from __future__ import annotations

import bisect
import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from api.records import RunbookRecord
from runbooks.contract import Command, RunState

# A run's place in the list (RunbookRecord.list_key, set once per version of the object): creation and
# request time in microseconds since 1970 (0 before, 17 digits at most), and its name.
Key = tuple[int, int, str]
# Every string of this form is a place in the list, whoever wrote it; what the API writes is of this form.
CURSOR_PATTERN = r"^[0-9]{1,17}-[0-9]{1,17}-[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


@dataclass(frozen=True)
class Filters:
    command: Command | None = None
    status: RunState | None = None
    requested_by: str | None = None  # a part of the name, in any case
    since: datetime.datetime | None = None  # created at or after

    @property
    def everything(self) -> bool:
        """No filter: every run matches."""
        return self == Filters()

    def match(self, record: RunbookRecord) -> bool:
        return (
            (self.command is None or record.command == self.command)
            and (self.status is None or record.status == self.status)
            and (self.requested_by is None or self.requested_by.casefold() in record.requested_by.casefold())
            and (self.since is None or record.created >= self.since)
        )


def key(record: RunbookRecord) -> Key:
    return record.list_key


def encode_cursor(cursor: Key) -> str:
    created, requested, name = cursor
    return f"{created}-{requested}-{name}"


def decode_cursor(text: str) -> Key:
    """The place a cursor of :data:`CURSOR_PATTERN` names."""
    created, requested, name = text.split("-", 2)
    return int(created), int(requested), name


@dataclass(frozen=True)
class Page:
    records: list[RunbookRecord]
    matched: int  # runs that pass the filters, on every page
    next_cursor: Key | None  # None: this is the last page


def page(ordered: Sequence[RunbookRecord], filters: Filters, limit: int, after: Key | None = None) -> Page:
    """The ``limit`` newest runs that pass ``filters`` and come after the cursor ``after`` (older than it),
    of ``ordered``, every run in the order of :func:`key`, oldest first (as the cache keeps them). Without
    filters a page reads only the runs it shows (and a few to find its cursor's place), however many there
    are; filters read every run, to count those that match."""
    matching = ordered if filters.everything else [r for r in ordered if filters.match(r)]
    end = len(matching) if after is None else bisect.bisect_left(matching, after, key=key)
    newest = matching[max(0, end - limit - 1) : end][::-1]
    more = len(newest) > limit
    shown = newest[:limit]
    return Page(shown, len(matching), key(shown[-1]) if more else None)
