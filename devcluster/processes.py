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
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """For ``preexec_fn``: the kernel kills the child when its parent dies."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def adopt_orphans() -> None:
    """Make this process the one that its descendants' orphans are given to, instead of init (a "child
    subreaper"): what a child started in a session of its own and left behind when it died (a run of a
    killed controller) stays this process's to stop."""
    _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1)


def adopts_orphans() -> bool:
    flag = ctypes.c_int(0)
    _libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag))
    return bool(flag.value)


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s child processes (of all its threads)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


# The sockets that hold free_port()'s ports, for as long as this process lives.
_HELD: dict[int, socket.socket] = {}


def free_port(preferred: int = 0) -> int:
    """A loopback port (``preferred`` if it is free, else any) that stays this process's to give to a
    server it starts, for as long as it lives; closed (refused) until that server listens on it.

    A port found free and let go again can be given to any process's outgoing connection in the seconds
    before the server binds it ("address already in use"). So a socket keeps it: bound without
    SO_REUSEADDR, so that the kernel gives the port to no other bind or connect; then marked SO_REUSEADDR
    and never listening, so that a server binding with SO_REUSEADDR (uvicorn, http.server, Go's listeners)
    shares it."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", preferred))
    except OSError:
        sock.close()
        if not preferred:
            raise
        return free_port()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    port = sock.getsockname()[1]
    _HELD[port] = sock
    return port


class Process:
    """One named child process whose output goes to ``<logs>/<name>.log``."""

    def __init__(
        self, name: str, argv: Sequence[str | os.PathLike], logs: Path, env: dict[str, str] | None = None
    ):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.env = env
        self.log = logs / f"{name}.log"
        self.popen = self._spawn()

    def _spawn(self) -> subprocess.Popen:
        self.started = time.monotonic()
        with open_private(self.log) as out:  # a log may show what it was given: owner only
            return subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    def restart(self, marker: str) -> None:
        """Start the exited process again as it was started (command, environment, so its ports too); its
        log goes on after a line that says so. The kernel kills the new process when the *thread* that
        calls this ends (``PR_SET_PDEATHSIG`` follows the thread): call it from one that outlives it."""
        if self.alive():
            raise RuntimeError(f"{self.name} is running (pid {self.popen.pid}): not restarting it")
        with open_private(self.log) as out:
            out.write(f"----- {marker} -----\n".encode())
        self.popen = self._spawn()

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


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has ended: gone, or a zombie (dead, waiting for whoever reaps orphans here)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return status.rsplit(")", 1)[1].split()[0] == "Z"


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
