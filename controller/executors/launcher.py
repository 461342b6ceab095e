"""The local executor's launcher: one small process that has imported the runner and forks a child per
run, where a new interpreter per run (``python -m runner``) costs some 60 ms of CPU, most of what a
trivial run costs the machine.

``python -m controller.executors.launcher`` reads requests on its standard input, one JSON object per
line: ``{"argv": [...], "cwd": "...", "env": {...}, "errors": "..."}``, and answers each on its standard
output with a line ``{"pid": N}`` (or ``{"error": "..."}``). Each child is forked in ``cwd``, starts a new
session (its process group is the run's), writes its standard error to ``errors`` (its log lines go to
the runner's ``--log-file``), takes ``env`` as its whole environment and runs ``runner.cli.main(argv)``:
what ``python -m runner ARGV`` in that folder would do. A run's outcome is its result file; the launcher
reaps each child as it ends and writes its exit status (negative: killed by that signal) to ``exit`` in
its folder, which tells how a runner that wrote no result died. The launcher exits when its standard
input closes (the controller stopped); the runs go on, and a restarted controller adopts them.

Each child first creates the run's ``pid`` file (exclusively) and only then runs anything; the launcher
answers once it has. A controller that finds a run's folder without a ``pid`` (it stopped between making
the folder and recording the pid) creates that file itself, saying ``never started``: whichever is first
wins, so such a run is either adopted or provably never started, never both.

Standard library and the runner only: this process stays small.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import runner.cli
from runbooks.contract import ExitCode

PID_FILE = "pid"  # in the run's folder: the runner's pid, or NEVER_STARTED
NEVER_STARTED = "never started"
READY = b"1"  # the child's word to the launcher: it claimed the pid file


def child(request: dict[str, Any], ready: int) -> int:
    """In the forked child: claim the run's ``pid`` file, say so on ``ready``, become the run's runner."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the runner waits for its script
    os.setsid()
    try:
        claim(PID_FILE, str(os.getpid()))  # in the run's folder
    except OSError as error:  # declared never started, or no room on its disk: nothing runs
        why = "was taken" if isinstance(error, FileExistsError) else f"could not be written: {error}"
        os.write(ready, f"its pid file {why}".encode())
        return ExitCode.NOT_EXECUTED
    os.write(ready, READY)
    os.close(ready)
    errors = os.open(request["errors"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)  # the same lines as the log file, unbounded
    os.dup2(errors, 2)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [sys.executable, "-m", "runner", *request["argv"]]
    return runner.cli.main(request["argv"])


def claim(path: str, content: str) -> None:
    """Create ``path`` holding ``content``, only if it does not exist (FileExistsError otherwise): the one
    atomic step that decides between a runner and a controller that finds the run without one."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(descriptor, content.encode())
    finally:
        os.close(descriptor)


# The run folders of the children that have not ended yet, by pid.
children: dict[int, str] = {}


def reap(_signum: int = 0, _frame: object = None) -> None:
    """Write the exit status of each child that ended to ``exit`` in its folder (while it is still a
    zombie, so the file is there once the process is gone), then reap it. Python may run this handler
    again within itself: a child is reaped, and forgotten, only after its status is written, and once."""
    while True:
        try:
            ended = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if ended is None:
            return
        folder = children.get(ended.si_pid)
        code = ended.si_status if ended.si_code == os.CLD_EXITED else -ended.si_status
        if folder is not None:
            with contextlib.suppress(OSError):  # its folder is gone: nobody asks any more
                Path(folder, "exit").write_text(str(code))
        with contextlib.suppress(ChildProcessError):  # reaped by the handler run within this one
            os.waitpid(ended.si_pid, 0)
        children.pop(ended.si_pid, None)


def launch(request: dict[str, Any]) -> int:
    """Fork the runner; its pid once it has claimed the run's ``pid`` file (OSError if it could not)."""
    ready, told = os.pipe()
    # The child is born in the run's folder: the controller knows a run's process by its working folder
    # (``LocalRun._alive``), and may look before a child that changed folder itself was ever scheduled.
    os.chdir(request["cwd"])
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})  # reaped only once its folder is known
    try:
        pid = os.fork()
        if pid:
            children[pid] = request["cwd"]
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    if pid:
        os.close(told)
        with os.fdopen(ready, "rb") as answer:
            said = answer.read()  # until the child says it claimed the pid file, or why not, or dies
        if said != READY:
            why = said.decode(errors="replace") or "its runner died first"
            raise OSError(f"the run in {request['cwd']} was not started: {why}")
        return pid
    os.close(ready)
    code = ExitCode.NOT_EXECUTED
    try:
        code = child(request, told)
    except BaseException:  # whatever happens, the child must not return into the loop
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(code))


def main() -> None:
    signal.signal(signal.SIGCHLD, reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the controller's Ctrl-C is for the controller
    answers = os.dup(1)  # a copy that the children close: their standard output is /dev/null
    for line in sys.stdin.buffer:
        try:
            answer: dict[str, Any] = {"pid": launch(json.loads(line))}
        except (OSError, ValueError, KeyError) as error:
            answer = {"error": f"{type(error).__name__}: {error}"}
        os.write(answers, json.dumps(answer).encode() + b"\n")


if __name__ == "__main__":
    main()
