"""The REST API over httpx: one method per endpoint, each returning the decoded JSON body.

An answer other than a success becomes a :class:`CliError` with the API's own message
(:func:`cli.errors.answer_error`), as does a success whose body is not of the contract's shape (the API's
own response models, :mod:`api.schemas`: another server's JSON); an API that cannot be reached or does
not answer within the timeouts is ``Exit.UNAVAILABLE``. The token goes in the ``Authorization`` header
only (the event stream's too), never in a URL or a message.
"""

from __future__ import annotations

import datetime
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import EventSource, connect_sse
from pydantic import BaseModel, ValidationError

from api.schemas import (
    CancelRefused,
    DecisionResponse,
    ExecuteResponse,
    RunbooksPage,
    RunView,
    SchedulesResponse,
    StatusResponse,
    SummaryResponse,
    TimeseriesResponse,
    WhoamiResponse,
)
from cli import render
from cli.config import Connection
from cli.errors import CliError, Exit, answer_error, detail_of, escaped
from runbooks.contract import APPROVE, STATUS_READ

CONNECT_TIMEOUT = 5.0
# mdops reuses a connection idle for less than this, which is less than the API keeps an idle one open
# (MDOPS_API_KEEP_ALIVE_SECONDS, at least 5): a request sent on a connection as the server closes it would be
# lost ("Server disconnected without sending a response").
KEEP_ALIVE_SECONDS = 4.0
# An event stream that sends nothing for this long (or --request-timeout, if longer), not even the API's
# heartbeat (every 15 s by default), is taken as lost.
SILENT_STREAM_SECONDS = 45.0
RUNS_PAGE = 200  # the most the runs list gives in one answer
ENCODING_HEADERS = ("content-encoding", "content-length")  # of the answer as sent, not as decoded
# The most of an answer mdops reads, decoded (its largest, a page of 200 runs with their last lines, is a few
# MiB): another server's endless or decompressing answer would otherwise fill mdops's memory.
MAX_ANSWER_BYTES = 64 * 2**20


