"""Running the script: its own process group, output read concurrently, timeout and cancellation.

The script never outlives the runner: the kernel kills it when the runner dies, even by ``SIGKILL`` or the
OOM killer (``PR_SET_PDEATHSIG``). What the script started itself is in the runner's session (the script's
process group is a new one in that session), so whoever started the runner in a session of its own (the
local executor) finds what is left of a run by the runner's pid; in a Job pod the runner is the container's
PID 1, and the kernel kills every process of the container's PID namespace when it dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from runbooks.contract import ExitCode
from runner.logs import LogSink

KILL_GRACE_SECONDS = 5.0  # between SIGTERM and SIGKILL to the script's process group
DRAIN_SECONDS = 2.0  # how long to read output left in the pipes once the script has exited
POLL_SECONDS = 0.05
MAX_LINE_BYTES = 8192  # longer lines are cut (messages are cut to 500 characters anyway)
_PR_SET_PDEATHSIG = 1  # prctl(2)
# Where a container's own memory cgroup counts the processes the OOM killer killed in it ("oom_kill N"):
# cgroup v2, else v1. Read only by a runner that is its container's PID 1 (a Job pod's): on a machine's
# own processes (the local executor) these are the whole machine's counts.
OOM_COUNTERS = (Path("/sys/fs/cgroup/memory.events"), Path("/sys/fs/cgroup/memory/memory.oom_control"))


@dataclass(frozen=True)
class Outcome:
    exit_code: ExitCode
    message: str
    script_ran: bool  # whether the script was started (so it may have written a report)


class Cancellation:
    """While entered, SIGTERM and SIGINT do not kill the runner: they ask the run to stop.

    The script's process group is then terminated and the run ends as cancelled.
    """

    _SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Cancellation:
        for signum in self._SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        self.signal_name = signal_name(signum)


class _NotRunnable(Exception):
    pass


def run_script(
    scripts_dir: str | None,
    command: str,
    env: dict[str, str],
    *,
    cwd: Path,
    timeout: float,
    log: LogSink,
    cancel: Cancellation,
    kill_grace: float = KILL_GRACE_SECONDS,
) -> Outcome:
    """Run ``<scripts_dir>/<command>`` in ``cwd`` with exactly ``env`` until it ends, times out or is
    cancelled; stream its output."""
    try:
        script = _locate(scripts_dir, command)
    except _NotRunnable as exc:
        return _failed(ExitCode.NOT_EXECUTED, str(exc), log, script_ran=False)
    if cancel.signal_name is not None:
        return _cancelled(cancel, log, script_ran=False)
    oom_kills_before = oom_kills()
    try:
        process = subprocess.Popen(
            [str(script)],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            process_group=0,  # its own process group, so that it can be stopped as a whole
            preexec_fn=_dies_with(os.getpid()),
        )
    except OSError as exc:
        message = f"could not execute {script}: {exc.strerror or exc}"
        return _failed(ExitCode.NOT_EXECUTED, message, log, script_ran=False)
    readers = [_reader(process.stdout, "INFO", log), _reader(process.stderr, "WARNING", log)]
    try:
        ending = _wait(process, timeout, cancel)
    finally:
        if process.poll() is None:  # timed out, cancelled, or the runner itself failed
            _stop_group(process, kill_grace)
    _drain(readers, log)
    if ending == "timeout":
        return _failed(ExitCode.TIMEOUT, f"timed out after {timeout:g} s", log, script_ran=True)
    if ending == "cancelled":
        return _cancelled(cancel, log, script_ran=True)
    return _exited(process.returncode, log, _count(oom_kills_before, oom_kills()))


def oom_kills(counters: tuple[Path, ...] = OOM_COUNTERS) -> int | None:
    """How many processes the OOM killer has killed in this container's memory cgroup (None where the
    runner cannot tell: not a container's PID 1, no counter)."""
    if os.getpid() != 1:
        return None
    for counter in counters:
        try:
            lines = counter.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
    return None


def _count(before: int | None, after: int | None) -> int:
    return after - before if before is not None and after is not None else 0


