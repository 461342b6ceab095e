"""The local executor's launcher (:mod:`controller.executors.launcher`): real forked runners, no control
plane."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from controller.executors.local import Launcher
from devcluster.processes import wait_until
from tests.runbook_client import write_script

RUNS = 20


def test_a_run_is_in_its_folder_as_soon_as_the_launcher_names_its_pid(tmp_path: Path):
    """The controller knows a run's process by its working folder, and may look at once: a runner that
    was not there yet looked finished, without a result (exit 125 under load)."""
    scripts = tmp_path / "scripts"
    write_script(scripts, "health_check", "sleep 1\n")
    folders = [tmp_path / f"run-{n}" for n in range(RUNS)]

    async def launch_all() -> list[tuple[int, str]]:
        launcher = Launcher()
        seen = []
        for folder in folders:
            folder.mkdir()
            argv = ["--command", "health_check", "--request-id", folder.name, "--window", "day"]
            argv += ["--scripts", str(scripts), "--result-file", str(folder / "result.json")]
            pid = await launcher.launch(argv, folder, dict(os.environ), folder / "runner.log")
            seen.append((pid, os.readlink(f"/proc/{pid}/cwd")))
        assert launcher.process is not None and launcher.process.stdin is not None
        launcher.process.stdin.close()
        await launcher.process.wait()
        return seen

    seen = asyncio.run(launch_all())
    assert [cwd for _, cwd in seen] == [str(folder) for folder in folders]
    wait_until(lambda: all((folder / "result.json").exists() for folder in folders), 60, "every result")
    results = [json.loads((folder / "result.json").read_text()) for folder in folders]
    assert [result["exitCode"] for result in results] == [0] * RUNS
