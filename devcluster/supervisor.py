"""Supervise a local environment: restart its crashed components, run it in the foreground or detached,
and stop it again.

``make cluster`` and ``make up`` share this. :class:`Supervisor` restarts a component that exits, as a
kubelet restarts a pod's containers: after a wait that doubles with each crash in a row (:class:`Backoff`),
with a line saying so and a record of every component (``components.json`` in the environment's folder)
that ``python -m devcluster status`` prints; the tests' stacks run the same supervisor. The foreground
process owns every child and stops them all on Ctrl-C or SIGTERM, and nothing else stops the environment;
``DETACH=1`` starts that same foreground process in its own session and returns once it reports ready (its
env file exists); ``make down`` signals it through its pid file and waits until it is gone.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devcluster.private import open_private, write_private
from devcluster.processes import Process, adopt_orphans, adopts_orphans, children
from runbooks.contract import format_time, now

RECORD = "components.json"


class AlreadyRunning(RuntimeError):
    pass


@dataclass(frozen=True)
class Backoff:
    """How long the supervisor waits before it restarts a component that exited: ``initial`` seconds after a
    first crash, twice as long after each further crash in a row, at most ``cap``; a component that ran
    ``reset_after`` seconds before it exited starts over at ``initial``. A kubelet does the same with 10 s,
    5 min and 10 min; a laptop's stack should come back sooner."""

    initial: float = 1.0
    cap: float = 60.0
    reset_after: float = 120.0

    def crashes(self, before: int, ran: float) -> int:
        """Crashes in a row, this one included, of a component that had run ``ran`` seconds."""
        return 1 if ran >= self.reset_after else before + 1

    def delay(self, crashes: int) -> float:
        return min(self.cap, self.initial * 2 ** (crashes - 1))


def exit_text(code: int) -> str:
    """An exit as ``subprocess`` reports it, with the signal's name: ``-9 (SIGKILL)``, ``1``."""
    if code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return str(code)


def duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.2g} s"
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 6000:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def restart_message(name: str, code: int, ran: float, delay: float, restart: int, crashes: int,
                    backoff: Backoff, log: Path) -> str:  # fmt: skip
    """The line ``make up`` prints when a component exits."""
    line = (
        f"{name} exited with {exit_text(code)} after {duration(ran)}; "
        f"restarting in {duration(delay)} (restart {restart})"
    )
    if crashes > 1:
        line += (
            f"; it keeps crashing ({crashes} times in a row, each within {duration(backoff.reset_after)} "
            f"of starting), so each wait doubles, up to {duration(backoff.cap)}: see {log}"
        )
    return line


def ago(seconds: float) -> str:
    """The time ``seconds`` ago (in the future when negative), as mdops writes times."""
    return format_time(datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds))


def _say(line: str) -> None:
    print(f"[mdops] {line}", flush=True)


@dataclass
class Component:
    """What the supervisor knows of one component; :meth:`record` is its entry in ``components.json``."""

    process: Process
    restarts: int = 0
    crashes: int = 0  # in a row: what the wait before the next restart grows with
    restart_at: float | None = None  # set while it waits to be restarted (time.monotonic)
    restart_at_text: str | None = None
    exits: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=10))
    message: str = ""
    held: bool = False  # stopped on purpose (Supervisor.hold): not restarted

    def record(self, stopped: bool) -> dict[str, Any]:
        if stopped or self.held:
            state = "stopped"
        elif self.restart_at is not None:
            state = "waiting to restart"
        else:
            state = "running"
        return {
            "pid": self.process.popen.pid,
            "state": state,
            "restarts": self.restarts,
            "started_at": ago(time.monotonic() - self.process.started),
            "restart_at": self.restart_at_text if state == "waiting to restart" else None,
            "crashes_in_a_row": self.crashes,
            "last_exit": self.exits[-1] if self.exits else None,
            "exits": list(self.exits),  # the last ten
            "message": self.message,
            "log": str(self.process.log),
        }


