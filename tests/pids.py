"""Processes the tests start: by pid, for tests that check that nothing of what they started is left behind;
and with Ctrl-C as a terminal delivers it, for tests that press it."""

from __future__ import annotations

from pathlib import Path

# A command's prefix that starts it with SIGINT at its default, as a terminal starts it: make test run in the
# background by a shell without job control (`make test &` in a script) has SIGINT ignored, and a process
# keeps an ignored signal through exec, so that each mdops the tests start would ignore their Ctrl-C.
WITH_CTRL_C = ("env", "--default-signal=INT")


def all_gone(pids: list[int]) -> bool:
    """Whether every one of ``pids`` has exited (a zombie has: only its exit status is left)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        if state != "Z":
            alive.append(pid)
    return not alive
