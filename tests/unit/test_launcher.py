"""The local executor's launcher (:mod:`controller.executors.launcher`): real forked runners, no control
plane."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from controller.executors import RunRequest
from controller.executors.local import Launcher
from devcluster.controlplane import REPO
from devcluster.processes import wait_until
from tests.runbook_client import write_script

RUNS = 20


def launch_all(scripts: Path, folders: list[Path], then: Callable[[list[tuple[int, str]]], None]) -> None:
    """Launch a health_check runner in each folder, note each pid and its working folder as soon as the pid
    is known, call ``then`` with those while the launcher lives, then stop the launcher."""

    async def launch() -> None:
        launcher = Launcher()
        seen = []
        for folder in folders:
            folder.mkdir()
            request = RunRequest("ns", folder.name, folder.name, folder.name, "health_check", "day", {})
            env = {"PATH": os.environ["PATH"], "MDOPS_REQUEST": json.dumps(request.runner_request())}
            argv = ["--scripts", str(scripts), "--result-file", str(folder / "result.json")]
            argv += ["--log-file", str(folder / "runner.log")]
            pid = await launcher.launch(argv, folder, env, folder / "runner.err")
            seen.append((pid, os.readlink(f"/proc/{pid}/cwd")))
        try:
            then(seen)
        finally:
            assert launcher.process is not None and launcher.process.stdin is not None
            launcher.process.stdin.close()
            await launcher.process.wait()

    asyncio.run(launch())


def test_a_run_is_in_its_folder_as_soon_as_the_launcher_names_its_pid(tmp_path: Path):
    """The controller knows a run's process by its working folder, and may look at once: a runner that
    was not there yet looked finished, without a result (exit 125 under load)."""
    scripts = tmp_path / "scripts"
    write_script(scripts, "health_check", "sleep 1\n")
    folders = [tmp_path / f"run-{n}" for n in range(RUNS)]
    seen: list[tuple[int, str]] = []

    def wait(launched: list[tuple[int, str]]) -> None:
        seen.extend(launched)
        wait_until(lambda: all((folder / "exit").exists() for folder in folders), 60, "every exit status")

    launch_all(scripts, folders, wait)
    assert [cwd for _, cwd in seen] == [str(folder) for folder in folders]
    results = [json.loads((folder / "result.json").read_text()) for folder in folders]
    assert [result["exitCode"] for result in results] == [0] * RUNS
    assert {(folder / "exit").read_text() for folder in folders} == {"0"}


def test_the_launcher_writes_how_a_runner_died(tmp_path: Path):
    scripts = tmp_path / "scripts"
    write_script(scripts, "health_check", "sleep 60\n")
    folder = tmp_path / "run"

    def kill(launched: list[tuple[int, str]]) -> None:
        [(pid, _)] = launched
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: (folder / "exit").exists(), 30, "the exit status")

    launch_all(scripts, [folder], kill)
    assert (folder / "exit").read_text() == "-9"
    assert not (folder / "result.json").exists()


def test_the_launcher_imports_the_standard_library_and_the_runner_only() -> None:
    """Each controller start starts a launcher: importing the controller's settings with it (pydantic and
    all) cost every start 0.3 s of CPU, and the launcher its small size."""
    probe = "import sys; before = set(sys.modules); import controller.executors.launcher; "
    probe += "print(*(set(sys.modules) - before))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout.split()
    others = (
        {name.split(".")[0] for name in loaded}
        - sys.stdlib_module_names
        - {"controller", "runner", "runbooks"}
    )
    assert others == set(), (
        f"the launcher imports more than the standard library and the runner: {sorted(others)}"
    )
    ours = {name for name in loaded if name.startswith("controller.")}
    assert ours == {"controller.executors", "controller.executors.launcher"}, ours
