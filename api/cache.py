"""A watch-fed, in-memory cache of the Runbooks in one namespace.

A background thread lists the Runbooks (paginated) and then watches from the list's resourceVersion.
When the API server ends a watch normally (its ``timeoutSeconds``) the thread resumes from the last
resourceVersion seen (bookmarks keep it fresh); on 410 Gone, on any error (the API server restarting,
a dropped connection) it backs off and lists again, replacing the whole cache, so that objects deleted
while it was not watching disappear too. The event loop only reads: requests never list.

A frozen API server (stopped, or a connection that silently drops) ends no watch: the stream just stays
quiet, as it does in a namespace where nothing changes. So a second thread asks the API server for its
version every ``probe_seconds`` (with a client that does not try again, on a timeout of as long): while it
does not answer, the watch counts as down since its last answer (:meth:`RunbookCache.down_for`, which
/readyz compares with its grace). Once it answers again the watch is dropped and the cache lists again: a
watch that outlived a silence cannot show what it missed. A watch's own connection may go silent while the
probe's answers (a connection tracker that dropped it): the server ends each watch after
``watch_timeout_seconds`` (a minute), so one silent for half as long again is given up, and the cache lists
again.

Every change bumps :attr:`RunbookCache.version`, so a reader can tell whether what it computed from the
cache is still current, and wakes the coroutines waiting on that object (``execute`` waits for a run's
end this way, without polling the API server). Each new version of a record also goes, with the one it
replaces, to the :class:`~api.events.EventLog` of the live updates (not the first list's: nothing changed).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client

from api import listing
from api.events import EventLog
from api.records import RunbookRecord, order, record_of
from runbooks import keys
from runbooks.kube import server_away

log = logging.getLogger("api.cache")

PAGE_SIZE = 500
_SYNCED = ""  # the waiters' key for the first sync (no object has an empty name)


class _Gone(Exception):
    """The resourceVersion we watch from is too old (HTTP 410): list again."""


class _Interrupted(Exception):
    """The watch connection was closed on purpose (see :meth:`RunbookCache.interrupt`)."""


class RunbookCache:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        *,
        watch_timeout_seconds: int = 60,
        max_backoff_seconds: float = 5.0,
        events: EventLog | None = None,
        probe: client.ApiClient | None = None,
        probe_seconds: float = 5.0,
    ):
        """``probe``: the client to ask the API server whether it answers (see the module's docstring), one
        that does not try a request again by itself; None: no probe."""
        self._objects = client.CustomObjectsApi(api)
        self._version = client.VersionApi(probe) if probe is not None else None
        self.probe_seconds = probe_seconds
        self.namespace = namespace
        self.watch_timeout_seconds = watch_timeout_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.event_log = events if events is not None else EventLog()

        self._lock = threading.Lock()
        self._records: dict[str, RunbookRecord] = {}
        self._ordered: list[RunbookRecord] = []  # the runs list's order (api.listing.key), oldest first
        self._by_request: dict[str, set[str]] = {}
        self._unfinished: Counter[str] = Counter()  # by requestedBy
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self.version = 0
        self._seen = itertools.count(1)
        self.resource_version: str | None = None

        self.synced = threading.Event()
        self._down_since: float | None = time.monotonic()  # None while the watch is open
        self._unanswered_since: float | None = None  # the API server's last answer, while probes fail
        self.lists = 0
        self.watches = 0
        self.events = 0
        self.errors = 0
        self.gone = 0
        self.last_error: str | None = None

        self._stopping = threading.Event()
        self._response: Any = None
        self._interrupting = False
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> RunbookCache:
        self._thread = threading.Thread(target=self._run, name="runbook-cache", daemon=True)
        self._thread.start()
        if self._version is not None:
            threading.Thread(target=self._probe, name="runbook-cache-probe", daemon=True).start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._close_response()
        if self._thread is not None:
            self._thread.join(timeout)

    def interrupt(self) -> None:
        """Drop the current watch connection, as a network failure would: the cache lists again."""
        self._interrupting = True
        self._close_response()

    def _close_response(self) -> None:
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):  # already closed
                response.shutdown()

    # -- the watch's health ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._down_since is None

    def down_for(self) -> float:
        """Seconds since the watch was last open (0 while it is): a resumed watch is down for moments, a
        broken one (the API server unreachable, refusing) for longer. An open watch on an API server that
        does not answer the probe is down since its last answer."""
        now = time.monotonic()
        return max(
            (now - s for s in (self._down_since, self._unanswered_since) if s is not None), default=0.0
        )

    def _probe(self) -> None:
        """Ask the API server for its version every ``probe_seconds`` (the probe thread)."""
        assert self._version is not None
        answered = time.monotonic()
        while not self._stopping.wait(self.probe_seconds):
            try:
                self._version.get_code(_request_timeout=(self.probe_seconds, self.probe_seconds))
                away = False
            except Exception as error:
                away = server_away(error)  # else it answered, with a refusal: it is there
            if away:
                if self._unanswered_since is None:
                    self._unanswered_since = answered
                    log.warning("the Kubernetes API server does not answer: the Runbook watch counts as down")
                continue
            answered = time.monotonic()
            if self._unanswered_since is not None:
                self._unanswered_since = None
                log.info("the Kubernetes API server answers again: listing the Runbooks again")
                self.interrupt()

    def _set_connected(self, connected: bool) -> None:
        if connected:
            self._down_since = None
        elif self._down_since is None:
            self._down_since = time.monotonic()

    # -- reading (any thread) --------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._records)

    def get(self, name: str) -> RunbookRecord | None:
        return self._records.get(name)

    def find(self, request_id: str) -> RunbookRecord | None:
        """The Runbook that carries ``request_id``: the original one if it was re-created."""
        with self._lock:
            return self._find(request_id)

    def follow(self, request_id: str | None) -> tuple[int, RunbookRecord | None]:
        """The number of the newest event and the Runbook of ``request_id`` (if any) as of that event, read
        together: a stream shows this record, then the events after that number."""
        with self._lock:
            return self.event_log.head, self._find(request_id)

    def _find(self, request_id: str | None) -> RunbookRecord | None:
        names = self._by_request.get(request_id) if request_id is not None else None
        if not names:
            return None
        candidates = [self._records[n] for n in names]
        return min(candidates, key=lambda r: (r.duplicate_of is not None, r.created_key))

    def unfinished(self, requested_by: str) -> int:
        """How many Runbooks requested by ``requested_by`` have not finished (pending, queued, running)."""
        return self._unfinished[requested_by]

    def snapshot(self) -> tuple[int, list[RunbookRecord]]:
        with self._lock:
            return self.version, list(self._records.values())

    def ordered(self) -> list[RunbookRecord]:
        """Every cached Runbook in the runs list's order (:func:`api.listing.key`), oldest first: kept in
        order as they change, so that a page of the list costs what it shows, not a sort of them all."""
        with self._lock:
            return list(self._ordered)

    async def wait_synced(self, timeout: float) -> bool:
        """Wait (woken by the first list, without holding a worker thread) until the cache has synced."""
        if self.synced.is_set():
            return True
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        waiter = (loop, event)
        with self._lock:
            self._waiters.setdefault(_SYNCED, set()).add(waiter)
        try:
            if not self.synced.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout)
            return self.synced.is_set()
        finally:
            with self._lock:
                self._waiters.get(_SYNCED, set()).discard(waiter)

    async def wait_for(
        self, name: str, done: Callable[[RunbookRecord], bool], timeout: float
    ) -> RunbookRecord | None:
        """Wait until the cached ``name`` satisfies ``done`` or ``timeout`` passes; return what is cached. A
        record that was cached and is gone (deleted) ends the wait too (None): it never satisfies ``done``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = False
        while True:
            event = asyncio.Event()
            waiter = (loop, event)
            with self._lock:
                self._waiters.setdefault(name, set()).add(waiter)
            try:
                record = self._records.get(name)
                remaining = deadline - loop.time()
                if record is None and seen:
                    return None
                seen = record is not None
                if (record is not None and done(record)) or remaining <= 0:
                    return record
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), remaining)
            finally:
                with self._lock:
                    waiters = self._waiters.get(name)
                    if waiters is not None:
                        waiters.discard(waiter)
                        if not waiters:
                            del self._waiters[name]

    # -- the watch thread ------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.2
        while not self._stopping.is_set():
            began = time.monotonic()
            try:
                if self.resource_version is None:
                    self._list()
                self._watch()
                backoff = 0.2  # the API server ended the watch: resume at once
            except _Gone:
                self.gone += 1
                log.info(
                    "watch of Runbooks: resourceVersion %s is gone; listing again", self.resource_version
                )
                self.resource_version = None
            except Exception as error:
                self._set_connected(False)
                if self._stopping.is_set():
                    break
                self.errors += 1
                self.last_error = f"{type(error).__name__}: {error}"
                if time.monotonic() - began > 30:  # it had worked for a while: retry soon
                    backoff = 0.2
                if not isinstance(error, _Interrupted):
                    log.warning(
                        "watch of Runbooks failed (%s); listing again in %.1fs", self.last_error, backoff
                    )
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, self.max_backoff_seconds)
                self.resource_version = None
        self._set_connected(False)

    def _list(self) -> None:
        records: dict[str, RunbookRecord] = {}
        token = None
        while True:
            page = self._objects.list_namespaced_custom_object(
                keys.GROUP,
                keys.VERSION,
                self.namespace,
                keys.PLURAL,
                limit=PAGE_SIZE,
                _continue=token,
                _request_timeout=(5, 60),
            )
            for obj in page.get("items", []):
                record = record_of(obj)
                records[record.name] = record
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                resource_version = page["metadata"]["resourceVersion"]
                break
        with self._lock:
            changed = {
                name
                for name in self._records.keys() | records.keys()
                if (old := self._records.get(name)) is None
                or (new := records.get(name)) is None
                or old.resource_version != new.resource_version
            }
            for name, record in records.items():  # list order is by name: keep the order already seen
                known = self._records.get(name)
                order(record, known.seen if known is not None else next(self._seen))
            if self.lists:  # listed again (after an error or a 410): what changed meanwhile
                for name in sorted(changed, key=lambda n: (records.get(n) or self._records[n]).created_key):
                    self.event_log.record(self._records.get(name), records.get(name))
            self._records = {}
            self._by_request = {}
            self._unfinished = Counter()
            self._ordered = sorted(records.values(), key=listing.key)
            for record in records.values():
                self._index(record)
            self.version += 1
            self._wake(changed)
        self.resource_version = resource_version
        self.lists += 1
        self.synced.set()
        with self._lock:
            self._wake({_SYNCED})
        log.info(
            "listed %d Runbooks in %s at resourceVersion %s", len(records), self.namespace, resource_version
        )

    def _watch(self) -> None:
        self._interrupting = False
        try:
            response = self._objects.list_namespaced_custom_object(
                keys.GROUP,
                keys.VERSION,
                self.namespace,
                keys.PLURAL,
                watch=True,
                resource_version=self.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout_seconds,
                _preload_content=False,
                _request_timeout=(5, self.watch_timeout_seconds * 1.5),  # silent longer: dead
            )
        except client.ApiException as error:
            if error.status == 410:
                raise _Gone(str(error.reason)) from error
            raise
        self._response = response
        self.watches += 1
        self._set_connected(True)
        try:
            if self._stopping.is_set():
                return
            for line in _lines(response):
                self._apply(json.loads(line))
            if self._interrupting:
                raise _Interrupted("watch connection closed")
        finally:
            self._response = None
            self._set_connected(False)
            response.release_conn()

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone(obj.get("message", ""))
            raise RuntimeError(f"watch error: {obj.get('message', obj)}")
        resource_version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            self.resource_version = resource_version
            return
        record = record_of(obj)
        with self._lock:
            old = self._records.get(record.name)
            if old is not None:
                self._remove(old)
            if kind != "DELETED":
                order(record, old.seen if old is not None else next(self._seen))
                self._add(record)
            self.event_log.record(old, None if kind == "DELETED" else record)
            self.version += 1
            self._wake({record.name})
        self.resource_version = resource_version
        self.events += 1

    def _add(self, record: RunbookRecord) -> None:
        """Index ``record`` and put it in its place in the list's order (called with the lock held)."""
        self._index(record)
        bisect.insort(self._ordered, record, key=listing.key)  # a new run: at the end, the newest

    def _index(self, record: RunbookRecord) -> None:
        """Index ``record`` by name, request id and requester (called with the lock held)."""
        self._records[record.name] = record
        self._by_request.setdefault(record.request_id, set()).add(record.name)
        if not record.finished:
            self._unfinished[record.requested_by] += 1

    def _remove(self, record: RunbookRecord) -> None:
        """Forget ``record`` (called with the lock held)."""
        del self._records[record.name]
        del self._ordered[bisect.bisect_left(self._ordered, record.list_key, key=listing.key)]
        names = self._by_request.get(record.request_id, set())
        names.discard(record.name)
        if not names:
            self._by_request.pop(record.request_id, None)
        if not record.finished:
            self._unfinished[record.requested_by] -= 1
            if not self._unfinished[record.requested_by]:
                del self._unfinished[record.requested_by]

    def _wake(self, names: set[str]) -> None:
        """Wake the waiters of ``names`` (called with the lock held)."""
        for name in names & self._waiters.keys():
            for loop, event in self._waiters[name]:
                with contextlib.suppress(RuntimeError):  # that loop is closed
                    loop.call_soon_threadsafe(event.set)


def _lines(response: Any) -> Iterator[str]:
    """The newline-delimited JSON events of a watch response."""
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=False):
        buffer += chunk
        while (end := buffer.find(b"\n")) != -1:
            line, buffer = buffer[:end], buffer[end + 1 :]
            if line.strip():
                yield line.decode("utf-8", errors="replace")
