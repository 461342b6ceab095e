"""``GET /api/ops/events``: the live updates of the Runbooks, as Server-Sent Events (see :mod:`api.events`).

A stream sends, in order: with ``?request_id=``, the run as it is now (a ``runbook`` event, if it exists
yet); then every event after that point, as the watch cache sees them, and a comment line as a heartbeat
when nothing happened for ``MDOPS_API_EVENTS_HEARTBEAT_SECONDS``. A client that reconnects sends the last
id it saw as ``Last-Event-ID`` and gets exactly the events after it; when that is no longer possible it
gets a ``reset`` event first (then, with ``?request_id=``, the run as it is now again).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask

from api import events
from api.auth import TokenStore, reads
from api.deps import CacheDep, RunbookReader, SettingsDep
from api.errors import ApiError
from api.openapi import PROTECTED, responses
from api.render import event_data, run_detail
from runbooks.models import RequestId

router = APIRouter(prefix="/api/ops", tags=["events"])
SHUTDOWN_GRACE_SECONDS = 1.0
# How long, at most, an idle stream goes without looking whether its token is still in effect.
TOKEN_RECHECK_SECONDS = 5.0
# The events a stream has to send are sent together, up to this much at a time: each send costs as much
# as encoding an event, and the most uvicorn holds for a client that does not read is about this much.
CHUNK_BYTES = 64 * 1024

STREAM_DESCRIPTION = """Server-Sent Events (`text/event-stream`), one per change of a Runbook, from the API's
watch cache. Each event has an `id` (`<epoch>-<number>`: resume after it with the `Last-Event-ID` header),
an `event` name and JSON `data`:

- `runbook`: a run's transition (created, queued, started, finished, ...): `{"runbook": {...}, "health":
  {...}|null, "state": {...}|null, "conditions": [...]}`: `runbook` and `health` as in execute's answer
  (`runbook` with the fields of status' `runbook_history`), `state` the environment state the run reported,
  `conditions` the Runbook's status conditions, `lines` its last log lines with their times.
- `log`: new log lines of a run: `{"request_id", "name", "lines": [{"time", "level", "message"}]}`.
- `deleted`: the Runbook was removed: `{"request_id", "name"}`.
- `reset`: the stream cannot resume after the `Last-Event-ID` sent (another API process, or older than the
  events kept): read the state again (`GET /api/ops/status`, `GET /api/ops/runbooks/{request_id}`).

With `request_id`, only that run's events, and the stream starts with its current `runbook` event (if it
exists yet). A comment line (`: ping ...`) is sent when nothing happened for a while (the heartbeat).
Permissions: those of `GET /api/ops/runbooks/{request_id}` (status:read, or any execute permission).
A token may hold a bounded number of streams open at once: past it, 429. A stream ends once its token is
taken out of the tokens file, or its permissions change (within seconds): asked again, it is 401, or opened
with the permissions in effect."""


# One event of the stream, as Server-Sent Events parse it (per event: OpenAPI 3.1 has no itemSchema yet).
EVENT_SCHEMA = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "description": "<epoch>-<number>: resume after it with Last-Event-ID."},
        "event": {"type": "string", "enum": [events.RUNBOOK, events.LOG, events.DELETED, events.RESET]},
        "data": {"type": "string", "contentMediaType": "application/json", "description": "JSON."},
    },
}


class TooManyStreams(ApiError):
    status_code = 429


def _event(log: events.EventLog, seq: int, kind: str, data: dict) -> ServerSentEvent:
    return ServerSentEvent(
        data=json.dumps(data, ensure_ascii=False, separators=(",", ":")), event=kind, id=log.event_id(seq)
    )


def message(log: events.EventLog, change: events.Change, zone: datetime.tzinfo) -> bytes:
    """``change`` as every stream sends it, encoded once: each stream encoding it for itself took the
    event loop's whole time with a few hundred streams open."""
    if change.message is None:
        change.message = _event(log, change.seq, change.kind, event_data(change, zone)).encode()
    return change.message


@router.get(
    "/events",
    summary="Live updates of the Runbooks (Server-Sent Events): transitions and new log lines",
    description=STREAM_DESCRIPTION,
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": EVENT_SCHEMA}}, "description": "The stream"},
        **responses(*PROTECTED, 422, 429, 503, c429="Too many open event streams for this token."),
    },
)
async def stream_events(
    request: Request,
    settings: SettingsDep,
    cache: CacheDep,
    principal: RunbookReader,
    request_id: Annotated[RequestId | None, Query(description="Only this run's events.")] = None,
    last_event_id: Annotated[
        str | None, Header(max_length=64, description="Resume after this event id.")
    ] = None,
) -> EventSourceResponse:
    limiter: events.StreamLimiter = request.app.state.streams
    tokens: TokenStore = request.app.state.tokens
    try:
        slot = limiter.open(principal.name)
    except events.TooManyStreams:
        raise TooManyStreams(
            f"token {principal.name!r} has {limiter.limit} event streams open already; close one first"
        ) from None
    log = cache.event_log
    zone = settings.zone
    shutdown = anyio.Event()

    def start_now(reset: str | None) -> tuple[int, list[ServerSentEvent]]:
        """Where a stream starts when it cannot resume: the newest event, the ``reset`` that says so (if
        the client asked to resume), and the run asked for as it is at that event (if any)."""
        head, record = cache.follow(request_id)
        opening = [] if reset is None else [_event(log, head, events.RESET, {"reason": reset})]
        if record is not None and reads(principal, record):
            opening.append(_event(log, head, events.RUNBOOK, run_detail(record, zone)))
        return head, opening

    async def stream() -> AsyncIterator[ServerSentEvent | bytes]:
        # Woken at each new event, and when the API stops: one event and one task for the stream's life,
        # not one of each per wait (with hundreds of streams open, a burst of runs made them by millions).
        with log.waiter() as woken:
            stopping = asyncio.ensure_future(_set_when(shutdown, woken))
            try:
                after = log.resume_point(last_event_id) if last_event_id else None
                if after is None:
                    reset = "cannot resume after that event id" if last_event_id else None
                    after, opening = start_now(reset)
                    for event in opening:
                        yield event
                while not shutdown.is_set():
                    if not tokens.holds(principal):  # revoked, or its permissions changed: it ends
                        return
                    woken.clear()  # before reading: an event recorded from now on wakes the wait below
                    batch = log.since(after)
                    if batch == []:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(TOKEN_RECHECK_SECONDS):  # a timer, not a task
                                await woken.wait()
                        continue
                    if batch is None:  # this stream fell behind the ring: say so, and start again from now
                        after, opening = start_now("events were missed")
                        for event in opening:
                            yield event
                        continue
                    chunk: list[bytes] = []
                    size = 0
                    for change in batch:
                        after = change.seq
                        if (request_id is None or change.record.request_id == request_id) and reads(
                            principal, change.record
                        ):
                            chunk.append(message(log, change, zone))
                            size += len(chunk[-1])
                            if size >= CHUNK_BYTES:
                                yield b"".join(chunk)
                                chunk, size = [], 0
                    if chunk:
                        yield b"".join(chunk)
            finally:
                stopping.cancel()
                slot.close()

    return EventSourceResponse(
        stream(),
        ping=settings.api_events_heartbeat_seconds,
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
        background=BackgroundTask(slot.close),
    )


async def _set_when(shutdown: anyio.Event, woken: asyncio.Event) -> None:
    """Set ``woken`` once ``shutdown`` is set: the API stops."""
    await shutdown.wait()
    woken.set()
