"""api.server: an answer's head and body leave in one write; nothing is lost, reordered or held longer."""

from __future__ import annotations

import asyncio

from api.server import GatheredWrites


class Recorder:
    """The transport underneath: what it was asked to send, in order."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def next_step() -> None:
    await asyncio.sleep(0)


def test_a_head_and_its_body_go_out_as_one_write():
    async def scenario() -> list[bytes]:
        recorder = Recorder()
        gathered = GatheredWrites(recorder, asyncio.get_running_loop())
        gathered.write(b"HTTP/1.1 200 OK\r\n\r\n")
        gathered.write(b"")  # h11's end of a body with a Content-Length
        gathered.write(b'{"ok":true}')
        sent_at_once = list(recorder.writes)
        await next_step()
        assert recorder.writes == sent_at_once  # nothing left over for the end of the step
        return recorder.writes

    assert asyncio.run(scenario()) == [b'HTTP/1.1 200 OK\r\n\r\n{"ok":true}']


def test_a_lone_write_leaves_at_the_end_of_the_step_and_order_is_kept():
    async def scenario() -> None:
        recorder = Recorder()
        gathered = GatheredWrites(recorder, asyncio.get_running_loop())
        gathered.write(b"head")  # a streamed answer's head: its body comes later
        assert recorder.writes == []
        await next_step()
        assert recorder.writes == [b"head"]
        for chunk in (b"a", b"b", b"c"):  # chunks of a stream, three in one step
            gathered.write(chunk)
        await next_step()
        assert b"".join(recorder.writes) == b"headabc"

    asyncio.run(scenario())


def test_close_sends_what_is_held_first_and_abort_drops_it():
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        recorder = Recorder()
        gathered = GatheredWrites(recorder, loop)
        gathered.write(b"last answer")
        gathered.close()
        assert recorder.writes == [b"last answer"] and recorder.closed
        await next_step()  # the end-of-step flush finds nothing more to send
        assert recorder.writes == [b"last answer"]

        recorder = Recorder()
        gathered = GatheredWrites(recorder, loop)
        gathered.write(b"never")
        gathered.abort()
        await next_step()
        assert recorder.writes == [] and recorder.aborted
        assert gathered.get_extra_info("peername") == "info:peername"  # the rest is the transport's

    asyncio.run(scenario())