class Api:
    def __init__(self, connection: Connection, timeout: float):
        self.connection = connection
        self.timeout = timeout
        self.http = httpx.Client(
            base_url=connection.url,
            headers={
                "Authorization": f"Bearer {connection.token}",
                "User-Agent": f"mdops/{version('mdops')}",
            },
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
            limits=httpx.Limits(keepalive_expiry=KEEP_ALIVE_SECONDS),
        )  # shared by the threads of `mdops run`: httpx's Client may be

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def status(self) -> dict[str, Any]:
        return self._json(self._call("GET", "/api/ops/status"), StatusResponse)

    def summary(self) -> dict[str, Any]:
        return self._json(self._call("GET", "/api/ops/metrics/summary"), SummaryResponse)

    def timeseries(self, metric: str, minutes: int, step_seconds: int) -> dict[str, Any]:
        params = {"metric": metric, "minutes": minutes, "step_seconds": step_seconds}
        return self._json(self._call("GET", "/api/ops/metrics/timeseries", params=params), TimeseriesResponse)

    def schedules(self, slots: int) -> dict[str, Any]:
        return self._json(self._call("GET", "/api/ops/schedules", params={"slots": slots}), SchedulesResponse)

    def runs(self, filters: dict[str, str], limit: int) -> list[dict[str, Any]]:
        """The ``limit`` newest runs that pass ``filters`` (the list's query parameters), newest first, read
        a page at a time."""
        found: list[dict[str, Any]] = []
        cursors: set[str] = set()
        cursor = None
        while len(found) < limit:
            params = {
                **filters,
                "limit": min(limit - len(found), RUNS_PAGE),
                **({"cursor": cursor} if cursor else {}),
            }
            page = self._json(self._call("GET", "/api/ops/runbooks", params=params), RunbooksPage)
            found += page["runbooks"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
            # The API's next page starts after the last run of this one: a page without runs, or a cursor
            # given before, is another server's (or a broken one's), which would be asked for ever.
            if not page["runbooks"] or cursor in cursors:
                raise CliError(
                    "the API's runs list gives a next page that does not go on (no runs, or a cursor given "
                    "before)",
                    Exit.API_FAILED,
                    "is the URL the mdops API's?",
                )
            cursors.add(cursor)
        return found

    def runbook(self, request_id: str) -> dict[str, Any]:
        try:
            return self._json(self._call("GET", _runbook_path(request_id)), ExecuteResponse)
        except CliError as error:
            if error.exit_code == Exit.NOT_FOUND:
                self._found_by_others(error)
            raise

    def permissions(self) -> set[str] | None:
        """The token's permissions (``GET /api/ops/whoami``), None when the API does not say: for a hint
        that fits what the token may do."""
        try:
            return set(self._json(self._call("GET", "/api/ops/whoami"), WhoamiResponse)["permissions"])
        except CliError:
            return None

    def find(self, request_id: str) -> dict[str, Any] | None:
        """The run of this request id, or None while the API knows none (its 404, with its detail: another
        server's 404 is an error)."""
        response = self._call("GET", _runbook_path(request_id))
        return (
            None
            if response.status_code == 404 and detail_of(_body(response))
            else self._json(response, ExecuteResponse)
        )

    def execute(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """200 and the finished run, or 202 and its state so far (the API waits a bounded time)."""
        response = self._call("POST", "/api/ops/runbooks/execute", json=body)
        return response.status_code, self._json(response, ExecuteResponse)

    def decide(
        self,
        request_id: str,
        decision: str,
        comment: str,
        created_at: datetime.datetime | None = None,
        uid: uuid.UUID | None = None,
    ) -> dict[str, Any]:
        """``approve`` or ``reject`` a run that waits for approvals: the RunbookApproval made (201).
        ``created_at``, ``uid``: the run's as they were shown; the API refuses (409) another run."""
        path = f"{_runbook_path(request_id)}/{decision}"
        seen = {"created_at": created_at and created_at.isoformat(), "uid": uid and str(uid)}
        body = {"comment": comment} | {key: value for key, value in seen.items() if value}
        response = self._call("POST", path, json=body)
        if response.is_success:
            return self._json(response, DecisionResponse)
        refused = self._refused(response)
        # The API's refusal, with a hint of what this token may do next (the API's permissions say).
        if refused.exit_code == Exit.CONFLICT:  # not the run named, too late, decided: look at it again
            refused.hint = self._look_again(request_id)
        elif refused.exit_code == Exit.NOT_FOUND:
            self._found_by_others(refused)
        elif (
            refused.exit_code == Exit.NOT_ALLOWED
            and refused.status == 403
            and APPROVE in (self.permissions() or ())
        ):
            # The token may decide: its own run, which another person approves (four eyes), not a token
            # of someone else's that has the permission.
            refused.hint = f"another person approves it (four eyes); mdops reject {request_id} withdraws it"
        raise refused

    def cancel(
        self, request_id: str, reason: str, uid: uuid.UUID | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Cancel a run: 202 and the run once the cancel is recorded, 200 and the run when it was already
        cancelled. A run that has finished is an error that says how it ended (exit 73). ``uid``: the run's
        as it was shown; the API refuses (409) to cancel another run that its request id names now."""
        body = {"reason": reason} | ({"uid": str(uid)} if uid else {})
        response = self._call("POST", f"{_runbook_path(request_id)}/cancel", json=body)
        if response.is_success:
            return response.status_code, self._json(response, RunView)
        body = _body(response)
        if response.status_code == 409 and isinstance(body, dict) and "runbook" in body:
            self._shaped(body, CancelRefused, response)
            raise CliError(
                escaped(f"{request_id} has finished: {render.ending(body)}; nothing to cancel"),
                Exit.CONFLICT,
                status=409,
            )
        refused = self._refused(response)
        if refused.exit_code == Exit.CONFLICT:  # not the run named, or made again as it was cancelled
            refused.hint = self._look_again(request_id)
        elif refused.exit_code == Exit.NOT_FOUND:
            self._found_by_others(refused)
        raise refused

    def _found_by_others(self, error: CliError) -> None:
        """A 404's hint is the runs list, which only a token with status:read may read: for another (as the
        API says), with such a token."""
        permissions = self.permissions()
        if permissions is not None and STATUS_READ not in permissions:
            error.hint = "`mdops runs`, with a token that has status:read, lists the recent request ids"

    def _look_again(self, request_id: str) -> str | None:
        """How this token sees the run of ``request_id`` as it is now, after a refused decision: ``mdops get``
        when the API lets it read the run (a read of it says), else with a token that may read it (one with
        runbooks:approve alone may not); none otherwise (the run gone meanwhile, another's, no answer)."""
        try:
            code = self._call("GET", _runbook_path(request_id)).status_code
        except CliError:
            return None
        if code == 200:
            return f"mdops get {request_id} shows the run as it is now"
        if code == 403:
            return (
                f"this token may not read the run (it lacks status:read): mdops get {request_id} with a "
                "token that has it shows the run as it is now"
            )
        return None

    @contextmanager
    def events(self, request_id: str, last_event_id: str | None) -> Iterator[EventSource]:
        """``GET /api/ops/events?request_id=``, open and unread whatever its status (the caller reads the
        events, or decides what an error means); ``Last-Event-ID`` resumes after that event. Raises
        ``httpx.TransportError`` when the API cannot be reached (:meth:`unreachable` words it)."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        timeout = httpx.Timeout(
            self.timeout,
            connect=min(self.timeout, CONNECT_TIMEOUT),
            read=max(self.timeout, SILENT_STREAM_SECONDS),
        )
        with connect_sse(
            self.http,
            "GET",
            "/api/ops/events",
            params={"request_id": request_id},
            headers=headers,
            timeout=timeout,
        ) as source:
            yield EventSource(EventText(source.response, self.connection.source))

    def refusal(self, response: httpx.Response) -> CliError:
        """The error of a streamed answer that is not a success, with the API's own message."""
        response.read()
        return self._refused(response)

    def unreachable(self, error: httpx.HTTPError) -> CliError:
        url = self.connection.url
        if isinstance(error, httpx.TimeoutException):
            return CliError(
                f"no answer from the API at {url} within {self.timeout:g} s ({type(error).__name__})",
                Exit.UNAVAILABLE,
                "--request-timeout waits longer",
            )
        return CliError(
            f"cannot reach the API at {url}: {str(error).rstrip('.')}",  # httpx's may end a sentence
            Exit.UNAVAILABLE,
            f"is the API running at this URL? ({self.connection.source})",
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The answer, read whole within the request timeout, and decoded (gzip) as it comes, at most
        ``MAX_ANSWER_BYTES`` of it. httpx's timeouts are for each read: a server (or proxy) that sends its
        answer a byte at a time, each within a read's timeout, would hold mdops for as long as it likes (its
        headers still can)."""
        deadline = time.monotonic() + self.timeout
        try:
            with self.http.stream(method, path, **kwargs) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise too_large(f"the answer to {path}", self.connection.source)
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("the answer came too slowly", request=response.request)
            decoded = [(k, v) for k, v in response.headers.multi_items() if k not in ENCODING_HEADERS]
            return httpx.Response(
                response.status_code, headers=decoded, content=bytes(body), request=response.request
            )
        except httpx.HTTPError as error:
            # Closed by mdops as it stops (Ctrl-C): a call in the background is not made again.
            if self.http.is_closed:
                raise CliError("mdops stopped", Exit.API_FAILED) from error
            raise self.unreachable(error) from error

    def _refused(self, response: httpx.Response) -> CliError:
        return answer_error(response.status_code, _body(response), self.connection.source, response.headers)

    def _json(self, response: httpx.Response, shape: type[BaseModel]) -> Any:
        """The answer's JSON body, checked against the contract's ``shape`` (the views read it as given)."""
        body = _body(response)
        if not response.is_success:
            raise self._refused(response)
        return self._shaped(body, shape, response)

    def _shaped(self, body: Any, shape: type[BaseModel], response: httpx.Response) -> Any:
        """``body``, the JSON of ``response``, checked against the contract's ``shape``."""
        path = response.request.url.path
        if body is NOT_JSON:
            raise CliError(
                f"the API's answer to {path} is not JSON ({response.status_code})",
                Exit.API_FAILED,
                "is the URL the mdops API's?",
            )
        if (wrong := amiss(body, shape)) is not None:
            raise CliError(
                escaped(f"the API's answer to {path} is not the Ops Console API's: {wrong}"),
                Exit.API_FAILED,
                OTHER_API,
            )
        return body


OTHER_API = "is the URL the mdops API's, and of this version of mdops?"


def too_large(what: str, source: str) -> CliError:
    return CliError(
        f"{what} is larger than {MAX_ANSWER_BYTES // 2**20} MiB: not an answer of the mdops API",
        Exit.API_FAILED,
        f"is the URL the mdops API's? ({source})",
    )


class EventText:
    """An event stream's answer, whose text httpx-sse reads, given up (:func:`too_large`) once more than
    ``MAX_ANSWER_BYTES`` of it come without an event's end (a blank line): httpx-sse would keep a line
    without end, or data lines without an event's end, whole. The rest is the answer's own."""

    EVENT_ENDS = ("\n\n", "\r\r", "\r\n\r\n")

    def __init__(self, response: httpx.Response, source: str):
        self._response = response
        self._source = source

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)

    def iter_text(self) -> Iterator[str]:
        pending, tail = 0, ""  # the text since the last event's end; the end of what came, to find one across
        for text in self._response.iter_text():
            seen = tail + text
            ends = [found + len(end) for end in self.EVENT_ENDS if (found := seen.rfind(end)) >= 0]
            pending = len(seen) - max(ends) if ends else pending + len(text)
            if pending > MAX_ANSWER_BYTES:
                raise too_large("an event of the API's stream", self._source)
            tail = seen[-3:]
            yield text


def amiss(body: Any, shape: type[BaseModel]) -> str | None:
    """What in ``body`` (JSON) is not of the contract's ``shape``, as ``where: why``; None when nothing is.
    Every shape is an object: another JSON value is named as JSON names it (``null``, an array...)."""
    if not isinstance(body, dict):
        return f"its body is {_json_kind(body)}, not an object"
    try:
        shape.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "its body"
        return f"{where}: {first['msg']}"
    return None


def _json_kind(value: Any) -> str:
    """JSON's name of a value that is not an object."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)  # null, true, false
    return {str: "a string", list: "an array"}.get(type(value), "a number")


NOT_JSON = object()  # what _body gives for an answer that is not JSON (null is JSON: None)


def _body(response: httpx.Response) -> Any:
    """The answer's JSON, or ``NOT_JSON``: not JSON, or nested too deeply to read (no answer of the API
    is)."""
    try:
        return response.json()
    except (ValueError, RecursionError):
        return NOT_JSON


def _runbook_path(request_id: str) -> str:
    """The run's path. An id of dots only is sent as ``%2E``: the HTTP client would resolve ``.`` and ``..``
    as path segments (``/runbooks/.`` is the runs list), and the API would never see it to refuse it."""
    segment = quote(request_id, safe="")
    if set(segment) == {"."}:
        segment = segment.replace(".", "%2E")
    return f"/api/ops/runbooks/{segment}"