def _dies_with(runner: int) -> Callable[[], None] | None:
    """For ``preexec_fn``: the kernel sends the script ``SIGKILL`` when the runner's thread that started it
    (the main thread, which lives as long as the runner) ends. A runner that died before the script asked
    for that leaves the script an orphan already: then it ends itself at once."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not in the child

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != runner:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _locate(scripts_dir: str | None, command: str) -> Path:
    if not scripts_dir:
        raise _NotRunnable("no scripts directory: pass --scripts or set MDOPS_SCRIPTS_DIR")
    directory = Path(scripts_dir).absolute()
    if not directory.is_dir():
        raise _NotRunnable(f"scripts directory not found: {directory}")
    script = directory / command
    if not script.is_file():
        raise _NotRunnable(f"script not found: {script}")
    if not os.access(script, os.X_OK):
        raise _NotRunnable(f"script is not executable: {script}")
    return script


def _reader(pipe: IO[bytes], default_level: str, log: LogSink) -> threading.Thread:
    thread = threading.Thread(target=_read, args=(pipe, default_level, log), daemon=True)
    thread.start()
    return thread


def _read(pipe: IO[bytes], default_level: str, log: LogSink) -> None:
    with pipe:
        continuation = False  # the rest of a line longer than MAX_LINE_BYTES: dropped
        for chunk in iter(functools.partial(pipe.readline, MAX_LINE_BYTES), b""):
            if not continuation:
                log.script_line(chunk.decode("utf-8", "replace"), default_level)
            continuation = not chunk.endswith(b"\n")


def _wait(process: subprocess.Popen[bytes], timeout: float, cancel: Cancellation) -> str:
    """How the wait for the script ended: ``exited``, ``cancelled`` or ``timeout``. A script that exited by
    itself has its own end, also when a stop or the deadline came in the same moment; one that a signal
    killed while a stop was asked counts as stopped."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None and (cancel.signal_name is None or process.returncode >= 0):
            return "exited"
        if cancel.signal_name is not None:
            return "cancelled"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout"
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=min(remaining, POLL_SECONDS))


def _stop_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM to the script's process group, SIGKILL to what is left of it after ``grace`` seconds."""
    _signal_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if process.poll() is not None and not _group_alive(process.pid):
            return
        time.sleep(POLL_SECONDS)
    _signal_group(process.pid, signal.SIGKILL)
    process.wait()


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signum)


def _group_alive(group: int) -> bool:
    # When the runner is a container's PID 1, orphans of the group become its children: reap them, else
    # their zombies keep the group alive. Only called once the script itself has been reaped.
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-group, os.WNOHANG)[0]:
            pass
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _drain(readers: list[threading.Thread], log: LogSink) -> None:
    deadline = time.monotonic() + DRAIN_SECONDS
    for reader in readers:
        reader.join(max(0.0, deadline - time.monotonic()))
    if any(reader.is_alive() for reader in readers):
        log.emit("WARNING", "stopped reading output: a background process holds the script's stdout/stderr")


def _exited(returncode: int, log: LogSink, oom_killed: int) -> Outcome:
    """How the script ended; ``oom_killed``: how many processes the OOM killer killed in the container
    meanwhile (the script, or what it started: a shell then exits 137), said in words."""
    if returncode == 0:
        return Outcome(ExitCode.SUCCESS, "", script_ran=True)
    if returncode == ExitCode.INVALID_ARGUMENTS:
        return _failed(ExitCode.INVALID_ARGUMENTS, "script exited with code 2 (invalid arguments)", log)
    if returncode < 0:
        message = f"script killed by {signal_name(-returncode)}"
    else:
        message = f"script exited with code {returncode}"
    if oom_killed:
        message += f" (OOMKilled: the OOM killer killed {oom_killed} of its processes at the memory limit)"
    return _failed(ExitCode.SCRIPT_FAILED, message, log)


def _cancelled(cancel: Cancellation, log: LogSink, *, script_ran: bool) -> Outcome:
    return _failed(ExitCode.CANCELLED, f"cancelled by {cancel.signal_name}", log, script_ran=script_ran)


def _failed(code: ExitCode, message: str, log: LogSink, *, script_ran: bool = True) -> Outcome:
    log.emit("ERROR", message)
    return Outcome(code, message, script_ran=script_ran)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