class Supervisor:
    """Restarts each component that exits, until :meth:`stop`, from a thread of its own (in the process that
    started the components: ``make up``'s, or a test's), which also stops them in the end: a process it
    restarted dies when that thread ends (``PR_SET_PDEATHSIG`` follows the thread that started it). Each
    exit and restart is said (``say``) and written to ``record`` (atomically, for ``devcluster status``).

    In a process that adopts orphans (``make up``'s: :func:`devcluster.processes.adopt_orphans`) every
    other child is an orphan of a component, such as the run of a controller that was killed (it outlives
    the controller so that the restarted one adopts it): the supervisor reaps those that end and, once the
    components are stopped, stops those left (SIGTERM to their process group, later SIGKILL)."""

    POLL_SECONDS = 0.1
    ORPHANS_GRACE_SECONDS = 10.0

    def __init__(self, processes: Sequence[Process], record: Path, backoff: Backoff | None = None,
                 say: Callable[[str], None] = _say):  # fmt: skip
        self.components = [Component(process) for process in processes]
        self.record = record
        self.backoff = backoff or Backoff()
        self.say = say
        self.adopts = adopts_orphans()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"supervisor of {record.parent}", daemon=True)

    def start(self) -> Supervisor:
        self._write(stopped=False)
        self._thread.start()
        return self

    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop restarting, and stop every component, newest first."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def hold(self, name: str) -> None:
        """Stop the component ``name`` and leave it stopped (as when a person stops a part on purpose, to see
        what the others do without it): it is not restarted."""
        component = next(c for c in self.components if c.process.name == name)
        component.held = True  # before it stops, so that the supervisor's thread does not restart it
        component.process.stop()
        self._write(stopped=False)

    def _run(self) -> None:
        try:
            while not self._stopping.wait(self.POLL_SECONDS):
                for component in self.components:
                    self._check(component)
                self._reap_orphans()
        except Exception:
            self.say(f"the supervisor failed; stopping every component\n{traceback.format_exc()}")
        finally:
            for component in reversed(self.components):
                component.process.stop()
            self._stop_orphans()
            self._write(stopped=True)

    def _orphans(self) -> list[int]:
        """This process's children that are no component: orphans it adopted (it starts nothing else
        once the components run)."""
        if not self.adopts:
            return []
        components = {component.process.popen.pid for component in self.components}
        return [pid for pid in children(os.getpid()) if pid not in components]

    def _reap_orphans(self) -> list[int]:
        """Reap the orphans that ended; those still running."""
        running = []
        for pid in self._orphans():
            try:
                if os.waitpid(pid, os.WNOHANG) == (0, 0):
                    running.append(pid)
            except ChildProcessError:
                pass
        return running

    def _stop_orphans(self) -> None:
        for sig, grace in ((signal.SIGTERM, self.ORPHANS_GRACE_SECONDS), (signal.SIGKILL, 5.0)):
            orphans = self._reap_orphans()
            if not orphans:
                return
            self.say(f"stopping {len(orphans)} process(es) the components left behind: {orphans}")
            for pid in orphans:
                try:
                    os.killpg(pid, sig)  # a run's runner leads its own process group, its script in it
                except ProcessLookupError:  # not a group leader (or gone)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while self._reap_orphans() and time.monotonic() < deadline:
                time.sleep(0.1)

    def _check(self, component: Component) -> None:
        process = component.process
        if component.held:
            return
        if component.restart_at is None:
            if process.alive():
                return
            code, ran = process.popen.returncode, time.monotonic() - process.started
            component.crashes = self.backoff.crashes(component.crashes, ran)
            delay = self.backoff.delay(component.crashes)
            component.restart_at = time.monotonic() + delay
            component.restart_at_text = ago(-delay)
            component.exits.append({
                "at": now(), "code": code, "exit": exit_text(code), "ran_seconds": round(ran, 3),
                "restart_in_seconds": delay,
            })  # fmt: skip
            component.message = restart_message(
                process.name, code, ran, delay, component.restarts + 1, component.crashes, self.backoff,
                process.log,
            )  # fmt: skip
            self.say(component.message)
        elif time.monotonic() >= component.restart_at:
            component.restarts += 1
            component.restart_at = None
            last = component.exits[-1]
            marker = (
                f"{now()} restart {component.restarts} by the supervisor (it exited with {last['exit']} "
                f"after {duration(last['ran_seconds'])})"
            )
            try:
                process.restart(marker)
            except OSError as error:  # its binary is gone, ...: the next check sees it exited again
                self.say(f"{process.name} could not be started again: {error}")
        else:
            return
        self._write(stopped=False)

    def _write(self, stopped: bool) -> None:
        record = {
            "supervisor_pid": os.getpid(),
            "updated_at": now(),
            "backoff": {"initial": self.backoff.initial, "cap": self.backoff.cap,
                        "reset_after": self.backoff.reset_after},
            "components": {c.process.name: c.record(stopped) for c in self.components},
        }  # fmt: skip
        write_private(self.record, json.dumps(record, indent=2) + "\n")


