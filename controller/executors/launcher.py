"""The local executor's launcher: one small process that has imported the runner and forks a child per
run, where a new interpreter per run (``python -m runner``) costs some 60 ms of CPU, most of what a
trivial run costs the machine.

``python -m controller.executors.launcher`` reads requests on its standard input, one JSON object per
line: ``{"argv": [...], "cwd": "...", "env": {...}, "log": "..."}``, and answers each on its standard
output with a line ``{"pid": N}`` (or ``{"error": "..."}``). Each child is forked in ``cwd``, starts a new
session (its process group is the run's), writes its standard output and error to ``log``, takes
``env`` as its whole environment and runs ``runner.cli.main(argv)``: what ``python -m runner ARGV`` in
that folder would do. Nobody waits for the children (the kernel reaps them: the launcher ignores
SIGCHLD); a run's outcome is its result file. The launcher exits when its standard input closes (the
controller stopped); the runs go on, and a restarted controller adopts them.

Standard library and the runner only: this process stays small.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from typing import Any

import runner.cli
from runbooks.contract import ExitCode


def child(request: dict[str, Any]) -> int:
    """In the forked child: become the run's runner."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the runner waits for its script
    os.setsid()
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [sys.executable, "-m", "runner", *request["argv"]]
    return runner.cli.main(request["argv"])


def launch(request: dict[str, Any]) -> int:
    # The child is born in the run's folder: the controller knows a run's process by its working folder
    # (``LocalRun._alive``), and may look before a child that changed folder itself was ever scheduled.
    os.chdir(request["cwd"])
    pid = os.fork()
    if pid:
        return pid
    code = ExitCode.NOT_EXECUTED
    try:
        code = child(request)
    except BaseException:  # whatever happens, the child must not return into the loop
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(code))


def main() -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the controller's Ctrl-C is for the controller
    answers = os.dup(1)  # the children's standard output is their log: answers go to a copy
    for line in sys.stdin.buffer:
        try:
            answer: dict[str, Any] = {"pid": launch(json.loads(line))}
        except (OSError, ValueError, KeyError) as error:
            answer = {"error": f"{type(error).__name__}: {error}"}
        os.write(answers, json.dumps(answer).encode() + b"\n")


if __name__ == "__main__":
    main()
