"""The local executor: the runner as a process of its own (the local stack's default).

Each run has a folder ``<state_dir>/<namespace>/<uid>/``; creating it is the claim to start, so a run
is never started twice. The runner runs in its own session and outlives the controller: a controller
killed mid-run adopts it on restart through ``pid`` (which the runner claims itself before it runs
anything, and the launcher's own pid, in ``launcher``, written before it is asked: see ``adopt``) and
waits for ``result.json``; a run it finds provably never started (:func:`never_started`) it starts then,
in its folder made afresh. Its streamed log lines go to ``runner.log`` (at most 1 MiB, the older lines
in ``runner.log.1``), which is watched (its size, every ``POLL_SECONDS``) for new lines; its own errors
go to ``runner.err``. The folder keeps room for its result (``room``, which the runner frees just before it
writes its result), so that a script that fills the disk does not lose it.

A runner that dies without a result (``kill -9``, the OOM killer) takes its script with it (the kernel
kills it: ``PR_SET_PDEATHSIG``); what the script started is still in the runner's session, and is killed,
and seen gone, before the run ends (and so before its lock is released): ``end_session``.

Runners are forked by the launcher (:mod:`controller.executors.launcher`), which has the runner imported
already, rather than started as new interpreters. No thread per run: each is polled from the event loop
through ``/proc``, which also notices its log growing. The launcher writes how each runner ended (its
exit status) to ``exit`` in the run's folder.

A run's folder is the proof of what ran, and the only one until its result is recorded in the ledger: only
then is it released (``released`` in it: :meth:`LocalRun.release`), and :class:`Sweeper` removes it
``MDOPS_RUN_FOLDER_TTL_SECONDS`` later, as Kubernetes removes a Job after its ``ttlSecondsAfterFinished``;
never while a process of its run lives, nor while the controller has its Runbook unfinished.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from controller.executors import LogCallback, RunRequest, failure, lost
from controller.executors.launcher import NEVER_STARTED, PID_FILE, claim
from controller.settings import ControllerSettings
from runbooks.contract import ExitCode
from runner.execute import signal_name
from runner.request import BASE_ENV
from runner.result import parse_log_line, parse_result

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05
KILL_GRACE_SECONDS = 10.0
LOG_TAIL_BYTES = 64 * 1024
# In a run's folder: the pid of the launcher asked to start its runner, written before the request is sent.
LAUNCHER_FILE = "launcher"
# How long an adopting controller waits for a dead controller's launcher, still alive, to start the run.
LAUNCH_WAIT_SECONDS = 60.0
# A process killed with SIGKILL is gone at once, unless it is in an uninterruptible sleep (a hung disk): it
# then dies when that ends, and can run nothing of its own before. Past this, the run ends all the same.
SESSION_END_SECONDS = 30.0
# The launcher writes a runner's exit status as it reaps it, a moment after the runner is seen gone.
EXIT_STATUS_SECONDS = 1.0
# In a run's folder: room kept for its last files (its result, its exit status), made with the folder, which
# its runner frees just before it writes its result: a script that fills the disk does not lose its result.
ROOM_FILE = "room"
ROOM_BYTES = 32 * 1024
# In a run's folder: made once its result is recorded (LocalRun.release). Its time is when the folder's TTL
# began; a folder without it is never removed.
RELEASED_FILE = "released"
# Between two passes over the run folders (as often as the TTL, when it is shorter).
SWEEP_SECONDS = 60.0


def launcher_alive(pid: int) -> bool:
    """Whether ``pid`` is a launcher still running (not a zombie, not another process given its pid)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
        return False
    return b"controller.executors.launcher" in command and state != "Z"


