"""The local executor: the runner as a child process (the local stack's default).

Each run has a folder ``<state_dir>/<namespace>/<uid>/``; creating it is the claim to start, so a run
is never started twice. The runner runs in its own session and outlives the controller: a controller
killed mid-run adopts it on restart through ``pid`` and waits for ``result.json``. Its streamed log
lines go to ``runner.log`` (at most 1 MiB, the older lines in ``runner.log.1``), its own errors to
``runner.err``.

A runner that dies without a result (``kill -9``, the OOM killer) takes its script with it (the kernel
kills it: ``PR_SET_PDEATHSIG``); what the script started is still in the runner's session, and is killed,
and seen gone, before the run ends (and so before its lock is released): ``end_session``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from controller.executors import LogCallback, RunRequest, failure
from controller.settings import ControllerSettings
from runbooks.contract import ExitCode
from runner.execute import signal_name
from runner.request import BASE_ENV
from runner.result import parse_log_line, parse_result

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05
LOG_EVERY_SECONDS = 1.0
KILL_GRACE_SECONDS = 10.0
LOG_TAIL_BYTES = 64 * 1024
# A process killed with SIGKILL is gone at once, unless it is in an uninterruptible sleep (a hung disk): it
# then dies when that ends, and can run nothing of its own before. Past this, the run ends all the same.
SESSION_END_SECONDS = 30.0


class LocalRun:
    def __init__(
        self,
        folder: Path,
        timeout: float,
        process: asyncio.subprocess.Process | None = None,
        slot: asyncio.Semaphore | None = None,
    ):
        self.folder = folder
        self.timeout = timeout
        self.process = process
        self.slot = slot
        self.name = f"pid/{self.pid}" if self.pid else "pid/unknown"

    @property
    def pid(self) -> int | None:
        try:
            return int((self.folder / "pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _alive(self) -> bool:
        if self.process is not None:
            return self.process.returncode is None
        pid = self.pid
        if pid is None:
            return False
        try:  # the pid is ours only while its command line names this run's folder
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return False
        return str(self.folder).encode() in cmdline and state != "Z"

    def _log_size(self) -> int:
        try:
            return (self.folder / "runner.log").stat().st_size
        except FileNotFoundError:
            return 0

    def _logs(self) -> list[dict[str, Any]]:
        """The log lines at the end of ``runner.log`` (and of ``runner.log.1`` when that is short): only
        their last ``LOG_TAIL_BYTES`` are read."""
        tail = b""
        for name in ("runner.log", "runner.log.1"):
            try:
                with (self.folder / name).open("rb") as file:
                    size = file.seek(0, os.SEEK_END)
                    file.seek(max(0, size - (LOG_TAIL_BYTES - len(tail))))
                    tail = file.read() + tail
            except FileNotFoundError:
                continue
            if len(tail) >= LOG_TAIL_BYTES:
                break
        lines = tail.decode(errors="replace").splitlines()
        if len(tail) >= LOG_TAIL_BYTES:
            lines = lines[1:]  # the first may be cut
        return [entry for entry in map(parse_log_line, lines) if entry is not None]

    async def wait(self, on_logs: LogCallback) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout + 30  # the runner enforces the timeout; this is a backstop
        next_logs = loop.time() + LOG_EVERY_SECONDS
        shown = 0  # the log's size when last shown
        try:
            while self._alive():
                if self.process is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(self.process.wait()), LOG_EVERY_SECONDS)
                else:
                    await asyncio.sleep(POLL_SECONDS * 4)
                if loop.time() >= next_logs:
                    next_logs = loop.time() + LOG_EVERY_SECONDS
                    size = self._log_size()
                    if size != shown:
                        shown = size
                        await on_logs(self._logs())
                if loop.time() > deadline:
                    await self.cancel()
                    await self._end_session()
                    return failure(
                        ExitCode.TIMEOUT, f"runner did not stop after its {self.timeout:.0f}s timeout; killed"
                    )
            return await self._result()
        finally:
            if self.slot is not None:
                self.slot.release()
                self.slot = None

    async def _result(self) -> dict[str, Any]:
        try:
            return parse_result((self.folder / "result.json").read_text())
        except FileNotFoundError:
            return await self._lost()
        except ValueError as error:
            return failure(ExitCode.NOT_EXECUTED, f"runner wrote an invalid result: {error}")

    async def _lost(self) -> dict[str, Any]:
        """The result of a run whose runner is gone without one: what the run left is killed first."""
        killed = await self._end_session()
        code = self.process.returncode if self.process is not None else None
        if code is None:  # adopted: it ended while no controller watched it
            message = "the runner ended without writing a result"
        elif code < 0:
            message = f"the runner died (killed by {signal_name(-code)}) without writing a result"
        else:
            message = f"the runner exited with code {code} without writing a result"
        if killed:
            message += f"; killed what its script had left ({len(killed)} process{'es' * (len(killed) > 1)})"
        said = [line["message"] for line in self._logs()[-3:]] + self._errors()[-1:]
        return failure(ExitCode.NOT_EXECUTED, message + (": " + "; ".join(said) if said else ""))

    def _errors(self) -> list[str]:
        """The runner's own error output (a traceback when it crashed), non-blank lines."""
        try:
            text = (self.folder / "runner.err").read_bytes()[-LOG_TAIL_BYTES:]
        except FileNotFoundError:
            return []
        return [line for line in text.decode(errors="replace").splitlines() if line.strip()]

    async def _end_session(self) -> list[int]:
        pid = self.pid
        return await end_session(pid) if pid is not None else []

    async def cancel(self) -> None:
        pid = self.pid
        if pid is None or not self._alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)  # the runner stops its script and reports "cancelled"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + KILL_GRACE_SECONDS
        while self._alive() and loop.time() < deadline:
            await asyncio.sleep(POLL_SECONDS)
        if self._alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


