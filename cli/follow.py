"""Making a run and following it to its end: its new log lines as they come, then its result.

A run is followed over the API's event stream, ``GET /api/ops/events?request_id=`` (:class:`EventStream`,
read by a thread of its own). The stream starts with the run as it is now (a ``runbook`` event with its last
log lines and their times), then sends each new line once, in order (``log`` events), and each transition
(``runbook`` events): the run has ended with the ``runbook`` event whose status is finished.
:class:`Follower` turns the events into lines shown once each (pure: events in, lines out).

- A dropped connection is opened again with ``Last-Event-ID`` (after 0.5, 1, 2, 4, then 8 s; at most
  ``RECONNECTS`` times in a row whose stream did not open, or opened and brought nothing, not even a
  heartbeat: an API that takes connections but does not answer is given up too): the API sends exactly
  the events after that one.
- When it cannot (another API process, after a restart, or an event older than those it keeps), it sends
  ``reset``, then the run as it is now: its last 50 lines, some of them shown already. mdops checks that the
  run still exists (``GET /api/ops/runbooks/{request_id}``) and :meth:`Follower.window` shows the lines after
  the longest tail of those shown that the new lines start with, comparing time (to the millisecond), level
  and message. Two lines equal in all three cannot be told apart (the longest match wins: a repeat is taken
  as shown); and when more lines came while the stream was away than the API keeps, those between are lost:
  nothing joins the new lines to the last one shown, and mdops says that lines may be missing there.
  (Lines that a script writes faster than the controller's updates keep, more than 50 in about a second,
  never reach the API at all.)
- Where the stream cannot be had (an API without ``/api/ops/events``, 404; too many streams for the token,
  429; a permission or any other error of the stream alone; an answer that is not an event stream), the run
  is polled with ``GET /api/ops/runbooks/{request_id}`` once a second (:func:`_poll`), and ``-v`` says why.
  Polled lines have no time: level and message are compared, and a burst of more lines than the API keeps
  between two polls loses some.

``POST /execute`` itself waits (a bounded time) for the run's end, so :func:`run` opens the stream first (it
never misses the start), sends execute in the background and follows the run meanwhile: the logs show while
the API waits, and ``--no-wait`` returns as soon as the API has the run. A run seen to end before execute has
answered is decided with that answer (:meth:`Execution.check`): the namespace's cap ends a Runbook at once as
one that could not execute (125), and execute answers 429.

When execute's answer is lost (the API could not be reached, did not answer in time, or answered 502, 503,
504: :func:`lost`), the run may have been made: mdops asks the API again, with the same backoff as the
stream, whether it has the run of this request id, and sends execute again with the same request id
(the API's execute is idempotent by request id: the same body is the same run, never a second one; a run
found finished is asked for with execute too, whose answer says whether it ran or was refused) until
the API answers; the polls of the run, and mdops's first look for it, wait for the API in the same way
(:func:`persist`), and so does a 429 that says when to ask again (:func:`again_in`). Only then does mdops
decide; when it gives up, its error names the request id, whose run may exist.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
from httpx_sse import ServerSentEvent
from pydantic import BaseModel

from api.schemas import LogEntry, RunbookResult
from cli.client import OTHER_API, Api, amiss
from cli.errors import CliError, Exit, escaped, interrupted
from runbooks.contract import RunState, new_lines

T = TypeVar("T")
View = dict[str, Any]  # the execute response's shape: {"runbook": {...}, "health": ...}
Say = Callable[[str], None]
FINISHED = (RunState.SUCCESS, RunState.FAILED)
WAITING = (RunState.PENDING, RunState.QUEUED)
POLL_SECONDS = 1.0
KEPT_LINES = 100  # lines remembered as shown: a Runbook's status holds at most 100 (the controller writes 50)
RECONNECTS = 10  # connections in a row that bring nothing (about a minute of backoff) before giving up
MAX_DELAY_SECONDS = 8.0
MAX_RETRY_AFTER_SECONDS = 60.0  # a 429 whose Retry-After is further away is not waited for
SAME_RUN = " (the same request id)"  # said when execute is sent again: it makes no second run

# The API's events (api/events.py), and what the stream's reader and execute's answer add in the inbox.
RUNBOOK, LOG, DELETED, RESET = "runbook", "log", "deleted", "reset"
OPENED, POLL, FAILED, ANSWERED = "mdops:opened", "mdops:poll", "mdops:failed", "mdops:answered"
# What to do with the answer to GET /api/ops/events (:func:`stream_verdict`).
READ, RETRY = "read", "retry"


def finished(view: View | None) -> bool:
    return view is not None and view["runbook"]["status"] in FINISHED


def watch(
    fetch: Callable[[], T], interval: float, wake: futures.Future | None = None, say: Say | None = None
) -> Iterator[T]:
    """``fetch()`` now and every ``interval`` seconds, without end (the caller stops iterating); a pause
    ends early when ``wake`` completes. With ``say``, a later fetch whose answer is lost is said and asked
    for again (:func:`answered`) for as long as it takes, as a watch runs until interrupted; the first is
    not: an API that cannot be reached at the start is an error at once."""
    first = True
    while True:
        yield fetch() if first or say is None else answered(fetch, say)
        first = False
        if wake is not None and not wake.done():
            futures.wait([wake], timeout=interval)
        else:
            time.sleep(interval)


def lost(error: CliError) -> bool:
    """Whether ``error`` is a call's without the API's answer: it could not be reached, did not answer in
    time, or was not ready (502, 503, 504). The call may have been done; asked again, the API may answer."""
    return error.exit_code == Exit.UNAVAILABLE and error.status in (None, 502, 503, 504)


def again_in(error: CliError, failures: int) -> float | None:
    """Seconds before a call that failed with ``error`` (the ``failures``-th in a row) is made again, or
    None: not again. A lost answer is asked for again after 0.5, 1, 2, 4, then 8 s; a 429 that says when
    (Retry-After: the token's rate), then, if that is within ``MAX_RETRY_AFTER_SECONDS``. Any other answer
    stands: a 429 without a time (a cap of unfinished runs, which frees up when one of them ends, maybe
    hours on), 4xx and 500."""
    if lost(error):
        return reconnect_delay(failures)
    if error.status == 429 and error.retry_after is not None and error.retry_after <= MAX_RETRY_AFTER_SECONDS:
        return max(reconnect_delay(failures), error.retry_after)
    return None


def persist(call: Callable[[], T], request_id: str, say: Say, note: str = "") -> T:
    """``call()`` until the API answers it (:func:`answered`), at most ``RECONNECTS`` times; then an error
    that names the run, which may exist. Each time is said, with ``note``."""

    def give_up(error: CliError) -> CliError:
        return CliError(
            f"{error.message}; gave up after {RECONNECTS} attempts: the run {request_id} may exist and go on",
            Exit.UNAVAILABLE,
            f"mdops get {request_id} shows it, mdops logs {request_id} -f follows it "
            "(a new run needs a new --request-id: the same one never runs twice)",
        )

    return answered(call, lambda message: say(f"{request_id}: {message}{note}"), give_up)


def answered(call: Callable[[], T], say: Say, give_up: Callable[[CliError], CliError] | None = None) -> T:
    """``call()`` until the API answers it: a lost answer, or a 429 that says when, is said and asked for
    again as :func:`again_in` says. After ``RECONNECTS`` of them in a row, ``give_up``'s error; without it,
    never. Any other error stands."""
    failures = 0
    while True:
        try:
            return call()
        except CliError as error:
            delay = again_in(error, failures + 1)
            if delay is None:
                raise
            failures += 1
            if give_up is not None and failures > RECONNECTS:
                raise give_up(error) from None
            say(f"{error.message}; asking again in {delay:g} s")
            time.sleep(delay)


def stream_verdict(status: int, content_type: str) -> str:
    """What to do with the answer to ``GET /api/ops/events``: read it (an event stream); retry later (the
    API, or a proxy in front of it, is not ready: 502, 503, 504); or poll the run instead (anything else:
    an API without the endpoint, 404; too many streams for this token, 429; a permission that the stream
    does not share with ``GET /api/ops/runbooks/{id}``, 403; an answer that is not an event stream). Polling
    meets an error of the request itself (401, 422) again, and reports it as any other command does."""
    if status == 200 and content_type.partition(";")[0].strip() == "text/event-stream":
        return READ
    if status in (502, 503, 504):
        return RETRY
    return POLL


def reconnect_delay(failures: int) -> float:
    """Seconds before the ``failures``-th connection in a row that brought no event is tried again."""
    return min(0.5 * 2 ** (failures - 1), MAX_DELAY_SECONDS)


class Follower:
    """What has been shown of one run: each of its log lines handed to ``emit`` once, in order (pure).

    ``warn`` is told where lines may be missing, and why the run waits (its lock, its change window,
    approvals): a run held for approvals is otherwise silent for as long as it waits."""

    def __init__(self, request_id: str, emit: Callable[[dict], None] | None, warn: Say):
        self.request_id = request_id
        self.emit = emit
        self.warn = warn
        self.run: dict[str, Any] | None = None  # the run's ``runbook`` object, as last seen
        self.shown: list[dict] = []  # the last lines shown, with their times when the stream gave them
        self.waits: str | None = None  # why the run waits, as last said

    @property
    def finished(self) -> bool:
        return self.run is not None and self.run["status"] in FINISHED

    def event(self, kind: str, data: dict[str, Any]) -> None:
        """One event of the stream. After a ``reset`` the run as it is now comes next (a ``runbook`` event,
        if it still exists): :meth:`window` joins its lines to those shown."""
        if kind == RUNBOOK:
            self.seen(data["runbook"])
            self.window(data["lines"])
        elif kind == LOG:
            self.show(data["lines"])
        elif kind == DELETED and self.run is not None and data["name"] == self.run["name"]:
            raise CliError(f"the run {self.request_id} was deleted", Exit.NOT_FOUND)

    def poll(self, view: View) -> None:
        """One answer of ``GET /api/ops/runbooks/{request_id}`` (its lines have no time)."""
        self.seen(view["runbook"])
        self.window(view["runbook"]["logs"])

    def seen(self, run: dict[str, Any]) -> None:
        """The run as it is now; while it waits, why (once for each reason)."""
        self.run = run
        waits = run.get("message") if run["status"] in WAITING else None
        if waits and waits != self.waits:
            self.warn(f"{self.request_id} is {run['status']}: {escaped(waits)}")
        self.waits = waits

    def window(self, lines: list[dict]) -> None:
        """The run's last lines (a ``runbook`` event's or a poll's): show those after the lines shown. Lines
        are compared whole when all have a time, else by level and message."""
        timed = all("time" in line for line in (*self.shown, *lines))
        fields = ("time", "level", "message") if timed else ("level", "message")

        def key(line: dict) -> dict:
            return {name: line.get(name) for name in fields}

        new = new_lines([key(line) for line in self.shown], [key(line) for line in lines])
        if self.shown and new and len(new) == len(lines):
            self.warn(f"log lines of {self.request_id} may be missing here: more came than the API keeps")
        self.show(lines[len(lines) - len(new) :])

    def show(self, lines: list[dict]) -> None:
        if self.emit is not None:
            for line in lines:
                self.emit(line)
        self.shown = [*self.shown, *lines][-KEPT_LINES:]


class EventStream:
    """One run's events from ``GET /api/ops/events?request_id=``, read by a thread of its own into ``inbox``
    (where execute's answer also arrives, see :class:`Execution`): first ``(OPENED, None)``, or ``(POLL,
    why)`` when the stream cannot be had; then ``(event name, data)`` for each event, reconnecting with
    ``Last-Event-ID`` as needed; ``(POLL, why)`` when a reconnect finds the stream gone, ``(FAILED, error)``
    when following cannot go on."""

    def __init__(self, api: Api, request_id: str, say: Say):
        self.api = api
        self.request_id = request_id
        self.say = say
        self.inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.last_id: str | None = None
        self._stopped = threading.Event()
        self._response: httpx.Response | None = None

    def __enter__(self) -> EventStream:
        threading.Thread(target=self._read, name="events", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        if self._response is not None:
            self._response.close()  # ends a read waiting for the next event

    def opened(self) -> bool:
        """Wait until the stream is open (True) or cannot be had (False: poll)."""
        kind, _ = self.next()
        return kind == OPENED

    def next(self) -> tuple[str, Any]:
        """The next item of the inbox; the stream's end as polling is said (``-v``), a failure raised."""
        kind, data = self.inbox.get()
        if kind == FAILED:
            raise data
        if kind == POLL:
            self.say(f"no event stream ({data}): following {self.request_id} by polling once a second")
        return kind, data

    def _read(self) -> None:
        try:
            self._connections()
        except BaseException as error:  # handed to the thread that follows the run
            self.inbox.put((FAILED, error))

    def _connections(self) -> None:
        opened = False
        failures = 0  # connections in a row whose stream did not open, or brought nothing
        while not self._stopped.is_set():
            reading = False  # this connection's stream was open
            try:
                with self.api.events(self.request_id, self.last_id) as source:
                    self._response = response = source.response
                    verdict = stream_verdict(response.status_code, response.headers.get("content-type", ""))
                    if verdict == POLL or (verdict == RETRY and not opened):
                        self.inbox.put((POLL, self._refused(response)))
                        return
                    if verdict == RETRY:
                        lost = self._refused(response)
                    else:
                        if not opened:
                            opened = True
                            self.inbox.put((OPENED, None))
                        reading = True
                        for event in source.iter_sse():
                            if not event.data:  # a heartbeat (a comment): no event, as the SSE spec says
                                continue
                            self.last_id = event.id or self.last_id
                            self.inbox.put((event.event, _data(event)))
                        lost = "the API ended the stream"
            except httpx.TransportError as error:
                if not opened:
                    self.inbox.put((POLL, self.api.unreachable(error).message))
                    return
                lost = f"the stream broke ({error})" if reading else self.api.unreachable(error).message
            if self._stopped.is_set():  # closed by the thread that followed the run, at its end
                return
            if reading and self._response.num_bytes_downloaded:  # it brought events or heartbeats
                failures = 0
            failures += 1
            if failures > RECONNECTS:
                raise CliError(
                    f"lost the event stream of the run {self.request_id}: {lost}",
                    Exit.UNAVAILABLE,
                    f"mdops logs {self.request_id} -f follows it again",
                )
            delay = reconnect_delay(failures)
            self.say(f"event stream of {self.request_id}: {lost}; reconnecting in {delay:g} s")
            self._stopped.wait(delay)

    def _refused(self, response: httpx.Response) -> str:
        if response.is_success:
            return f"the answer is not an event stream ({response.headers.get('content-type', 'no type')})"
        return self.api.refusal(response).message


class TimedLine(LogEntry):
    time: str | None = None


class EventRun(RunbookResult):
    name: str


class RunbookEvent(BaseModel):  # what mdops reads of it: the run, and its last lines
    runbook: EventRun
    lines: list[TimedLine]


class DeletedEvent(BaseModel):
    request_id: str
    name: str


class LogEvent(DeletedEvent):
    lines: list[TimedLine]


class ResetEvent(BaseModel):
    reason: str


# The data of the events mdops reads, as the API sends them (README: the REST API's live updates).
EVENT_SHAPES: dict[str, type[BaseModel]] = {
    RUNBOOK: RunbookEvent,
    LOG: LogEvent,
    DELETED: DeletedEvent,
    RESET: ResetEvent,
}


def _data(event: ServerSentEvent) -> dict[str, Any]:
    """An event's data, checked against its shape: another server's (or a broken one's) is an error that
    says so, never a failure of mdops as it reads the data."""
    try:
        data = json.loads(event.data)
    except (ValueError, RecursionError):
        raise CliError(f"a {event.event!r} event of the API's stream is not JSON", Exit.API_FAILED) from None
    shape = EVENT_SHAPES.get(event.event)
    if shape is not None and (wrong := amiss(data, shape)) is not None:
        raise CliError(
            escaped(f"a {event.event!r} event of the API's stream is not the Ops Console API's: {wrong}"),
            Exit.API_FAILED,
            OTHER_API,
        )
    return data


def in_background(call: Callable[[], T]) -> futures.Future[T]:
    """``call()`` in a daemon thread: mdops may exit before it returns (``--no-wait``, Ctrl-C), and the
    API goes on with the run."""
    future: futures.Future[T] = futures.Future()

    def target() -> None:
        try:
            future.set_result(call())
        except BaseException as error:  # handed to whoever reads the result
            future.set_exception(error)

    threading.Thread(target=target, name="execute", daemon=True).start()
    return future


class Execution:
    """``POST /execute``, sent in the background, and what its answer says. A run of this request id that
    existed before is ours only once the API has answered (the same parameters: the same run; others: a
    409).

    When the answer is lost (:func:`lost`) it is asked for again until the API answers (:func:`persist`):
    first whether the API has the run (a new request id's run, there now and unfinished, is ours: made
    before the answer was lost), else execute again with the same body (the same request id: the run made
    before, if it was, or now). A run found finished is asked for with execute again too, which answers at
    once: its result; or the refusal that ended it, a 429 for the namespace's cap, whose Runbook (failed, as
    one that could not execute) the API replaces with a new one when there is room."""

    def __init__(
        self,
        api: Api,
        body: dict[str, Any],
        existed: bool,
        say: Say,
        warn: Say,
        answered: Callable[[], None] = lambda: None,
    ):
        self.api = api
        self.body = body
        self.request_id = body["request_id"]
        self.existed = existed
        self.say = say
        self.warn = warn  # says each time execute is sent again
        self.final: View | None = None  # the finished run, when execute answered 200
        self.looked = False  # whether a run answered pending was looked at for a controller (untaken)
        self.answer = in_background(self._execute)
        self.answer.add_done_callback(lambda _: answered())

    def _execute(self) -> tuple[int | None, dict[str, Any] | None]:
        """Execute's status and body; ``(None, None)`` when its answer was lost but the API has the run."""
        sent = False

        def ask() -> tuple[int | None, dict[str, Any] | None]:
            nonlocal sent
            if sent and not self.existed:
                found = self.api.find(self.request_id)
                if found is not None and not finished(found):
                    return None, None
            sent = True
            return self.api.execute(self.body)

        return persist(ask, self.request_id, self.warn, SAME_RUN)

    def check(self, seen: bool) -> None:
        """Wait for execute's answer; raise when it made no run (401, 403, 409, 422, 429, ...), or when its
        answer was lost and asking again gave up (seen or not, the API has not answered for as long as mdops
        waits for it). When the call failed after the run was made (a 500 for exit code 125) the run is
        followed on: ``seen``, or the API has it. A 429 made none: the token's rate or its cap; or the
        namespace's cap, whose Runbook the controller ends at once as failed with exit code 125, as a run
        that could not execute would, and that the API replaces when the request id is asked for again.
        So a run seen finished before execute answered is decided by this answer, never by its own look."""
        try:
            status, body = self.answer.result()
        except CliError as error:
            if error.exit_code == Exit.API_FAILED and (seen or self.find() is not None):
                return
            raise
        if status == 200:
            self.final = body
        elif status == 202 and body["runbook"]["status"] == RunState.PENDING and not self.looked:
            self.looked = True
            self.untaken()

    def untaken(self) -> None:
        """Say so when execute answered 202 pending and the run has no condition at all: no controller took
        it up while the API waited for it (the controller is down, or crash-looping). A read that fails
        says nothing: following goes on as before."""
        try:
            view = self.api.find(self.request_id)
        except CliError:
            return
        if view is not None and view["runbook"]["status"] == RunState.PENDING and not view.get("conditions"):
            self.warn(
                f"{self.request_id} is pending: no controller has taken it up while the API waited for it "
                "(is the controller running?); waiting on"
            )

    def find(self) -> View | None:
        """The run, as ``GET /api/ops/runbooks/{request_id}`` gives it once the API answers (None: none)."""
        return persist(lambda: self.api.find(self.request_id), self.request_id, self.say)


def _over_stream(stream: EventStream, follower: Follower, execution: Execution | None = None) -> bool:
    """Follow the run over the stream until it has finished (True) or the stream is gone (False: poll).
    With ``execution``, a run is finished only once execute has answered too (:meth:`Execution.check`)."""
    held: list[tuple[str, Any]] = []  # an earlier run's events, until execute's answer says it is ours
    waiting = execution is not None and execution.existed
    answered = execution is None
    while not follower.finished:
        kind, data = stream.next()
        if kind == POLL:
            return False
        if kind == ANSWERED:
            execution.check(seen=follower.run is not None)
            waiting, answered = False, True
            for event in this_runs(held):
                follower.event(*event)
            held.clear()
        elif waiting:
            held.append((kind, data))
        else:
            if kind == RESET:
                stream.say(f"event stream of {follower.request_id} reset ({data['reason']}): joining the run")
                if follower.run is not None and stream.api.find(follower.request_id) is None:
                    raise CliError(f"the run {follower.request_id} no longer exists", Exit.NOT_FOUND)
            follower.event(kind, data)
    if not answered:  # it ended before execute answered: the answer decides (a refusal ends so: see check)
        execution.check(seen=True)
    return True


def this_runs(held: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The events held until execute answered, less those of an earlier Runbook of the request id that went
    meanwhile, when a Runbook came after it: the API replaces a refusal of its own that binds nothing (the
    namespace's cap) with this run's Runbook, of the same name."""
    gone = [index for index, (kind, _) in enumerate(held) if kind == DELETED]
    if gone and any(kind == RUNBOOK for kind, _ in held[gone[-1] + 1 :]):
        return held[gone[-1] + 1 :]
    return held


def _poll(
    fetch: Callable[[], View | None],
    follower: Follower | None,
    interval: float,
    execution: Execution | None = None,
) -> View | None:
    """Poll the run until it has finished (its final view) or, without a follower (``--no-wait``), until
    the API has it (None). With ``execution``, a view read before execute answered never decides: not an
    earlier run's (``existed``), nor a finished one (:meth:`Execution.check`); the next read comes as soon
    as the answer does."""

    def read() -> tuple[bool, View | None]:
        answered = execution is not None and execution.answer.done()  # before the read, which is then newer
        return answered, fetch()

    for answered, view in watch(read, interval, execution.answer if execution else None):
        if execution is not None:
            if answered:
                execution.check(seen=view is not None)
                view = execution.final or view
            elif execution.existed or finished(view):
                continue
        if view is None:
            continue
        if follower is None:
            return None
        follower.poll(view)
        if follower.finished:
            return view


def follow(api: Api, request_id: str, emit: Callable[[dict], None] | None, say: Say, warn: Say) -> View:
    """``mdops logs -f`` (every log line of a run, to ``emit``) and ``mdops cancel``: follow a run until it
    has finished, and return it as a read of it gives it then. Once following, an API that does not answer
    for a while (restarted, behind a proxy that is) is waited for, as the stream's reconnects wait for it;
    an API that cannot be reached at the start is an error at once."""
    view = api.runbook(request_id)  # an unknown request id is an error now: the stream would wait for it
    follower = Follower(request_id, emit, warn)
    if finished(view):
        follower.poll(view)
        return view

    def read() -> View:
        return persist(lambda: api.runbook(request_id), request_id, say)

    with requested(request_id):
        with EventStream(api, request_id, say) as stream:
            if stream.opened() and _over_stream(stream, follower):
                return read()
        final = _poll(read, follower, POLL_SECONDS)
        assert final is not None  # with a follower, _poll returns the finished run only
        return final


def run(
    api: Api, body: dict[str, Any], wait: bool, emit: Callable[[dict], None] | None, say: Say, warn: Say
) -> View | None:
    """``mdops run``: make the run of ``body`` (which names its request id) and, with ``wait``, follow it
    to its end (its final view, in execute's shape); without, return as soon as the API has it."""
    request_id = body["request_id"]
    try:
        # The first call: the API may be restarting as mdops starts, and is waited for as execute is.
        existed = persist(lambda: api.find(request_id), request_id, warn, SAME_RUN) is not None
    except CliError as error:
        if error.status != 403:
            raise
        # Reading one run needs status:read or a permission to execute: this token has neither, and the
        # API names the first. What mdops run needs is the second.
        raise CliError(
            f"not allowed (403): the token may not run {body['command']}: that needs the permission "
            f"'runbooks:execute:{body['command']}' (or 'runbooks:execute')",
            Exit.NOT_ALLOWED,
            error.hint,
            403,
        ) from None
    if not wait:
        with requested(request_id):
            execution = Execution(api, body, existed, say, warn)
            _poll(execution.find, None, POLL_SECONDS / 5, execution)
        return None
    follower = Follower(request_id, emit, warn)
    with EventStream(api, request_id, say) as stream:
        streaming = stream.opened()  # before execute: the stream never misses the start
        with requested(request_id):
            execution = Execution(api, body, existed, say, warn, lambda: stream.inbox.put((ANSWERED, None)))
            if streaming and _over_stream(stream, follower, execution):
                view = execution.final or persist(lambda: api.runbook(request_id), request_id, say)
                if finished(view):
                    return view
                # The API reads it unfinished: the end seen was a refusal that execute, asked again after
                # a lost answer, replaced with this run (or the read came from a replica behind).
            return _poll(execution.find, follower, POLL_SECONDS, execution)


@contextmanager
def requested(request_id: str) -> Iterator[None]:
    """A Ctrl-C leaves the run going (once execute is sent, or while following a run known unfinished) and
    says so, and how to follow it again. Before execute, no run was asked for: mdops is only interrupted."""
    try:
        yield
    except KeyboardInterrupt:
        raise interrupted(
            f"interrupted; the run {request_id} goes on", f"mdops logs {request_id} -f"
        ) from None
