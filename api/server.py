"""uvicorn's HTTP/1.1 protocol (h11), sending a small answer in one system call.

uvicorn writes a response's status line and headers as soon as the application sends them, and its body
as a second write: two ``send`` calls on the socket (each some 50-100 us on a small machine, the largest
single cost of a small answer such as the metrics summary), and two TCP segments for the client to read.
Here the connection's transport holds a write until the next one made in the same step of the event
loop, and sends both at once, or sends it alone at the end of that step (a streamed answer's head, a
stream's chunks): nothing waits longer than the step that wrote it, and the order is kept.

h11 and not httptools: httptools refuses a request with a method it does not know before the
application sees it (a plain-text 400), where the API answers 405 with its JSON body (:mod:`api.edge`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


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
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(GatheredWrites(transport, self.loop))  # type: ignore[arg-type]
