"""The live updates' pure parts: which events two versions of a Runbook make, and the ring's resume rules."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from zoneinfo import ZoneInfo

import pytest

from api import events
from api.events import EventLog, StreamLimiter, TooManyStreams, changes
from api.records import record_of
from api.render import event_data
from api.routes import events as route
from runbooks.contract import new_lines

SHANGHAI = ZoneInfo("Asia/Shanghai")


def line(n: int) -> dict[str, str]:
    return {"time": f"2026-11-26T08:00:{n:02d}.000Z", "level": "INFO", "message": f"line {n}"}


def version(lines=(), reason="Running", status="Unknown", rv="1", **more):
    condition = {
        "type": "Succeeded",
        "status": status,
        "reason": reason,
        "lastTransitionTime": "2026-11-26T08:00:00Z",
    }
    return record_of(
        {
            "metadata": {
                "name": "rb",
                "uid": "u",
                "resourceVersion": rv,
                "creationTimestamp": "2026-11-26T08:00:00Z",
            },
            "spec": {"command": "health_check", "requestId": "req-1"},
            "status": {"conditions": [condition], "logs": [line(n) for n in lines], **more},
        }
    )


@pytest.mark.parametrize(
    ("old", "new", "added"),
    [
        ([], [1, 2], [1, 2]),
        ([1, 2], [1, 2, 3], [3]),
        ([1, 2, 3], [2, 3, 4, 5], [4, 5]),  # the status keeps the last lines: the oldest scrolled out
        ([1, 2], [1, 2], []),
        ([1, 2], [7, 8], [7, 8]),  # no overlap: more new lines than the status keeps arrived at once
        (list(range(50)), list(range(10, 60)), list(range(50, 60))),
        ([1, 1], [1, 1, 1], [1]),  # equal lines cannot be told apart: the longest match (fewest new) wins
        ([1, 2, 1, 2], [1, 2, 1, 2, 1, 2], [1, 2]),
    ],
)
def test_new_lines_are_the_ones_the_previous_version_did_not_show(old, new, added):
    assert new_lines([line(n) for n in old], [line(n) for n in new]) == [line(n) for n in added]


def test_a_version_makes_log_events_then_a_transition():
    created = version()
    assert [kind for kind, _, _ in changes(None, created)] == [events.RUNBOOK]
    more = version(lines=[1, 2], rv="2")
    assert [(kind, lines) for kind, _, lines in changes(created, more)] == [(events.LOG, [line(1), line(2)])]
    done = version(lines=[1, 2, 3], reason="Succeeded", status="True", rv="3", exitCode=0)
    assert [kind for kind, _, _ in changes(more, done)] == [events.LOG, events.RUNBOOK]
    assert (
        changes(done, version(lines=[1, 2, 3], reason="Succeeded", status="True", rv="4", exitCode=0)) == []
    )
    assert [kind for kind, _, _ in changes(done, None)] == [events.DELETED]


def test_a_cancel_is_a_transition_with_the_run_s_cancel():
    """Setting spec.cancel changes no status: it is a ``runbook`` event all the same, which shows it (a
    page that follows the run says who cancelled it at once, not when the controller acts on it)."""
    running = version()
    cancelled = version(rv="2")
    cancelled.spec = {**cancelled.spec, "cancel": {"requestedBy": "bob", "reason": "wrong venue"}}
    [(kind, record, _)] = changes(running, cancelled)
    assert kind == events.RUNBOOK
    assert event_data(events.Change(1, kind, record), SHANGHAI)["cancel"] == {
        "requested_by": "bob",
        "reason": "wrong venue",
    }


def test_the_ring_resumes_after_an_id_of_its_own_within_it():
    log = EventLog(size=3)
    assert log.resume_point(log.event_id(0)) == 0  # nothing happened yet: resume from the start
    previous = None
    for n in range(5):
        current = version(lines=range(n + 1), rv=str(n))
        log.record(previous, current)
        previous = current
    # 1 creation + 1 log event, then 4 log events: 6 events, the last 3 kept
    assert log.head == 6
    assert [c.seq for c in log.since(3)] == [4, 5, 6]
    assert log.since(2) is None  # event 3 has left the ring
    assert log.since(6) == []
    assert log.resume_point(log.event_id(3)) == 3
    assert log.resume_point(log.event_id(2)) is None
    assert log.resume_point(log.event_id(7)) is None  # from the future
    assert log.resume_point("0badc0de-4") is None  # another process
    assert log.resume_point(f"{log.epoch}-\u00b2") is None  # a digit to str.isdigit, not to int()
    assert log.resume_point("nonsense") is None


def test_event_data_shows_times_in_the_zone():
    done = version(
        lines=[1], reason="Succeeded", status="True", exitCode=0, state={"activeProfile": "backup"}
    )
    log_event = events.Change(1, events.LOG, done, (line(1),))
    assert event_data(log_event, SHANGHAI) == {
        "request_id": "req-1",
        "name": "rb",
        "lines": [{"time": "2026-11-26T16:00:01.000+08:00", "level": "INFO", "message": "line 1"}],
    }
    detail = event_data(events.Change(2, events.RUNBOOK, done), SHANGHAI)
    assert detail["runbook"]["status"] == "success" and detail["runbook"]["exit_code"] == 0
    assert detail["runbook"]["logs"] == [{"level": "INFO", "message": "line 1"}]
    assert detail["state"] == {"environment_mode": None, "active_profile": "backup", "active_window": None}
    assert detail["conditions"][0]["last_transition_time"] == "2026-11-26T16:00:00+08:00"


def test_streams_are_limited_per_token():
    limiter = StreamLimiter(2)
    first, second = limiter.open("viewer"), limiter.open("viewer")
    with pytest.raises(TooManyStreams):
        limiter.open("viewer")
    limiter.open("admin")
    first.close()
    first.close()  # closing twice counts once
    assert limiter.count("viewer") == 1
    limiter.open("viewer")
    second.close()
    assert limiter.count("viewer") == 1


def test_an_event_is_encoded_once_however_many_streams_send_it(monkeypatch):
    """Each stream encoded each event for itself: with 200 streams, 200 runs took a minute and a half of the
    API's event loop, and a status request waited as long."""
    rendered = []
    monkeypatch.setattr(route, "event_data", lambda change, zone: rendered.append(change) or {"n": 1})
    log = EventLog()
    log.record(None, version())
    (change,) = log.since(0)
    sent = [route.message(log, change, SHANGHAI) for _ in range(200)]
    assert rendered == [change]
    assert set(sent) == {f'id: {log.event_id(1)}\r\nevent: runbook\r\ndata: {{"n":1}}\r\n\r\n'.encode()}


