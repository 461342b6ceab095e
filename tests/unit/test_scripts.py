"""The reference runbook scripts, run as processes against a real simulator under the runner's contract."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runbooks.contract import Command
from runner import report
from sim.process import SimProcess, run_sim

SCRIPTS = Path(__file__).resolve().parents[2] / "examples" / "scripts"
COMMANDS = [c.value for c in Command]
HEALTH_KEYS = set(report.HEALTH_KEYS)  # the runner's contract is what the scripts must report
LINE = re.compile(r"^(INFO|WARNING|ERROR|DEBUG): ")
# the parts of the simulator's status that only an action changes (throughput and backlog move by themselves)
STABLE_KEYS = (
    "state",
    "active_source",
    "window",
    "expected_total",
    "active_total",
    "matched_total",
    "failover_latency_ms",
    "last_switch",
    "faults",
    "transition",
)


@dataclass
class Run:
    code: int
    output: str
    report: dict[str, Any] | None

    def lines(self, level: str) -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith(f"{level}: ")]


@pytest.fixture
def sim() -> Iterator[SimProcess]:
    with run_sim(args=["--failover-ms", "200"]) as proc:
        yield proc


def run_script(command: str, tmp_path: Path, sim_url: str | None, **env: str) -> Run:
    report = tmp_path / f"report-{command}.json"
    report.unlink(missing_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith("MDOPS_")}
    base.update(
        MDOPS_COMMAND=command,
        MDOPS_REQUEST_ID=f"req-{command}",
        MDOPS_MODE="live",
        MDOPS_WINDOW="day",
        MDOPS_PROFILE="primary",
        MDOPS_CONFIG="default",
        MDOPS_REASON="unit test",
        MDOPS_REQUESTED_BY="tester",
        MDOPS_ENFORCE="0",
        MDOPS_DRY_RUN="0",
        MDOPS_TIMEOUT_SECONDS="60",
        MDOPS_REPORT_FILE=str(report),
    )
    if sim_url is not None:
        base["MDOPS_SIM_URL"] = sim_url
    base.update(env)
    proc = subprocess.run(
        [str(SCRIPTS / command)], env=base, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    output = proc.stdout + proc.stderr
    for line in output.splitlines():
        assert LINE.match(line), f"log line without a level prefix: {line!r}\n{output}"
    return Run(proc.returncode, output, json.loads(report.read_text()) if report.exists() else None)


def stable(status: dict[str, Any]) -> dict[str, Any]:
    return {key: status[key] for key in STABLE_KEYS}


def assert_health(run: Run, sim: SimProcess) -> dict[str, Any]:
    assert run.report is not None, run.output
    health = run.report["health"]
    assert set(health) == HEALTH_KEYS
    generated = dt.datetime.fromisoformat(health["generated_at"])
    assert generated.utcoffset() == dt.timedelta(hours=8)
    status = sim.status()
    for key in ("expected_total", "active_total", "matched_total", "ignored_total"):
        assert health[key] == status[key], key
    assert run.report["state"] == {
        "environment_mode": "live",
        "active_profile": status["active_source"],
        "active_window": status["window"],
    }
    return health


def test_scripts_are_executable() -> None:
    for command in COMMANDS:
        path = SCRIPTS / command
        assert path.is_file() and os.access(path, os.X_OK), command
        assert path.read_text().startswith("#!/usr/bin/env python3\n"), command


def test_health_check(sim: SimProcess, tmp_path: Path) -> None:
    run = run_script("health_check", tmp_path, sim.url)
    assert run.code == 0, run.output
    health = assert_health(run, sim)
    assert health["coverage_ratio"] == 1.0
    assert health["failover_latency_ms"] is None
    assert run.report is not None and run.report["state"]["active_profile"] == "primary"


def test_failover_then_failback(sim: SimProcess, tmp_path: Path) -> None:
    run = run_script("failover", tmp_path, sim.url)
    assert run.code == 0, run.output
    health = assert_health(run, sim)
    assert 160 <= health["failover_latency_ms"] <= 240
    assert sim.status()["active_source"] == "backup"

    again = run_script("failover", tmp_path, sim.url)
    assert again.code == 1
    assert any("already backup" in line for line in again.lines("ERROR")), again.output
    assert again.report is not None and again.report["state"]["active_profile"] == "backup"

    back = run_script("failback", tmp_path, sim.url)
    assert back.code == 0, back.output
    assert assert_health(back, sim)["failover_latency_ms"] is not None
    assert sim.status()["active_source"] == "primary"


def test_drill_ends_on_primary_with_the_failover_latency(sim: SimProcess, tmp_path: Path) -> None:
    run = run_script("drill", tmp_path, sim.url)
    assert run.code == 0, run.output
    health = assert_health(run, sim)
    status = sim.status()
    assert status["active_source"] == "primary"
    assert status["last_switch"]["action"] == "failback"
    (leg,) = [line for line in run.lines("INFO") if "failover completed in" in line]
    assert f"in {health['failover_latency_ms']} ms" in leg
    assert 160 <= health["failover_latency_ms"] <= 240
    assert health["coverage_ratio"] == 1.0


def test_drill_fails_when_the_backup_delivers_nothing(sim: SimProcess, tmp_path: Path) -> None:
    assert sim.request("POST", "/admin/faults", {"stall_source": "backup"})[0] == 200
    run = run_script("drill", tmp_path, sim.url)
    assert run.code == 1, run.output
    assert any("backup source delivers no data" in line for line in run.lines("ERROR"))
    assert sim.status()["active_source"] == "primary"  # failed back anyway
    assert run.report is not None and run.report["state"]["active_profile"] == "primary"


def test_stop_start_restart(sim: SimProcess, tmp_path: Path) -> None:
    run = run_script("stop", tmp_path, sim.url)
    assert run.code == 0, run.output
    assert sim.status()["state"] == "stopped"
    assert run.report is not None and run.report["health"] is None
    assert run.report["state"]["active_profile"] == "primary"

    run = run_script("start", tmp_path, sim.url, MDOPS_WINDOW="night")
    assert run.code == 0, run.output
    health = assert_health(run, sim)
    assert (health["coverage_ratio"], health["expected_total"]) == (1.0, 896)
    assert run.report is not None and run.report["state"]["active_window"] == "night"

    run = run_script("restart", tmp_path, sim.url, MDOPS_WINDOW="auto")
    assert run.code == 0, run.output
    assert assert_health(run, sim)["coverage_ratio"] == 1.0
    assert sim.status()["window"] == "night"


@pytest.mark.parametrize("command", COMMANDS)
def test_dry_run_changes_nothing(sim: SimProcess, tmp_path: Path, command: str) -> None:
    before = stable(sim.status())
    run = run_script(command, tmp_path, sim.url, MDOPS_DRY_RUN="1", MDOPS_WINDOW="night")
    refused = command == "failback"  # already on primary: the dry run says the real run would fail
    assert run.code == (1 if refused else 0), run.output
    assert "dry run:" in run.output
    assert stable(sim.status()) == before
    assert run.report is not None
    assert run.report["state"]["active_profile"] == "primary"
    if command != "stop":
        assert_health(run, sim)


def test_dry_run_plans_the_switch(sim: SimProcess, tmp_path: Path) -> None:
    run = run_script("failover", tmp_path, sim.url, MDOPS_DRY_RUN="1")
    assert "INFO: dry run: would fail over from primary to backup" in run.output.splitlines()
    assert sim.request("POST", "/admin/failover?wait=true")[0] == 200
    before = stable(sim.status())
    run = run_script("failback", tmp_path, sim.url, MDOPS_DRY_RUN="1")
    assert run.code == 0, run.output
    assert "INFO: dry run: would fail back from backup to primary" in run.output.splitlines()
    assert stable(sim.status()) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_sim_url_is_a_configuration_error(tmp_path: Path, command: str) -> None:
    run = run_script(command, tmp_path, None)
    assert run.code == 2
    assert any("MDOPS_SIM_URL" in line for line in run.lines("ERROR")), run.output
    assert run.report is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MDOPS_DRY_RUN": "maybe"}, "MDOPS_DRY_RUN"),
        ({"MDOPS_COMMAND": "stop"}, "MDOPS_COMMAND"),
        ({"MDOPS_WINDOW": "evening"}, "MDOPS_WINDOW"),
        ({"MDOPS_TIMEOUT_SECONDS": "soon"}, "MDOPS_TIMEOUT_SECONDS"),
        ({"MDOPS_SIM_URL": "ftp://example"}, "MDOPS_SIM_URL"),
    ],
)
def test_invalid_configuration(tmp_path: Path, env: dict[str, str], message: str) -> None:
    run = run_script("health_check", tmp_path, "http://127.0.0.1:9", **env)
    assert run.code == 2
    assert any(message in line for line in run.lines("ERROR")), run.output


def test_unreachable_simulator_is_a_failure(tmp_path: Path) -> None:
    with run_sim() as gone:
        url = gone.url  # a port that was just free and is now closed again
    run = run_script("health_check", tmp_path, url)
    assert run.code == 1
    assert any("cannot reach the simulator" in line for line in run.lines("ERROR")), run.output
