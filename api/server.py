"""uvicorn's HTTP/1.1 protocol (h11), sending a small answer in one system call.

uvicorn writes a response's status line and headers as soon as the application sends them, and its body
as a second write: two ``send`` calls on the socket (each some 50-100 us on a small machine, the largest
single cost of a small answer such as the metrics summary), and two TCP segments for the client to read.
Here the connection's transport holds a write until the next one made in the same step of the event
loop, and sends both at once, or sends it alone at the end of that step (a streamed answer's head, a
stream's chunks): nothing waits longer than the step that wrote it, and the order is kept.

It also gives a client a deadline for each request it sends: from the moment its connection opens, or
its next request's first byte arrives (or, for one pipelined behind another, the other is answered), it
has ``read_seconds`` to send the whole request, head and body (``MDOPS_API_READ_TIMEOUT_SECONDS``).
uvicorn has none: a connection that sends nothing, or half a head, or half a body, is otherwise kept for
good, and enough of them use up the process's file descriptors. When the deadline passes, a connection that
has sent nothing of a request is closed (as an idle keep-alive connection is), one with part of a request
is answered 408 with a JSON body and closed, and the application, if the head had reached it, sees the
client gone and does nothing with the part it has. The same deadline bounds how long the server waits
to write to a client that reads nothing of its answers (its buffers full: uvicorn waits for good there
too, e.g. for a client that pipelines requests for large files and never reads): then the connection is
dropped.

h11 (0.16) lets control characters other than NUL through in a header's value; :class:`StrictConnection`
refuses them (400, as h11 refuses one in a header's name): RFC 9110 allows only visible characters, spaces
and tabs there, and a value with an escape sequence or a bell would go on into logs and terminals.

h11 and not httptools: httptools refuses a request with a method it does not know before the
application sees it (a plain-text 400), where the API answers 405 with its JSON body (:mod:`api.edge`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from http import HTTPStatus
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

# The client's side of a request while it is still sending it (h11's states): before its first byte, or
# with its head or body incomplete.
RECEIVING = (h11.IDLE, h11.SEND_BODY)


# What RFC 9110 does not allow in a field value: the C0 controls but the tab, and DEL.
CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class StrictConnection(h11.Connection):
    """h11's server side that also refuses a request with a control character in a header's value (a
    RemoteProtocolError, which uvicorn answers with a 400)."""

    def next_event(self) -> Any:
        event = super().next_event()
        if isinstance(event, h11.Request) and any(CONTROL.search(value) for _, value in event.headers):
            raise h11.RemoteProtocolError("a control character in a header's value", error_status_hint=400)
        return event


class GatheredWrites:
    """A transport that sends a write together with the next one made in the same step of the event loop
    (an answer's head with its body), or at the end of that step."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self.transport = transport
        self.loop = loop
        self.held = b""

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self.held:
            data, self.held = self.held + data, b""
            self.transport.write(data)
        else:
            self.held = data
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        data, self.held = self.held, b""
        if data and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self.held = b""
        self.transport.abort()

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's own
        return getattr(self.transport, name)


class Protocol(H11Protocol):
    def __init__(self, *args: Any, read_seconds: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.conn = StrictConnection(h11.SERVER, self.conn._max_incomplete_event_size)
        self.read_seconds = read_seconds
        self.read_deadline: asyncio.TimerHandle | None = None
        self.write_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(GatheredWrites(transport, self.loop))  # type: ignore[arg-type]
        self.start_reading()

    def data_received(self, data: bytes) -> None:
        if self.read_deadline is None and self.conn.their_state is h11.IDLE:
            self.start_reading()  # the first byte of a next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state not in RECEIVING:  # the request is whole (or the connection done)
            self.stop_reading()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn goes on to a request pipelined behind the one answered, from bytes that came with it: no
        # data_received starts that request's deadline, and half of one would be kept for good.
        pipelined = self.conn.their_state is h11.SEND_BODY or (
            self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]
        )
        if self.read_deadline is None and pipelined and not self.transport.is_closing():
            self.start_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_reading()
        self.resume_writing()  # no deadline left behind (uvicorn resumes its writers too)
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """The transport holds more than it may of what the client has not read: it has
        ``read_seconds`` to read some of it."""
        super().pause_writing()
        if self.write_deadline is None:
            self.write_deadline = self.loop.call_later(self.read_seconds, self.write_timed_out)

    def resume_writing(self) -> None:
        if self.write_deadline is not None:
            self.write_deadline.cancel()
            self.write_deadline = None
        super().resume_writing()

    def write_timed_out(self) -> None:
        self.write_deadline = None
        who = ":".join(map(str, self.client or ("a client",)))
        log.info("%s: read nothing of its answer within %g s: connection dropped", who, self.read_seconds)
        self.transport.abort()

    def start_reading(self) -> None:
        self.read_deadline = self.loop.call_later(self.read_seconds, self.read_timed_out)

    def stop_reading(self) -> None:
        if self.read_deadline is not None:
            self.read_deadline.cancel()
            self.read_deadline = None

    def read_timed_out(self) -> None:
        self.read_deadline = None
        if self.transport.is_closing() or self.conn.their_state not in RECEIVING:
            return
        if self.conn.their_state is h11.SEND_BODY:  # the application has the head, the body is not whole
            unanswered = not self.cycle.response_started
            if not self.cycle.response_complete:  # it sees the client gone
                self.cycle.disconnected = True
                self.cycle.message_event.set()
        else:  # part of a head, or nothing yet
            unanswered = bool(self.conn.trailing_data[0])
        if unanswered:
            detail = f"the request was not received whole within {self.read_seconds:g} s"
            log.info("%s: %s: 408", ":".join(map(str, self.client or ("a client",))), detail)
            self.answer_and_close(HTTPStatus.REQUEST_TIMEOUT, detail)
        else:
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """What h11 cannot parse: uvicorn answers in plain text, the API's errors are JSON."""
        if self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete:
            self.transport.close()  # mid-answer (the request's body went bad): no second answer fits
        else:
            self.answer_and_close(HTTPStatus.BAD_REQUEST, msg)

    def answer_and_close(self, status: HTTPStatus, detail: str) -> None:
        """An error of the connection's own, with a JSON body, then the connection closed. Written as bytes:
        h11 sends a response only once a whole request head has come."""
        body = json.dumps({"detail": detail}).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, status.phrase.encode(), len(body), body)
        )
        self.transport.close()
