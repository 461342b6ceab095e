"""Making a run and following it to its end: its new log lines as they come, then its result.

There is no event stream yet, so a run is followed by polling ``GET /api/ops/runbooks/{request_id}``
(:func:`watch`, the one function to replace when ``GET /api/ops/events`` exists). The API gives a run's
last 50 log lines, without timestamps: :func:`new_lines` finds what a poll added to the previous one.

``POST /execute`` itself waits (a bounded time) for the run's end, so :func:`run` sends it in the
background and watches the run meanwhile: the logs show while the API waits, and ``--no-wait`` can return
as soon as the run exists.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any, TypeVar

from cli.client import Api
from cli.errors import CliError, Exit
from runbooks.contract import RunState

T = TypeVar("T")
View = dict[str, Any]  # the execute response's shape: {"runbook": {...}, "health": ...}
FINISHED = (RunState.SUCCESS, RunState.FAILED)
POLL_SECONDS = 1.0


def finished(view: View | None) -> bool:
    return view is not None and view["runbook"]["status"] in FINISHED


def new_lines(before: list[dict], after: list[dict]) -> list[dict]:
    """The lines of ``after`` that ``before`` did not have. Both are the last lines of one log (a window
    that moves on as lines come): the longest end of ``before`` that begins ``after`` is what they share.
    When a full window repeats itself line for line, new lines cannot be told from old ones."""
    for shared in range(min(len(before), len(after)), 0, -1):
        if before[-shared:] == after[:shared]:
            return after[shared:]
    return after


def watch(fetch: Callable[[], T], interval: float, wake: futures.Future | None = None) -> Iterator[T]:
    """``fetch()`` now and every ``interval`` seconds, without end (the caller stops iterating); a pause
    ends early when ``wake`` completes."""
    while True:
        yield fetch()
        if wake is not None and not wake.done():
            futures.wait([wake], timeout=interval)
        else:
            time.sleep(interval)


class LogPrinter:
    """Hands each log line of a run to ``emit`` once."""

    def __init__(self, emit: Callable[[dict], None] | None):
        self.emit = emit
        self.shown: list[dict] = []

    def show(self, view: View) -> None:
        logs = view["runbook"]["logs"]
        if self.emit is not None:
            for line in new_lines(self.shown, logs):
                self.emit(line)
        self.shown = logs


def follow(api: Api, request_id: str, emit: Callable[[dict], None], interval: float = POLL_SECONDS) -> View:
    """``mdops logs -f``: every log line of a run until it has finished; its final view."""
    printer = LogPrinter(emit)
    for view in watch(lambda: api.runbook(request_id), interval):
        printer.show(view)
        if finished(view):
            return view


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


def _answer(api: Api, request_id: str, answer: futures.Future) -> View | None:
    """What the finished execute call says: the final view (200), or None to go on watching (202; or the
    call failed after the run was made: a 500 for exit code 125, a timeout). Raises when no run was made
    for it (401, 403, 409, 422, ...)."""
    try:
        status, body = answer.result()
    except CliError as error:
        if error.exit_code in (Exit.API_FAILED, Exit.UNAVAILABLE) and api.find(request_id) is not None:
            return None
        raise
    return body if status == 200 else None


def run(
    api: Api,
    body: dict[str, Any],
    wait: bool,
    emit: Callable[[dict], None] | None,
    interval: float = POLL_SECONDS,
) -> View | None:
    """``mdops run``: make the run of ``body`` (which names its request id) and, with ``wait``, follow it
    to its end (its final view); without, return as soon as the API has it.

    A run of this request id that existed before is ours only once the API has answered the request (the
    same parameters: the same run; others: a 409)."""
    request_id = body["request_id"]
    existed = api.find(request_id) is not None
    answer = in_background(lambda: api.execute(body))
    printer = LogPrinter(emit)
    for view in watch(lambda: api.find(request_id), interval if wait else interval / 5, answer):
        if answer.done():
            view = _answer(api, request_id, answer) or view
        elif existed:
            continue
        if view is None:
            continue
        if not wait:
            return None
        printer.show(view)
        if finished(view):
            return view
