"""Live updates (``GET /api/ops/events``): the changes of the Runbooks, derived from the watch cache.

The cache's watch thread hands every new version of a Runbook's record to :meth:`EventLog.record`, next
to the version it replaces. :func:`changes` compares the two: a changed condition, result, health, state
or cancel is a ``runbook`` event (the run as it is now), log lines the old version did not have are a
``log`` event, a removed Runbook a ``deleted`` event. Nothing polls the Kubernetes API, whatever the
number of streams.

The events are numbered within this process and kept in a bounded ring, so that a client that lost its
connection resumes after the last event it saw (``Last-Event-ID``) without losses or repeats. An id is
``<epoch>-<number>``: the epoch is drawn when the process starts, so an id from another process (a restart,
another replica) is recognised, like one older than the ring, and answered with a ``reset`` event instead
of a silent gap: the client then reads the state again.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from api.records import RunbookRecord
from runbooks.contract import new_lines

RUNBOOK = "runbook"  # a transition: the run as it is now
LOG = "log"  # new log lines of a run
DELETED = "deleted"  # the Runbook was removed
RESET = "reset"  # the stream cannot resume where the client asked: read the state again


@dataclass(slots=True)
class Change:
    seq: int
    kind: str
    record: RunbookRecord  # the version after the change (the last one known, for DELETED)
    lines: tuple[dict[str, str], ...] = ()  # LOG: the new lines
    # The event as the streams send it, encoded by the first one that sends it: the others reuse it.
    message: bytes | None = field(default=None, compare=False, repr=False)


def _transition(record: RunbookRecord) -> tuple:
    """What a ``runbook`` event reports, but the logs (they have events of their own): also the spec's
    cancel, the one field of a spec set after its creation."""
    return (
        record.spec.get("cancel"),
        record.conditions,
        record.exit_code,
        record.message,
        record.started_at,
        record.finished_at,
        record.health,
        record.state,
        record.window,
        record.duplicate_of,
    )


def changes(old: RunbookRecord | None, new: RunbookRecord | None) -> list[tuple[str, RunbookRecord, list]]:
    """The events between two versions of one Runbook (None: absent), in the order they are sent: the new
    log lines first, then the transition they led to."""
    if new is None:
        return [] if old is None else [(DELETED, old, [])]
    out: list[tuple[str, RunbookRecord, list]] = []
    lines = new_lines(old.lines if old is not None else [], new.lines)
    if lines:
        out.append((LOG, new, lines))
    if old is None or _transition(old) != _transition(new):
        out.append((RUNBOOK, new, []))
    return out


class EventLog:
    """The ring of recent events and the streams waiting for the next one.

    :meth:`record` is called by the cache's watch thread; streams read and wait on their event loop.
    """

    def __init__(self, size: int = 1000):
        self.epoch = secrets.token_hex(4)
        self.size = size
        self._ring: deque[Change] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._head = 0  # the number of the newest event (0: none yet)
        self._waiters: dict[asyncio.AbstractEventLoop, set[asyncio.Event]] = {}  # the streams', by loop

    @property
    def head(self) -> int:
        return self._head

    def event_id(self, seq: int) -> str:
        return f"{self.epoch}-{seq}"

    def resume_point(self, last_event_id: str) -> int | None:
        """The number after which a client that saw ``last_event_id`` resumes, or None when it cannot
        without a gap: an id of another process, one older than the ring, or not an id of ours at all."""
        epoch, _, number = last_event_id.strip().partition("-")
        if epoch != self.epoch or not (number.isascii() and number.isdigit()):  # int() refuses "²"
            return None
        seq = int(number)
        with self._lock:
            oldest = self._ring[0].seq if self._ring else self._head + 1
            if seq > self._head or seq < oldest - 1:
                return None
        return seq

    def record(self, old: RunbookRecord | None, new: RunbookRecord | None) -> None:
        """Add the events between two versions of a Runbook and wake the streams (any thread)."""
        found = changes(old, new)
        if not found:
            return
        with self._lock:
            for kind, record, lines in found:
                self._head += 1
                self._ring.append(Change(self._head, kind, record, tuple(lines)))
            waiters = [(loop, tuple(events)) for loop, events in self._waiters.items()]
        for loop, events in waiters:  # one callback per loop, not one per stream: hundreds may be open
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(_set_all, events)

    def since(self, seq: int) -> list[Change] | None:
        """The events after ``seq``, oldest first; None if some of them have left the ring."""
        with self._lock:
            if seq >= self._head:
                return []
            if not self._ring or self._ring[0].seq > seq + 1:
                return None
            # The ring's numbers follow each other: the events after seq are its last head - seq, read
            # from its end (a stream wakes at each event: reading the whole ring each time cost more than
            # sending).
            return [self._ring[i] for i in range(seq - self._head, 0)]

    @contextlib.contextmanager
    def waiter(self) -> Iterator[asyncio.Event]:
        """An event set whenever a new event is recorded, for as long as the ``with`` block lasts (a
        stream's life: it clears the event before it reads what is new)."""
        event = asyncio.Event()
        loop = asyncio.get_running_loop()
        with self._lock:
            self._waiters.setdefault(loop, set()).add(event)
        try:
            yield event
        finally:
            with self._lock:
                events = self._waiters.get(loop, set())
                events.discard(event)
                if not events:
                    self._waiters.pop(loop, None)


def _set_all(events: tuple[asyncio.Event, ...]) -> None:
    for event in events:
        event.set()


class TooManyStreams(Exception):
    pass


class StreamLimiter:
    """At most ``limit`` open streams per token (by the token's name)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._open: dict[str, int] = {}

    def open(self, name: str) -> StreamSlot:
        if self._open.get(name, 0) >= self.limit:
            raise TooManyStreams(name)
        self._open[name] = self._open.get(name, 0) + 1
        return StreamSlot(self, name)

    def count(self, name: str) -> int:
        return self._open.get(name, 0)

    def _close(self, name: str) -> None:
        left = self._open.get(name, 0) - 1
        if left > 0:
            self._open[name] = left
        else:
            self._open.pop(name, None)


class StreamSlot:
    """One open stream; closing it twice counts once (the stream's end and the response's both close it)."""

    def __init__(self, limiter: StreamLimiter, name: str):
        self._limiter = limiter
        self._name = name
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._limiter._close(self._name)
