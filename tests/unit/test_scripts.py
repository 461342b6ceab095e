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


def activate(sim: SimProcess, source: str) -> None:
    """Make ``source`` the simulator's active source (directly, through its admin API)."""
    if sim.status()["active_source"] != source:
        action = "failover" if source == "backup" else "failback"
        assert sim.request("POST", f"/admin/{action}?wait=true")[0] == 200
    assert sim.status()["active_source"] == source


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


def test_a_reason_cannot_forge_a_log_line(sim: SimProcess, tmp_path: Path) -> None:
    """A reason may hold newlines (the models allow them): the scripts log it escaped, on its own line."""
    reason = "primary down\nERROR: forged\r\x1b[2Jby them\tall"
    run = run_script("health_check", tmp_path, sim.url, MDOPS_REASON=reason)
    assert run.code == 0, run.output
    assert run.lines("ERROR") == []
    escaped = "primary down\\nERROR: forged\\r\\x1b[2Jby them\\tall"
    assert f"INFO: health_check requested by tester: {escaped}" in run.output.splitlines()


def test_failover_then_failback(sim: SimProcess, tmp_path: Path) -> None:
    run = run_script("failover", tmp_path, sim.url)
    assert run.code == 0, run.output
    health = assert_health(run, sim)
    assert 160 <= health["failover_latency_ms"] <= 240
    assert sim.status()["active_source"] == "backup"

    back = run_script("failback", tmp_path, sim.url)
    assert back.code == 0, back.output
    assert assert_health(back, sim)["failover_latency_ms"] is not None
    assert sim.status()["active_source"] == "primary"
    assert "INFO: failback: switching from backup to primary" in back.output.splitlines()


@pytest.mark.parametrize(("command", "source"), [("failover", "backup"), ("failback", "primary")])
def test_a_switch_to_the_active_source_is_a_successful_no_op(
    sim: SimProcess, tmp_path: Path, command: str, source: str
) -> None:
    activate(sim, source)
    before = stable(sim.status())
    run = run_script(command, tmp_path, sim.url)
    assert run.code == 0, run.output
    assert any(f"nothing to do: the active source is already {source}" in line for line in run.lines("INFO"))
    assert stable(sim.status()) == before
    assert_health(run, sim)
    assert run.report is not None and run.report["state"]["active_profile"] == source


@pytest.mark.parametrize("command", ["failover", "failback", "drill"])
def test_a_switch_on_a_stopped_feed_is_refused(sim: SimProcess, tmp_path: Path, command: str) -> None:
    assert sim.request("POST", "/admin/stop")[0] == 200
    for dry_run in ("1", "0"):
        run = run_script(command, tmp_path, sim.url, MDOPS_DRY_RUN=dry_run)
        assert run.code == 1, run.output
        assert any("the feed is stopped" in line for line in run.lines("ERROR")), run.output
    assert sim.status()["state"] == "stopped"


# From either source the drill goes to the other one and back: (start, first switch, other, second switch).
DRILLS = [("primary", "failover", "backup", "failback"), ("backup", "failback", "primary", "failover")]


@pytest.mark.parametrize(("home", "out", "away", "back"), DRILLS, ids=["from-primary", "from-backup"])
def test_drill_ends_where_it_started_with_the_first_switchs_latency(
    sim: SimProcess, tmp_path: Path, home: str, out: str, away: str, back: str
) -> None:
    activate(sim, home)
    run = run_script("drill", tmp_path, sim.url)
    assert run.code == 0, run.output
    health = assert_health(run, sim)
    status = sim.status()
    assert status["active_source"] == home
    assert status["last_switch"]["action"] == back
    info = run.lines("INFO")
    plan = f"switch from {home} to {away} ({out}), check coverage, then back to {home} ({back})"
    assert f"INFO: drill: {plan}" in info
    (leg,) = [line for line in info if f"drill: {out} completed in" in line]
    assert f"in {health['failover_latency_ms']} ms" in leg
    assert 160 <= health["failover_latency_ms"] <= 240
    assert health["coverage_ratio"] == 1.0


@pytest.mark.parametrize(("home", "out", "away", "back"), DRILLS, ids=["from-primary", "from-backup"])
def test_drill_fails_when_the_other_source_delivers_nothing(
    sim: SimProcess, tmp_path: Path, home: str, out: str, away: str, back: str
) -> None:
    activate(sim, home)
    assert sim.request("POST", "/admin/faults", {"stall_source": away})[0] == 200
    run = run_script("drill", tmp_path, sim.url)
    assert run.code == 1, run.output
    assert any(f"{away} source delivers no data" in line for line in run.lines("ERROR"))
    assert sim.status()["active_source"] == home  # switched back anyway
    assert run.report is not None and run.report["state"]["active_profile"] == home


@pytest.mark.parametrize(("home", "out", "away", "back"), DRILLS, ids=["from-primary", "from-backup"])
@pytest.mark.parametrize("dry_run", ["0", "1"], ids=["run", "dry-run"])
def test_drill_refuses_to_start_from_a_source_that_delivers_nothing(
    sim: SimProcess, tmp_path: Path, home: str, out: str, away: str, back: str, dry_run: str
) -> None:
    """The active source is down: a drill would switch to the other, healthy one, then back to the dead
    one, and succeed (exit 0) with the feed delivering nothing, where a moment before it delivered. It
    changes nothing, fails, and says what to do instead: a failover (or failback) to the other source."""
    activate(sim, home)
    assert sim.request("POST", "/admin/faults", {"stall_source": home})[0] == 200
    before = stable(sim.status())
    run = run_script("drill", tmp_path, sim.url, MDOPS_DRY_RUN=dry_run)
    assert run.code == 1, run.output
    assert stable(sim.status()) == before
    said = f"the active source {home} delivers no data (0/1280 matched): a drill would switch back to it"
    assert any(said in line and f"run {out} instead" in line for line in run.lines("ERROR")), run.output
    assert run.report is not None and run.report["state"]["active_profile"] == home


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


@pytest.mark.parametrize("source", ["primary", "backup"])
@pytest.mark.parametrize("command", COMMANDS)
def test_dry_run_changes_nothing(sim: SimProcess, tmp_path: Path, command: str, source: str) -> None:
    activate(sim, source)
    before = stable(sim.status())
    run = run_script(command, tmp_path, sim.url, MDOPS_DRY_RUN="1", MDOPS_WINDOW="night")
    assert run.code == 0, run.output
    assert "dry run:" in run.output
    assert stable(sim.status()) == before
    assert run.report is not None
    assert run.report["state"]["active_profile"] == source
    if command != "stop":
        assert_health(run, sim)


@pytest.mark.parametrize(
    ("source", "command", "plan"),
    [
        ("primary", "failover", "would fail over from primary to backup"),
        ("primary", "failback", "would do nothing: the active source is already primary"),
        ("backup", "failback", "would fail back from backup to primary"),
        ("backup", "failover", "would do nothing: the active source is already backup"),
        ("primary", "drill", "would switch from primary to backup (failover), check coverage, then back to "
                             "primary (failback)"),
        ("backup", "drill", "would switch from backup to primary (failback), check coverage, then back to "
                            "backup (failover)"),
    ],
)  # fmt: skip
def test_dry_run_plans_the_switch(
    sim: SimProcess, tmp_path: Path, source: str, command: str, plan: str
) -> None:
    activate(sim, source)
    run = run_script(command, tmp_path, sim.url, MDOPS_DRY_RUN="1")
    assert run.code == 0, run.output
    assert f"INFO: dry run: {plan}" in run.output.splitlines()


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