async def launch_settled(folder: Path) -> None:
    """Wait while the launcher asked to start this run may still fork its runner: a controller killed
    right after asking leaves a launcher that, just spawned, may take a second or two to import the
    runner before it reads the request. Claiming the run never started meanwhile would be safe (its
    runner, late, would run nothing) but fails a run that was about to start; the soak
    (bench/soak.py) saw that in one run of six killed controllers."""
    try:
        pid = int((folder / LAUNCHER_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return  # no launcher was asked: the request was never sent
    deadline = asyncio.get_running_loop().time() + LAUNCH_WAIT_SECONDS
    while launcher_alive(pid) and not (folder / PID_FILE).exists():
        if asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(POLL_SECONDS)


def never_started(folder: Path) -> bool:
    """Whether the run in ``folder`` provably never started and no runner can come for it any more: its
    ``pid`` file says so (a runner that claims it later runs nothing), and the launcher asked to start it,
    if any was, is gone (it would fork a runner in the folder of that name)."""
    try:
        if (folder / PID_FILE).read_text() != NEVER_STARTED:
            return False
    except FileNotFoundError:
        return False
    try:
        return not launcher_alive(int((folder / LAUNCHER_FILE).read_text()))
    except (FileNotFoundError, ValueError):
        return True  # no launcher was asked


class LocalRun:
    def __init__(self, folder: Path, timeout: float):
        self.folder = folder
        self.timeout = timeout
        self.name = f"pid/{self.pid}" if self.pid else "pid/unknown"

    @property
    def pid(self) -> int | None:
        try:
            return int((self.folder / PID_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _alive(self) -> bool:
        pid = self.pid
        if pid is None:
            return False
        try:  # the pid is ours only while it works in this run's folder
            cwd = os.readlink(f"/proc/{pid}/cwd")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
            return False
        return cwd == str(self.folder) and state != "Z"

    def _log_size(self) -> int:
        try:
            return (self.folder / "runner.log").stat().st_size
        except FileNotFoundError:
            return 0

    def logs(self) -> list[dict[str, Any]]:
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
        shown = 0  # the log's size when last announced
        while True:
            alive = self._alive()
            size = self._log_size()
            if size != shown:
                shown = size
                on_logs()
            if not alive:
                return await self._result()
            if loop.time() > deadline:
                await self.cancel()
                await self._end_session()
                return failure(
                    ExitCode.TIMEOUT, f"runner did not stop after its {self.timeout:.0f}s timeout; killed"
                )
            await asyncio.sleep(POLL_SECONDS)

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
        code = await self._exit_code()
        if code is None:  # adopted: it ended while no controller watched it
            message = "the runner ended without writing a result"
        elif code < 0:
            message = f"the runner died (killed by {signal_name(-code)}) without writing a result"
        else:
            message = f"the runner exited with code {code} without writing a result"
        if killed:
            message += f"; killed what its script had left ({len(killed)} process{'es' * (len(killed) > 1)})"
        lines = self.logs()
        said = [line["message"] for line in lines[-3:]] + self._errors()[-1:]
        result = failure(ExitCode.NOT_EXECUTED, message + (": " + "; ".join(said) if said else ""))
        result["logs"] = [*lines, *result["logs"]]  # what the run said before it died stays in its status
        return result

    async def _exit_code(self) -> int | None:
        """The runner's exit status as the launcher wrote it (negative: killed by that signal); None when
        no launcher saw it end (a run adopted after a restart)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + EXIT_STATUS_SECONDS
        while True:
            try:
                return int((self.folder / "exit").read_text())
            except (FileNotFoundError, ValueError):
                if loop.time() > deadline:
                    return None
            await asyncio.sleep(POLL_SECONDS)

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

    async def over(self) -> bool:
        """Whether nothing of the run may run any more (no controller watching it: its Runbook went unseen):
        its runner is gone. What a runner that died without a result left in its session is ended first,
        as for a run a controller watches (:meth:`_lost`); what a script left running after its runner's
        own end is left alone, as it is then."""
        if self._alive():
            return False
        if not (self.folder / "result.json").exists():
            await self._end_session()
        return True

    async def release(self) -> None:
        """The result is recorded: the run's folder (its log and result) may go after its TTL
        (:class:`Sweeper`), which begins now."""
        with contextlib.suppress(FileNotFoundError):  # gone already: released before a restart
            (self.folder / RELEASED_FILE).touch()


class Launcher:
    """The launcher process (started at the first run, again if it ever exits), one request at a time."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self.lock = asyncio.Lock()

    async def start(self) -> None:
        """Start the launcher now, as the controller starts: else the first run waits for its interpreter
        to start and import the runner (0.4 s of a small machine, after every restart)."""
        async with self.lock:
            await self._started()

    async def _started(self) -> asyncio.subprocess.Process:
        if self.process is None or self.process.returncode is not None:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "controller.executors.launcher",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=launcher_environment(),
            )  # fmt: skip
        return self.process

    async def launch(self, argv: list[str], cwd: Path, env: dict[str, str], errors: Path) -> int:
        request = {"argv": argv, "cwd": str(cwd), "env": env, "errors": str(errors)}
        async with self.lock:
            process = await self._started()
            assert process.stdin is not None and process.stdout is not None
            (cwd / LAUNCHER_FILE).write_text(str(process.pid))  # before the request: see launch_settled
            try:
                process.stdin.write(json.dumps(request).encode() + b"\n")
                await process.stdin.drain()
                answer = json.loads(await process.stdout.readline() or b"{}")
            except (OSError, ValueError) as error:
                raise OSError(f"the launcher failed: {error}") from error
        if "pid" not in answer:
            raise OSError(f"the launcher could not start the runner: {answer.get('error', 'it exited')}")
        return int(answer["pid"])


class LocalExecutor:
    kind = "local"

    def __init__(self, settings: ControllerSettings):
        self.settings = settings
        self.launcher = Launcher()

    def folder(self, request: RunRequest) -> Path:
        return self.settings.state_dir / request.namespace / request.uid

    def handle(self, request: RunRequest) -> LocalRun:
        return LocalRun(self.folder(request), float(request.spec.get("timeoutSeconds", 300)))

    async def adopt(self, request: RunRequest) -> LocalRun | dict[str, Any]:
        folder = self.folder(request)
        if not folder.is_dir():
            return lost(
                f"its run folder {folder} is gone (a state folder emptied or replaced while no "
                "controller watched it)"
            )
        await launch_settled(folder)
        try:  # no pid yet: a runner on its way, or none ever (see controller.executors.launcher)
            claim(str(folder / PID_FILE), NEVER_STARTED)
        except FileExistsError:
            if (folder / PID_FILE).read_text() != NEVER_STARTED:  # not declared so by a controller before
                return self.handle(request)
        return failure(
            ExitCode.NOT_EXECUTED,
            "never started: a controller stopped between making the run's folder and starting its runner",
        )

    async def may_run(self, namespace: str, name: str, uid: str) -> bool:
        """Whether its runner lives (:meth:`LocalRun.over`), or a launcher asked to start its runner may
        still do so."""
        folder = self.settings.state_dir / namespace / uid
        run = LocalRun(folder, 0)
        if run.pid is not None:
            return not await run.over()
        if (folder / PID_FILE).exists():  # declared never started: a runner that comes runs nothing
            return False
        try:
            return launcher_alive(int((folder / LAUNCHER_FILE).read_text()))
        except (FileNotFoundError, ValueError):
            return False

    async def prepare(self, request: RunRequest) -> None:
        """The run's folder, with no launcher asked for it yet (:func:`make_folder`)."""
        make_folder(self.folder(request))

    async def resume(self, request: RunRequest) -> LocalRun | dict[str, Any]:
        """Its folder says what happened (it is made before the claim's mark comes off): one left is
        adopted, or, if its runner provably never started, started (:meth:`start`); none means it was lost
        with its state folder."""
        if self.folder(request).exists():
            return await self.start(request)
        return await self.adopt(request)

    async def find(self, request: RunRequest) -> LocalRun | None:
        if not self.folder(request).is_dir():
            return None  # the folder is made before anything runs
        run = await self.adopt(request)
        if isinstance(run, dict) or run.pid is None:  # declared never started, now or before
            return None
        return run

    async def start(self, request: RunRequest) -> LocalRun | dict[str, Any]:
        folder = self.folder(request)
        if (folder / LAUNCHER_FILE).exists() or (folder / PID_FILE).exists():
            # Asked for before (by us or a controller before a restart), or declared never started: adopt.
            run = await self.adopt(request)
            if not never_started(folder):
                return run
            # No runner started in the folder, and none can now, whatever stopped the controller that made it
            # (the log says no more than the folder proves): the run starts now, once, in its folder made
            # afresh.
            log.warning(
                "%s/%s never started (no runner claimed its folder, and none can now): it starts now, once",
                request.namespace,
                request.name,
            )
            shutil.rmtree(folder)
        make_folder(folder)  # prepared, or made afresh
        argv = [
            *request.runner_args(self.settings),
            "--scripts", str(self.settings.scripts_dir), "--result-file", str(folder / "result.json"),
            "--log-file", str(folder / "runner.log"), "--room-file", str(folder / ROOM_FILE),
        ]  # fmt: skip
        env = runner_environment(request, self.settings, os.environ)
        await self.launcher.launch(argv, folder, env, folder / "runner.err")  # it wrote the pid file
        return self.handle(request)


def make_folder(folder: Path) -> None:
    """A run's folder, with ``ROOM_BYTES`` kept in it for the run's last files (``ROOM_FILE``); OSError
    (its disk full already) before anything runs."""
    folder.mkdir(parents=True, exist_ok=True)
    room = folder / ROOM_FILE
    try:
        with room.open("xb") as file:
            file.write(bytes(ROOM_BYTES))
    except FileExistsError:  # made when it was prepared
        pass
    except OSError as error:
        room.unlink(missing_ok=True)
        raise OSError(error.errno, f"no room for the run's files in {folder}: {error.strerror}") from error


def launcher_environment() -> dict[str, str]:
    """The launcher's environment: ``BASE_ENV`` (and ``PYTHONPATH``, to import what the controller does),
    none of the controller's credentials. A forked runner's environment as the kernel shows it
    (``/proc/<pid>/environ``, readable by its scripts) is its launcher's, whatever it runs with."""
    return {name: os.environ[name] for name in (*BASE_ENV, "PYTHONPATH") if name in os.environ}


def runner_environment(
    request: RunRequest, settings: ControllerSettings, environ: Mapping[str, str]
) -> dict[str, str]:
    """The runner's whole environment: of the controller's (``environ``, which may hold its credentials)
    only what the scripts may have (``BASE_ENV`` and the names of ``MDOPS_SCRIPT_PASS_ENV``), and the run's
    variables; the runner hands its script no more than that either."""
    names = [*BASE_ENV, *settings.script_pass_env]
    return {name: environ[name] for name in names if name in environ} | request.runner_env(settings)


def live_sessions() -> dict[int, int]:
    """The live processes (a zombie is dead already) and the session of each, from ``/proc``."""
    sessions = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            state, _, _, sid = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[:4]
        except (OSError, ValueError):  # gone meanwhile
            continue
        if state != "Z":
            sessions[int(entry.name)] = int(sid)
    return sessions


def session_members(session: int) -> list[int]:
    """The live processes of ``session``."""
    return [pid for pid, sid in live_sessions().items() if sid == session]


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


def due(released: Mapping[str, float], now: float, ttl: float) -> list[str]:
    """The run folders (by name: the run's uid) whose TTL ``ttl`` is over at ``now``: ``released`` says
    when each released folder was released (a folder not in it is kept). None with a TTL of 0: kept."""
    if not ttl:
        return []
    return sorted(uid for uid, at in released.items() if now - at >= ttl)


def released_folders(folder: Path) -> dict[str, float]:
    """The released run folders in ``folder`` (a namespace's), each with when it was released: one look
    per folder, at its ``released`` file."""
    released = {}
    with contextlib.suppress(FileNotFoundError):  # no run yet
        for entry in os.scandir(folder):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):  # not released
                released[entry.name] = os.stat(os.path.join(entry.path, RELEASED_FILE)).st_mtime
    return released


def remove_folders(folders: list[Path]) -> list[Path]:
    """Remove each of ``folders`` (released run folders) unless a process of its run lives: its runner, or
    one its script left in the runner's session (which is the runner's pid). Its ``released`` file goes
    last, so that a controller killed meanwhile leaves a folder that is removed at the next pass. Those
    removed."""
    alive = set(live_sessions().values())
    removed = []
    for folder in folders:
        try:
            if int((folder / PID_FILE).read_text()) in alive:
                continue
        except (FileNotFoundError, ValueError):  # no runner ever started (or the folder is gone)
            pass
        try:
            for entry in os.scandir(folder):
                if entry.name != RELEASED_FILE:
                    (shutil.rmtree if entry.is_dir(follow_symlinks=False) else os.unlink)(entry.path)
            (folder / RELEASED_FILE).unlink()
            folder.rmdir()
        except FileNotFoundError:  # removed meanwhile
            continue
        except OSError as error:  # tried again at the next pass
            log.warning("cannot remove the run folder %s: %s", folder, error)
            continue
        removed.append(folder)
    return removed


class Sweeper:
    """The one task that removes the namespace's released run folders once their TTL is over
    (``MDOPS_RUN_FOLDER_TTL_SECONDS``; 0: they stay): a pass every ``SWEEP_SECONDS`` (the TTL if
    shorter), the first one a pass after the start, and only while ``active`` (this replica is the active
    one and has seen every unfinished Runbook): ``unfinished`` tells it the Runbooks it has unfinished (one
    may have been released by a controller killed before its status said finished), whose folders stay.
    The disk work is done in threads, never on the event loop."""

    def __init__(
        self, settings: ControllerSettings, active: Callable[[], bool], unfinished: Callable[[str], bool]
    ):
        self.folder = settings.state_dir / settings.namespace
        self.ttl = settings.run_folder_ttl_seconds
        self.active = active
        self.unfinished = unfinished

    async def run(self) -> None:
        if not self.ttl:
            return
        while True:
            await asyncio.sleep(min(self.ttl, SWEEP_SECONDS))  # also before the first: the start is over
            if not self.active():
                continue
            try:
                removed = await self.sweep()
            except Exception:  # a failed pass is tried again with the next one
                log.exception("removing the run folders in %s failed", self.folder)
            else:
                if removed:
                    log.info("removed %d run folders past their TTL", removed)

    async def sweep(self) -> int:
        """One pass; how many folders it removed."""
        released = await asyncio.to_thread(released_folders, self.folder)
        uids = [uid for uid in due(released, time.time(), self.ttl) if not self.unfinished(uid)]
        if not uids:
            return 0
        return len(await asyncio.to_thread(remove_folders, [self.folder / uid for uid in uids]))
