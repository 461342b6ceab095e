"""Run a local environment in the foreground or detached, and stop it again.

``make cluster`` and ``make up`` share this: the foreground process owns every
child and stops them all on Ctrl-C or SIGTERM; ``DETACH=1`` starts that same
foreground process in its own session and returns once it reports ready (its
env file exists); ``make down`` signals it through its pid file and waits until
it is gone.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from devcluster.private import open_private, write_private


class AlreadyRunning(RuntimeError):
    pass


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
    """Start the environment, write ``<state>/<name>.env``, wait for a signal, stop it."""
    state.mkdir(parents=True, exist_ok=True)
    pid_file, env_file = state / f"{name}.pid", state / f"{name}.env"
    pid = running_pid(pid_file)
    if pid is not None and pid != os.getpid():
        raise AlreadyRunning(f"{name} is already running (pid {pid}); `make down` stops it")
    env_file.unlink(missing_ok=True)
    pid_file.write_text(str(os.getpid()))
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
            while not stopping:
                dead = env.dead()
                if dead:
                    print(
                        f"{dead[0].name} exited unexpectedly; see {dead[0].log}", file=sys.stderr, flush=True
                    )
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