class LocalExecutor:
    kind = "local"

    def __init__(self, settings: ControllerSettings):
        self.settings = settings
        self.slots = asyncio.Semaphore(settings.max_parallel)

    def folder(self, request: RunRequest) -> Path:
        return self.settings.state_dir / request.namespace / request.uid

    async def start(self, request: RunRequest) -> LocalRun:
        folder = self.folder(request)
        timeout = float(request.spec.get("timeoutSeconds", 300))
        if folder.exists():  # started before (by us or a controller before a restart): adopt
            return LocalRun(folder, timeout)
        await self.slots.acquire()
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            folder.mkdir()  # the claim: exists means started
            argv = [
                sys.executable, "-m", "runner", *request.runner_args(self.settings),
                "--scripts", str(self.settings.scripts_dir), "--result-file", str(folder / "result.json"),
                "--log-file", str(folder / "runner.log"),
            ]  # fmt: skip
            with (folder / "runner.err").open("wb") as errors:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdout=subprocess.DEVNULL,  # the same lines as runner.log, unbounded
                    stderr=errors,
                    stdin=subprocess.DEVNULL,
                    cwd=folder,
                    env=runner_environment(request, self.settings, os.environ),
                    start_new_session=True,  # its session: what is left of the run if the runner dies
                )
            (folder / "pid").write_text(str(process.pid))
        except BaseException:
            self.slots.release()
            raise
        return LocalRun(folder, timeout, process, self.slots)


def runner_environment(
    request: RunRequest, settings: ControllerSettings, environ: Mapping[str, str]
) -> dict[str, str]:
    """The runner's whole environment: of the controller's (``environ``, which may hold its credentials)
    only what the scripts may have (``BASE_ENV`` and the names of ``MDOPS_SCRIPT_PASS_ENV``), and the run's
    variables; the runner hands its script no more than that either."""
    names = [*BASE_ENV, *settings.script_pass_env]
    return {name: environ[name] for name in names if name in environ} | request.runner_env(settings)


def session_members(session: int) -> list[int]:
    """The live processes of ``session`` (a zombie is dead already), from ``/proc``."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            state, _, _, sid = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[:4]
        except (OSError, ValueError):  # gone meanwhile
            continue
        if int(sid) == session and state != "Z":
            members.append(int(entry.name))
    return members


async def end_session(session: int) -> list[int]:
    """Kill (SIGKILL) every process left in the session of a runner that is gone, and wait until they are
    gone; their pids. A session whose leader lives is not a dead runner's (its pid was used again): left
    alone."""
    if session <= 1 or session == os.getsid(0):
        return []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SESSION_END_SECONDS
    killed: set[int] = set()
    while members := await asyncio.to_thread(session_members, session):
        if session in members and not killed:
            return []
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed.update(members)
        if loop.time() > deadline:
            log.warning("session %d: %s survive SIGKILL; the run ends all the same", session, members)
            break
        await asyncio.sleep(POLL_SECONDS)
    return sorted(killed)
