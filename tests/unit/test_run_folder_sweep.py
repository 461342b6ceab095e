"""Which local run folders go, and when (:mod:`controller.executors.local`): the TTL as a pure function, and
passes of the sweeper over real folders with real processes, no control plane."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from controller.executors.launcher import NEVER_STARTED, PID_FILE
from controller.executors.local import RELEASED_FILE, LocalRun, Sweeper, due
from controller.settings import ControllerSettings

TTL = 60
NOW = 1_000_000.0


def test_a_folder_is_due_once_its_ttl_is_over_since_its_release():
    released = {"old": NOW - TTL - 1, "just": NOW - TTL, "young": NOW - TTL + 1}
    assert due(released, NOW, TTL) == ["just", "old"]


def test_no_folder_is_due_with_a_ttl_of_zero():
    assert due({"old": 0.0}, NOW, 0) == []


def folder(state: Path, uid: str, pid: str = "999999999", released_ago: float | None = None) -> Path:
    """A run folder as a finished run leaves it; released ``released_ago`` seconds ago (None: not)."""
    path = state / "ns" / uid
    path.mkdir(parents=True)
    (path / PID_FILE).write_text(pid)
    for name in ("runner.log", "runner.log.1", "result.json", "exit", "runner.err", "launcher"):
        (path / name).write_text("{}")
    if released_ago is not None:
        asyncio.run(LocalRun(path, 300).release())
        at = (path / RELEASED_FILE).stat().st_mtime - released_ago
        os.utime(path / RELEASED_FILE, (at, at))
    return path


def sweeper(state: Path, ttl: int = TTL, unfinished: frozenset[str] = frozenset()) -> Sweeper:
    settings = ControllerSettings(
        in_cluster=True, state_dir=state, namespace="ns", run_folder_ttl_seconds=ttl
    )
    return Sweeper(settings, lambda: True, lambda uid: uid in unfinished)


def remaining(state: Path) -> list[str]:
    return sorted(path.name for path in (state / "ns").iterdir())


def test_a_pass_removes_the_released_folders_past_their_ttl_only(tmp_path: Path):
    folder(tmp_path, "expired", released_ago=TTL + 5)
    folder(tmp_path, "never-started", pid=NEVER_STARTED, released_ago=TTL + 5)
    folder(tmp_path, "young", released_ago=TTL - 5)
    folder(tmp_path, "unreleased")  # its result not recorded (yet): the proof of what ran
    folder(tmp_path, "unfinished", released_ago=TTL + 5)  # released, its Runbook not finished yet
    assert asyncio.run(sweeper(tmp_path, unfinished=frozenset({"unfinished"})).sweep()) == 2
    assert remaining(tmp_path) == ["unfinished", "unreleased", "young"]


def test_a_folder_stays_while_a_process_of_its_runs_session_lives(tmp_path: Path):
    """The runner's pid is its session's: what its script left behind is in that session."""
    session = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        folder(tmp_path, "lingering", pid=str(session.pid), released_ago=TTL + 5)
        assert asyncio.run(sweeper(tmp_path).sweep()) == 0
        assert remaining(tmp_path) == ["lingering"]
    finally:
        session.kill()
        session.wait()
    assert asyncio.run(sweeper(tmp_path).sweep()) == 1
    assert remaining(tmp_path) == []


def test_a_folder_partly_removed_by_a_killed_controller_is_removed_at_the_next_pass(tmp_path: Path):
    path = folder(tmp_path, "partly", released_ago=TTL + 5)
    for name in ("pid", "runner.log", "result.json"):
        (path / name).unlink()
    (path / "left").mkdir()  # what a script may have left
    assert asyncio.run(sweeper(tmp_path).sweep()) == 1
    assert remaining(tmp_path) == []


def test_with_a_ttl_of_zero_the_sweeper_never_looks(tmp_path: Path):
    folder(tmp_path, "kept", released_ago=10 * TTL)
    asyncio.run(asyncio.wait_for(sweeper(tmp_path, 0).run(), 5))  # returns at once
    assert remaining(tmp_path) == ["kept"]


def test_a_pass_before_the_first_run_finds_nothing(tmp_path: Path):
    assert asyncio.run(sweeper(tmp_path).sweep()) == 0


def test_releasing_a_folder_that_is_gone_makes_nothing(tmp_path: Path):
    asyncio.run(LocalRun(tmp_path / "gone", 300).release())
    assert not (tmp_path / "gone").exists()