def test_the_events_after_an_id_are_read_from_the_rings_end_not_the_whole_ring():
    """Each stream reads what is new at each event: with hundreds of streams open, walking the whole ring
    each time cost the API more than sending the events."""

    class Unwalked(deque):
        def __iter__(self):
            raise AssertionError("the whole ring was walked")

    log = EventLog(size=1000)
    log._ring = Unwalked(maxlen=log.size)
    for _ in range(1200):
        log.record(None, version())  # a Runbook made: an event
    assert log.head == 1200
    assert [c.seq for c in log.since(log.head - 3)] == [log.head - 2, log.head - 1, log.head]
    assert log.since(log.head - 1000) is not None and log.since(log.head - 1001) is None


def test_an_event_wakes_the_streams_of_a_loop_with_one_callback():
    """A callback per stream and event (a write to the loop's wake-up pipe each) was millions of them when
    hundreds of streams followed a burst of runs."""

    async def woken() -> tuple[int, bool]:
        log = EventLog()
        loop = asyncio.get_running_loop()
        calls = []
        send = loop.call_soon_threadsafe
        loop.call_soon_threadsafe = lambda *args: calls.append(args) or send(*args)
        with contextlib.ExitStack() as stack:
            streams = [stack.enter_context(log.waiter()) for _ in range(300)]
            threading.Thread(target=log.record, args=(None, version())).start()  # the cache's watch thread
            await asyncio.wait_for(asyncio.gather(*(s.wait() for s in streams)), 10)
            return len(calls), all(s.is_set() for s in streams)

    assert asyncio.run(woken()) == (1, True)
