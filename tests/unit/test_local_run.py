"""Whether a local run that no controller watches may still run (its Runbook went unseen: deleted by force
while no controller ran), which keeps its target's lock taken (:meth:`LocalRun.over`): with real processes
in a session of their own, as the launcher starts a runner, and no control plane."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from controller.executors.launcher import PID_FILE
from controller.executors.local import LocalRun
from devcluster.processes import wait_until

# A runner's stand-in: claims its folder (its pid), starts a child in its session as a script's daemon
# would, and ends once told to (``go``), with a result or (``die``) killed before it wrote one.
RUNNER = f"""
import os, pathlib, subprocess, sys, time
pathlib.Path({PID_FILE!r}).write_text(str(os.getpid()))
pathlib.Path("child").write_text(str(subprocess.Popen(["sleep", "600"]).pid))
while not pathlib.Path("go").exists():
    time.sleep(0.02)
pathlib.Path("result.json").write_text("{{}}")
"""


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def run(tmp_path: Path):
    """A runner's stand-in in its folder: the run, the stand-in's process, its child's pid."""
    folder = tmp_path / "ns" / "uid"
    folder.mkdir(parents=True)
    runner = subprocess.Popen([sys.executable, "-c", RUNNER], cwd=folder, start_new_session=True)
    child = int(
        wait_until(lambda: (folder / "child").exists() and (folder / "child").read_text(), 30, "a child")
    )
    yield LocalRun(folder, 300), runner, child
    for pid in (runner.pid, child):
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    runner.wait()


def test_a_run_whose_runner_lives_may_still_run(run):
    local, _, child = run
    assert not asyncio.run(local.over())
    assert alive(child)


def test_a_runner_killed_before_its_result_has_what_it_left_ended(run):
    local, runner, child = run
    runner.kill()
    runner.wait()
    assert asyncio.run(local.over())
    assert not alive(child)


def test_what_a_script_left_after_its_runners_own_end_is_left_alone_as_for_a_watched_run(run):
    local, runner, child = run
    (local.folder / "go").touch()
    runner.wait(30)
    assert asyncio.run(local.over())
    assert alive(child)