def status_table(record: dict[str, Any]) -> str:
    """A ``components.json`` for people (``python -m devcluster status``)."""
    rows = [("COMPONENT", "PID", "STATE", "RESTARTS", "LAST EXIT")]
    for name, component in record["components"].items():
        last = component["last_exit"]
        running = component["state"] == "running"
        rows.append((
            name,
            str(component["pid"]) if running else "-",
            component["state"] + (f" at {component['restart_at']}" if component["restart_at"] else ""),
            str(component["restarts"]),
            f"{last['exit']} after {duration(last['ran_seconds'])}, at {last['at']}" if last else "-",
        ))  # fmt: skip
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    )


def running_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


def write_env(env_file: Path, values: dict[str, str]) -> None:
    """``export KEY=value`` lines, written atomically and for its owner only (it holds the API's tokens):
    ``. <env file>`` gives them to the shell and to the programs it starts (``mdops`` reads ``MDOPS_API_URL``
    and ``MDOPS_API_TOKEN``); :func:`read_env` reads them back (``make demo``)."""
    write_private(env_file, "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items()))


def read_env(env_file: Path) -> dict[str, str]:
    words = (shlex.split(line)[1] for line in env_file.read_text().splitlines() if line.strip())
    return dict(word.split("=", 1) for word in words)


def foreground(
    name: str,
    state: Path,
    start: Callable[[], AbstractContextManager[Iterator]],
    describe: Callable[[object], dict[str, str]],
    banner: Callable[[object], str],
) -> int:
    """Start the environment (its supervisor restarts what crashes), write ``<state>/<name>.env``, wait for a
    signal, stop it."""
    state.mkdir(parents=True, exist_ok=True)
    pid_file, env_file = state / f"{name}.pid", state / f"{name}.env"
    pid = running_pid(pid_file)
    if pid is not None and pid != os.getpid():
        raise AlreadyRunning(f"{name} is already running (pid {pid}); `make down` stops it")
    env_file.unlink(missing_ok=True)
    pid_file.write_text(str(os.getpid()))
    adopt_orphans()  # a run that outlives its killed controller stays ours to stop
    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        with start() as env:
            write_env(env_file, describe(env))
            print(banner(env), flush=True)
            while not stopping:  # a crashed component is the supervisor's to restart
                if not env.supervisor.running():
                    print(f"{name}'s supervisor failed (see above); stopping", file=sys.stderr, flush=True)
                    return 1
                time.sleep(0.5)
            print(f"stopping {name} ...", flush=True)
        return 0
    finally:
        env_file.unlink(missing_ok=True)
        pid_file.unlink(missing_ok=True)


def detach(name: str, state: Path, argv: list[str], timeout: float) -> int:
    """Start ``argv`` (a foreground run) in the background; return once it is ready."""
    state.mkdir(parents=True, exist_ok=True)
    pid_file, env_file, log = state / f"{name}.pid", state / f"{name}.env", state / f"{name}.log"
    pid = running_pid(pid_file)
    if pid is not None:
        print(f"{name} is already running (pid {pid}); its settings are in {env_file}; `make down` stops it")
        return 0
    env_file.unlink(missing_ok=True)
    with open_private(log, append=False) as out:  # it shows the banner, tokens included
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    shown = 0
    while not env_file.exists():
        lines = log.read_text(errors="replace").splitlines()
        for line in lines[shown:]:
            print(line, flush=True)
        shown = len(lines)
        if process.poll() is not None:
            print(f"{name} failed to start (exit {process.returncode}); full log: {log}", file=sys.stderr)
            return 1
        if time.monotonic() > deadline:
            process.terminate()
            print(f"{name} was not ready after {timeout:.0f}s; full log: {log}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    for line in log.read_text(errors="replace").splitlines()[shown:]:
        print(line, flush=True)
    return 0


def down(name: str, state: Path, timeout: float = 60) -> int:
    pid = running_pid(state / f"{name}.pid")
    if pid is None:
        print(f"{name} is not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running_pid(state / f"{name}.pid") == pid:
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)  # its children die with it (PR_SET_PDEATHSIG)
            break
        time.sleep(0.2)
    print(f"{name} stopped")
    return 0
