"""A local run on a full disk: the local executor and its launcher, with real forked runners, in a mount
namespace of their own (``unshare``, as any user may) where the state folder is a small tmpfs. No control
plane."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from controller.executors.local import ROOM_BYTES
from devcluster.controlplane import REPO
from tests.runbook_client import write_script

# Runs in the namespace: mounts the tmpfs on the state folder, then does what the scenario asks with the
# local executor, and prints what it saw as JSON.
SCENARIO = """
import asyncio, json, os, subprocess, sys
from pathlib import Path
from controller.executors import RunRequest
from controller.executors.local import LAUNCHER_FILE, Launcher, LocalExecutor
from controller.settings import ControllerSettings

scenario, state, scripts = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(state)], check=True)
request = RunRequest("ns", "rb", "uid-1", "req-1", "health_check", "day", {})
executor = LocalExecutor(ControllerSettings(kubeconfig="/dev/null", state_dir=state, scripts_dir=scripts))
folder = executor.folder(request)


def fill():
    try:
        with open(state / "fill", "ab") as file:
            while True:
                file.write(bytes(4096))
                file.flush()
    except OSError:
        pass


def free():
    stats = os.statvfs(state)
    return stats.f_bavail * stats.f_frsize


async def main():
    seen = {}
    try:
        if scenario == "full-before":
            fill()
        if scenario == "pid":  # the launcher's own file there, then the disk full: only the pid file fails
            folder.mkdir(parents=True)
            (folder / LAUNCHER_FILE).write_text("0")
            fill()
            await Launcher().launch([], folder, {}, folder / "runner.err")
        await executor.prepare(request)
        run = await executor.start(request)
        seen["result"] = await run.wait(lambda: None)
    except OSError as error:
        seen["error"] = str(error)
    seen["free"] = free()
    seen["files"] = sorted(path.name for path in folder.iterdir()) if folder.exists() else []
    print(json.dumps(seen))


asyncio.run(main())
"""


def scenario(name: str, tmp_path: Path, script: str = "exit 0\n") -> dict:
    state, scripts = tmp_path / "state", tmp_path / "scripts"
    state.mkdir()
    write_script(scripts, "health_check", script.replace("STATE", str(state)))
    namespace = ["unshare", "--user", "--map-root-user", "--mount"]
    ran = subprocess.run(
        [*namespace, sys.executable, "-c", SCENARIO, name, str(state), str(scripts)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout.splitlines()[-1])


def test_a_script_that_fills_the_disk_keeps_its_result(tmp_path: Path):
    """The run's folder keeps room for its result, which the runner frees just before it writes it. Before,
    the result was lost: the run ran, and was recorded 125, 'the runner wrote an invalid result' (an empty
    result file)."""
    script = """
        echo "INFO: filling the disk"
        cat /dev/zero > STATE/filled 2>/dev/null || true
        echo "WARNING: the disk is full" >&2
        exit 0
    """
    seen = scenario("fill-in-run", tmp_path, script)
    assert seen["result"]["exitCode"] == 0, seen
    assert seen["result"]["result"] == "success"
    assert seen["free"] < ROOM_BYTES  # the script did fill it
    assert "room" not in seen["files"] and "result.json" in seen["files"]


def test_a_disk_full_before_the_start_runs_nothing_and_says_so(tmp_path: Path):
    seen = scenario("full-before", tmp_path)
    assert "result" not in seen
    assert "No space left on device" in seen["error"]
    assert "no room for the run's files in" in seen["error"]
    assert seen["files"] == []  # no launcher asked, no partial room left


def test_a_pid_file_that_cannot_be_written_is_said_so_not_taken(tmp_path: Path):
    """The launcher's child could not claim the run's pid file because the disk is full: the launcher says
    so. Before, it said the file 'was taken' (by a controller that declared the run never started)."""
    seen = scenario("pid", tmp_path)
    assert "result" not in seen
    assert "its pid file could not be written" in seen["error"], seen
    assert "No space left on device" in seen["error"]


def test_a_result_that_finds_no_room_leaves_no_empty_result_file(tmp_path: Path):
    """The room gone (here the script removed it), the runner cannot write its result: the run ends as one
    whose runner wrote none, never with an empty result file read as 'an invalid result'."""
    script = """
        rm -f STATE/ns/uid-1/room
        cat /dev/zero > STATE/filled 2>/dev/null || true
        exit 0
    """
    seen = scenario("fill-in-run", tmp_path, script)
    assert seen["result"]["exitCode"] == 125, seen
    assert "without writing a result" in seen["result"]["message"], seen
    assert "result.json" not in seen["files"]
