"""Processes by pid, for tests that check that nothing of what they started is left behind."""

from __future__ import annotations

from pathlib import Path


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
