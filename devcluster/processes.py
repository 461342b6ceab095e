"""Child processes that never outlive the process that started them.

Each child runs in its own session (so a terminal's Ctrl-C reaches only the
parent, which then stops the children in order) and gets SIGKILL from the
kernel if its parent dies without cleaning up (``PR_SET_PDEATHSIG``), so even a
``kill -9`` of the parent leaves no orphan behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from devcluster.private import open_private

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """For ``preexec_fn``: the kernel kills the child when its parent dies."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """One named child process whose output goes to ``<logs>/<name>.log``."""

    def __init__(
        self, name: str, argv: Sequence[str | os.PathLike], logs: Path, env: dict[str, str] | None = None
    ):
        self.name = name
        self.log = logs / f"{name}.log"
        with open_private(self.log) as out:  # a log may show what it was given: owner only
            self.popen = subprocess.Popen(
                [str(a) for a in argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        if not self.alive():
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def answers_200(url: str, context: ssl.SSLContext | None = None) -> bool:
    """Whether ``url`` answers 200 now (a readiness probe for ``wait_until``)."""
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until(
    check: Callable[[], T], timeout: float, what: str, watch: Sequence[Process] = (), interval: float = 0.1
) -> T:
    """Poll ``check`` until it returns something true, and return that; fail early if a watched
    process exits."""
    deadline = time.monotonic() + timeout
    while True:
        for process in watch:
            if not process.alive():
                raise RuntimeError(
                    f"{process.name} exited with {process.popen.returncode} while waiting for {what}; "
                    f"last lines of {process.log}:\n{process.log_tail()}"
                )
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
