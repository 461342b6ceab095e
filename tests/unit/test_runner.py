"""The runner (``python -m runner``), run as a real process against small scripts written for each test."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from devcluster.processes import process_gone, wait_until
from runbooks.contract import LOG_LEVELS, ExitCode
from runner import execute
from runner.cli import main
from runner.gate import Thresholds, evaluate
from runner.logs import LOG_FILE_MAX_BYTES, MAX_MESSAGE_CHARS, dumps
from runner.report import HEALTH_KEYS, HEALTH_NUMBERS, STATE_KEYS
from runner.result import (
    MAX_RESULT_BYTES,
    RESULT_PREFIX,
    build_result,
    parse_log_line,
    parse_result,
)
from tests.runbook_client import AWKWARD_TEXTS, lines

REPO = Path(__file__).resolve().parents[2]
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")  # runbooks.contract's format
REQUEST_STATE = {"environment_mode": "live", "active_profile": "primary", "active_window": "day"}
UAT_BACKUP_NIGHT = {"environment_mode": "uat", "active_profile": "backup", "active_window": "night"}


@dataclass
class Run:
    returncode: int
    result: dict[str, Any]
    result_text: str  # the result JSON exactly as printed
    streamed: list[dict[str, str]]  # the log lines streamed before the result line
    stderr: str

    def levelled(self) -> list[tuple[str, str]]:
        return [(line["level"], line["message"]) for line in self.streamed]


def sh(body: str) -> str:
    return "#!/bin/sh\n" + textwrap.dedent(body)


def py(body: str) -> str:
    return f"#!{sys.executable}\n" + textwrap.dedent(body)


def write_script(scripts: Path, name: str, text: str, mode: int = 0o755) -> Path:
    scripts.mkdir(exist_ok=True)
    path = scripts / name
    path.write_text(text)
    path.chmod(mode)
    return path


def reporting_script(scripts: Path, name: str, report: Any, exit_code: int = 0) -> Path:
    """A script that writes ``report`` (a string as is, anything else as JSON) to its report file."""
    text = report if isinstance(report, str) else json.dumps(report)
    return write_script(
        scripts,
        name,
        py(f"""
            import os, sys
            with open(os.environ["MDOPS_REPORT_FILE"], "w") as file:
                file.write({text!r})
            sys.exit({exit_code})
        """),
    )


def runner_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MDOPS_")}
    return env | extra


def given_to_script(**variables: str) -> dict[str, str]:
    """The runner's environment, with ``variables`` for the script (``$MDOPS_SCRIPT_ENV``)."""
    return runner_env(MDOPS_SCRIPT_ENV=json.dumps(variables))


def runner_argv(scripts: Path | None, args: tuple[str, ...]) -> list[str]:
    argv = [sys.executable, "-m", "runner", "--request-id", "req-1"]
    if "--window" not in args:
        argv += ["--window", "day"]
    if scripts is not None:
        argv += ["--scripts", str(scripts)]
    return [*argv, *args]


def parse_output(returncode: int, stdout: str, stderr: str) -> Run:
    lines = stdout.splitlines()
    assert lines, f"no output; stderr: {stderr}"
    assert lines[-1].startswith(RESULT_PREFIX), f"last line is not the result: {lines[-1][:200]!r}"
    result_text = lines[-1].removeprefix(RESULT_PREFIX)
    result = parse_result(lines[-1])
    streamed = [parse_log_line(line) for line in lines[:-1]]
    assert None not in streamed, "every line before the result must be a JSON log line"
    assert result["exitCode"] == returncode
    return Run(returncode, result, result_text, streamed, stderr)  # type: ignore[arg-type]


def run_runner(scripts: Path | None, *args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> Run:
    completed = subprocess.run(
        runner_argv(scripts, args),
        cwd=cwd,
        env=env or runner_env(),
        capture_output=True,
        encoding="utf-8",
        timeout=120,
    )
    return parse_output(completed.returncode, completed.stdout, completed.stderr)


def read_pid(path: Path) -> int | None:
    text = path.read_text() if path.exists() else ""
    return int(text) if text.endswith("\n") else None


@pytest.fixture
def kill_after() -> Any:
    """Pids to SIGKILL after the test, so that a failing test leaves no ``sleep 1000`` behind."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# A script that starts a long child in its process group, records the child's pid, and waits for it.
SPAWNS_CHILD = sh("""
    sleep 1000 &
    echo $! > "$PIDFILE"
    echo "child started"
    wait
""")


def test_success_streams_levelled_lines_and_reports_the_requested_state(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    write_script(
        scripts,
        "stop",
        sh("""
            echo "plain out"
            echo "DEBUG: debug line"
            echo "INFO:info without space"
            echo "WARNING: warned"
            echo "ERROR: broken"
            echo ""
            echo "INFOx is no prefix"
            echo "plain err" >&2
            echo "ERROR: err prefixed" >&2
        """),
    )

    run = run_runner(scripts, "--command", "stop")

    assert run.returncode == 0
    assert run.result["result"] == "success"
    assert run.result["message"] == "stop succeeded"
    stdout_lines = [
        ("INFO", "plain out"),
        ("DEBUG", "debug line"),
        ("INFO", "info without space"),
        ("WARNING", "warned"),
        ("ERROR", "broken"),
        ("INFO", "INFOx is no prefix"),
    ]
    stderr_lines = [("WARNING", "plain err"), ("ERROR", "err prefixed")]
    levelled = run.levelled()
    assert sorted(levelled) == sorted(stdout_lines + stderr_lines)  # the blank line is not a log line
    assert [line for line in levelled if line in stdout_lines] == stdout_lines  # each stream keeps its order
    assert [line for line in levelled if line in stderr_lines] == stderr_lines
    assert run.result["logs"] == run.streamed
    stamps = [line["time"] for line in run.streamed] + [run.result["startedAt"], run.result["finishedAt"]]
    assert all(TIMESTAMP.match(stamp) for stamp in stamps), stamps
    assert run.result["startedAt"] <= run.streamed[0]["time"] <= run.result["finishedAt"]
    assert run.result["health"] is None
    assert run.result["state"] == REQUEST_STATE
    assert run.result["dryRun"] is False


def test_long_messages_are_cut(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    write_script(scripts, "stop", py("print('x' * 20000)\nprint('ERROR: ' + 'y' * 600)\n"))

    run = run_runner(scripts, "--command", "stop")

    assert run.levelled() == [("INFO", "x" * MAX_MESSAGE_CHARS), ("ERROR", "y" * MAX_MESSAGE_CHARS)]


@pytest.mark.parametrize(
    ("body", "exit_code", "message"),
    [
        ("exit 1", 1, "script exited with code 1"),
        ("exit 7", 1, "script exited with code 7"),
        ("exit 124", 1, "script exited with code 124"),
        ("exit 2", 2, "script exited with code 2 (invalid arguments)"),
        ("kill -KILL $$", 1, "script killed by SIGKILL"),
    ],
)
def test_script_failures_map_to_the_contract(tmp_path: Path, body: str, exit_code: int, message: str) -> None:
    scripts = tmp_path / "scripts"
    write_script(scripts, "start", sh(f"echo working\n{body}\n"))

    run = run_runner(scripts, "--command", "start")

    assert run.returncode == exit_code
    assert run.result["result"] == "failed"
    assert run.result["message"] == message
    assert run.levelled() == [("INFO", "working"), ("ERROR", message)]
    assert run.result["state"] is None  # after a failure the state is unknown


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "script not found: {scripts}/start"),
        ("not executable", "script is not executable: {scripts}/start"),
        ("no interpreter line", "could not execute {scripts}/start: Exec format error"),
        ("directory", "script not found: {scripts}/start"),
        ("no scripts directory", "scripts directory not found: {scripts}"),
    ],
)
def test_script_that_cannot_run_exits_125(tmp_path: Path, setup: str, message: str) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    if setup == "not executable":
        write_script(scripts, "start", sh("echo hi\n"), mode=0o644)
    elif setup == "no interpreter line":
        write_script(scripts, "start", "echo this has no interpreter line\n")
    elif setup == "directory":
        (scripts / "start").mkdir()
    elif setup == "no scripts directory":
        scripts.rmdir()

    run = run_runner(scripts, "--command", "start")

    assert run.returncode == 125
    assert run.result["message"] == message.format(scripts=scripts)
    assert run.levelled() == [("ERROR", run.result["message"])]
    assert (run.result["health"], run.result["state"]) == (None, None)


def test_scripts_directory_comes_from_the_environment(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    write_script(scripts, "stop", sh("echo from env dir\n"))

    found = run_runner(None, "--command", "stop", env=runner_env(MDOPS_SCRIPTS_DIR=str(scripts)))
    missing = run_runner(None, "--command", "stop")

    assert (found.returncode, found.levelled()) == (0, [("INFO", "from env dir")])
    assert missing.returncode == 125
    assert missing.result["message"] == "no scripts directory: pass --scripts or set MDOPS_SCRIPTS_DIR"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("--command", "reboot"), "argument --command: invalid choice: 'reboot'"),
        (("--reason", "no command"), "the following arguments are required: --command"),
        (("--command", "stop", "--window", "dusk"), "argument --window: invalid choice: 'dusk'"),
        (("--command", "stop", "--timeout", "0"), "argument --timeout: must be greater than 0, got 0"),
        (("--command", "stop", "--timeout", "soon"), "argument --timeout: not an integer: 'soon'"),
        (("--command", "stop", "--min-coverage", "1.5"), "argument --min-coverage: must be between 0 and 1"),
        (("--command", "stop", "--min-coverage", "nan"), "argument --min-coverage: not a finite number"),
        (("--command", "stop", "--max-backlog", "-1"), "argument --max-backlog: must not be negative"),
        (("--command", "stop", "--surprise"), "unrecognized arguments: --surprise"),
    ],
)
@pytest.mark.parametrize("result_file_from", ["option", "environment"])
def test_invalid_arguments_exit_2_with_a_result(
    tmp_path: Path, args: tuple[str, ...], error: str, result_file_from: str
) -> None:
    scripts = tmp_path / "scripts"
    marker = tmp_path / "ran"
    write_script(scripts, "stop", sh(f"touch {marker}\n"))
    result_file = tmp_path / "out" / "result.json"
    result_file.parent.mkdir()
    if result_file_from == "option":
        run = run_runner(scripts, *args, "--result-file", str(result_file))
    else:
        run = run_runner(scripts, *args, env=runner_env(MDOPS_RESULT_FILE=str(result_file)))

    assert run.returncode == 2
    assert run.result["message"].startswith(f"invalid arguments: {error}")
    assert run.levelled() == [("ERROR", run.result["message"])]
    assert "usage: python -m runner" in run.stderr
    assert result_file.read_text(encoding="utf-8") == run.result_text
    assert not marker.exists()


def test_timeout_exits_124_and_kills_the_script_process_group(tmp_path: Path, kill_after: list[int]) -> None:
    scripts = tmp_path / "scripts"
    pidfile = tmp_path / "child.pid"
    write_script(scripts, "health_check", SPAWNS_CHILD)

    started = time.monotonic()
    run = run_runner(
        scripts, "--command", "health_check", "--timeout", "1", env=given_to_script(PIDFILE=str(pidfile))
    )
    elapsed = time.monotonic() - started

    child = read_pid(pidfile)
    assert child is not None
    kill_after.append(child)
    assert run.returncode == 124
    assert run.result["message"] == "timed out after 1 s"
    assert run.levelled() == [("INFO", "child started"), ("ERROR", "timed out after 1 s")]
    assert elapsed >= 1
    wait_until(lambda: process_gone(child), 15, "the script's child to die")


def test_timeout_escalates_to_sigkill_after_the_grace_period(tmp_path: Path, kill_after: list[int]) -> None:
    scripts = tmp_path / "scripts"
    pidfile = tmp_path / "child.pid"
    write_script(scripts, "drill", sh("trap '' TERM\n") + SPAWNS_CHILD.removeprefix("#!/bin/sh\n"))

    started = time.monotonic()
    run = run_runner(
        scripts,
        *("--command", "drill", "--timeout", "1", "--kill-grace", "0.5"),
        env=given_to_script(PIDFILE=str(pidfile)),
    )
    elapsed = time.monotonic() - started

    child = read_pid(pidfile)
    assert child is not None
    kill_after.append(child)
    assert run.returncode == 124
    assert elapsed < 1 + 5  # the 0.5 s grace, not the default 5 s
    wait_until(lambda: process_gone(child), 15, "the TERM-ignoring child to be killed")


def test_a_script_that_ended_by_itself_as_the_stop_or_the_deadline_came_keeps_its_own_end() -> None:
    """Soak seed 99: a script exited 7 by itself just as its pod was stopped; the runner's wait saw the stop
    first and reported the run cancelled (130) with no script left to stop. Its own end is its result; a
    script that a signal killed while a stop was asked was stopped."""
    cancel = execute.Cancellation()
    cancel.signal_name = "SIGTERM"
    exited = subprocess.Popen(["sh", "-c", "exit 7"])
    exited.wait()
    assert execute._wait(exited, 60, cancel) == "exited"
    assert execute._wait(exited, 0, execute.Cancellation()) == "exited"  # as the deadline came
    killed = subprocess.Popen(["sleep", "60"])
    killed.terminate()
    killed.wait()
    assert execute._wait(killed, 60, cancel) == "cancelled"
    running = subprocess.Popen(["sleep", "60"])
    try:
        assert execute._wait(running, 60, cancel) == "cancelled"
        assert execute._wait(running, 0, execute.Cancellation()) == "timeout"
    finally:
        running.kill()
        running.wait()


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_signal_to_the_runner_cancels_the_run(tmp_path: Path, kill_after: list[int], name: str) -> None:
    scripts = tmp_path / "scripts"
    pidfile = tmp_path / "child.pid"
    write_script(scripts, "restart", SPAWNS_CHILD)
    runner = subprocess.Popen(
        runner_argv(scripts, ("--command", "restart", "--timeout", "60")),
        cwd=REPO,
        env=given_to_script(PIDFILE=str(pidfile)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        encoding="utf-8",
    )
    try:
        wait_until(lambda: read_pid(pidfile) is not None, 15, "the script to start its child")
        child = read_pid(pidfile)
        assert child is not None
        kill_after.append(child)
        runner.send_signal(getattr(signal, name))
        stdout, stderr = runner.communicate(timeout=30)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()

    run = parse_output(runner.returncode, stdout, stderr)
    assert run.returncode == 130
    assert run.result["message"] == f"cancelled by {name}"
    assert run.levelled()[-1] == ("ERROR", f"cancelled by {name}")
    wait_until(lambda: process_gone(child), 15, "the script's child to die")


def session_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])


def test_the_script_dies_with_its_runner_and_what_it_started_stays_in_the_runners_session(
    tmp_path: Path, kill_after: list[int]
) -> None:
    """``kill -9`` of the runner (or the OOM killer): the kernel kills the script; what the script started
    is in the runner's session, where the one who started the runner in a session of its own (the local
    executor) finds it by the runner's pid."""
    scripts = tmp_path / "scripts"
    pidfile, scriptfile = tmp_path / "child.pid", tmp_path / "script.pid"
    write_script(
        scripts, "failover", sh(f'echo $$ > "{scriptfile}"\n') + SPAWNS_CHILD.removeprefix("#!/bin/sh\n")
    )
    runner = subprocess.Popen(
        runner_argv(scripts, ("--command", "failover", "--timeout", "60")),
        cwd=REPO,
        env=given_to_script(PIDFILE=str(pidfile)),
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # as the local executor starts it
    )
    try:
        wait_until(lambda: read_pid(pidfile) is not None, 15, "the script to start its child")
        child, script = read_pid(pidfile), read_pid(scriptfile)
        assert child is not None and script is not None
        kill_after.extend([child, script])
        assert session_of(script) == session_of(child) == runner.pid
        runner.kill()
        runner.wait()
        wait_until(lambda: process_gone(script), 15, "the script to die with its runner")
        assert not process_gone(child)
        assert session_of(child) == runner.pid  # gone with its leader, the session still has its id
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


def test_background_process_holding_the_output_does_not_hang_the_run(
    tmp_path: Path, kill_after: list[int]
) -> None:
    scripts = tmp_path / "scripts"
    pidfile = tmp_path / "daemon.pid"
    write_script(scripts, "stop", sh('sleep 1000 &\necho $! > "$PIDFILE"\necho "daemon started"\n'))

    run = run_runner(
        scripts, "--command", "stop", "--timeout", "60", env=given_to_script(PIDFILE=str(pidfile))
    )

    daemon = read_pid(pidfile)
    assert daemon is not None
    kill_after.append(daemon)
    assert run.returncode == 0
    assert run.levelled() == [
        ("INFO", "daemon started"),
        ("WARNING", "stopped reading output: a background process holds the script's stdout/stderr"),
    ]
    assert not process_gone(daemon)  # a normal end leaves the script's background processes alone


GOOD_HEALTH = {"coverage_ratio": 0.999, "consumer_backlog_messages": 10, "failover_latency_ms": 1800}


@pytest.mark.parametrize(
    ("health", "args", "exit_code", "failures", "last_log"),
    [
        (GOOD_HEALTH, ("--enforce",), 0, [], None),
        (
            {"coverage_ratio": None, "consumer_backlog_messages": None, "failover_latency_ms": None},
            ("--enforce",),
            0,
            [],
            None,
        ),
        (
            GOOD_HEALTH | {"coverage_ratio": 0.95},
            (),
            0,
            ["coverage_ratio 0.95 < 0.99"],
            ("WARNING", "health gate failed (not enforced): coverage_ratio 0.95 < 0.99"),
        ),
        (
            GOOD_HEALTH | {"coverage_ratio": 0.95},
            ("--enforce",),
            3,
            ["coverage_ratio 0.95 < 0.99"],
            ("ERROR", "health gate failed: coverage_ratio 0.95 < 0.99"),
        ),
        (
            GOOD_HEALTH | {"consumer_backlog_messages": 101, "failover_latency_ms": 6000},
            ("--enforce", "--max-backlog", "100", "--min-coverage", "0.5"),
            3,
            ["consumer_backlog_messages 101 > 100", "failover_latency_ms 6000 > 5000"],
            (
                "ERROR",
                "health gate failed: consumer_backlog_messages 101 > 100; failover_latency_ms 6000 > 5000",
            ),
        ),
        (
            GOOD_HEALTH | {"failover_latency_ms": 6000},
            ("--enforce", "--max-failover-latency-ms", "6000"),
            0,
            [],
            None,
        ),
    ],
)
def test_health_gate(
    tmp_path: Path,
    health: dict[str, Any],
    args: tuple[str, ...],
    exit_code: int,
    failures: list[str],
    last_log: tuple[str, str] | None,
) -> None:
    scripts = tmp_path / "scripts"
    reporting_script(scripts, "failover", {"health": health | {"matched_total": 1276, "vendor": "x"}})

    run = run_runner(scripts, "--command", "failover", *args)

    assert run.returncode == exit_code
    reported = run.result["health"]
    assert reported["gate"] == {"passed": not failures, "enforced": "--enforce" in args, "failures": failures}
    assert {key: reported[key] for key in health} == health
    assert (reported["matched_total"], reported["vendor"]) == (1276, "x")
    assert reported["generated_at"] == run.result["finishedAt"]  # the script gave none
    assert run.levelled() == ([last_log] if last_log else [])
    assert run.result["state"] == REQUEST_STATE  # the script succeeded, even when the gate failed


def test_gated_command_without_health_report_warns(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    write_script(scripts, "health_check", sh("echo checked\n"))

    run = run_runner(scripts, "--command", "health_check", "--enforce")

    assert run.returncode == 0
    assert run.result["health"] is None
    assert run.levelled() == [("INFO", "checked"), ("WARNING", "no health report; gate not evaluated")]


def test_stop_is_not_gated(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    reporting_script(scripts, "stop", {"health": {"coverage_ratio": 0.1}})

    run = run_runner(scripts, "--command", "stop", "--enforce")

    assert run.returncode == 0
    assert run.result["health"] == {"coverage_ratio": 0.1, "generated_at": run.result["finishedAt"]}
    assert run.streamed == []


def test_script_state_and_generated_at_win_over_the_defaults(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    report = {
        "health": {"coverage_ratio": 1.0, "generated_at": "2026-11-26T16:00:00+08:00"},
        "state": {"active_profile": "backup"},
    }
    reporting_script(scripts, "failover", report)

    run = run_runner(scripts, "--command", "failover", "--mode", "uat", "--window", "night", "--profile", "x")

    assert run.returncode == 0
    assert run.result["state"] == UAT_BACKUP_NIGHT
    assert run.result["health"]["generated_at"] == "2026-11-26T16:00:00+08:00"


def test_failed_script_reports_only_its_own_state_and_health(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    report = {"health": {"coverage_ratio": 0.2}, "state": {"active_profile": "backup"}}
    reporting_script(scripts, "failback", report, exit_code=5)

    run = run_runner(scripts, "--command", "failback", "--enforce")

    assert run.returncode == 1
    assert run.result["state"] == {"active_profile": "backup"}
    assert "gate" not in run.result["health"]  # the gate is only for a script that succeeded


@pytest.mark.parametrize(
    ("report", "problem"),
    [
        ("not json", "not JSON"),
        ("", "not JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"health": [1]}', "'health' must be an object, got list"),
        ('{"health": {"coverage_ratio": "high"}}', "health.coverage_ratio must be a number or null"),
        ('{"health": {"gate": {"passed": true}}}', "health.gate is the health gate's verdict, written by"),
        ('{"health": {"coverage_ratio": NaN}}', "not JSON: NaN is not valid JSON"),
        ('{"health": {"coverage_ratio": 1.5}}', "health.coverage_ratio must be between 0 and 1"),
        ('{"health": {"failover_latency_ms": true}}', "health.failover_latency_ms must be a number or null"),
        ('{"health": {"generated_at": 5}}', "health.generated_at must be a string or null"),
        ('{"health": {"generated_at": "yesterday"}}', "health.generated_at 'yesterday' is not an ISO 8601"),
        ('{"health": {"generated_at": "9999-12-31T23:59:59-12:00"}}', "health.generated_at '9999-12-31"),
        (
            '{"health": {"generated_at": "0001-01-01T00:00:00+14:00"}}',
            "health.generated_at '0001-01-01T00:00",
        ),
        (
            '{"health": {"generated_at": "1969-12-31T23:59:59Z"}}',
            "health.generated_at '1969-12-31T23:59:59Z' is not",
        ),
        ('{"state": {"active_profile": "backup", "colour": "red"}}', "unknown state keys ['colour']"),
        ('{"state": {"active_profile": 1}}', "state.active_profile must be a string or null"),
        ('{"health": {}, "extra": 1}', "unknown keys ['extra']"),
    ],
)
def test_malformed_report_fails_the_run(tmp_path: Path, report: str, problem: str) -> None:
    scripts = tmp_path / "scripts"
    reporting_script(scripts, "health_check", report)

    run = run_runner(scripts, "--command", "health_check")

    assert run.returncode == 1
    assert run.result["message"].startswith(f"malformed report file: {problem}")
    assert run.levelled() == [("ERROR", run.result["message"])]
    assert (run.result["health"], run.result["state"]) == (None, None)


def test_malformed_report_keeps_the_exit_code_of_a_failed_script(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    reporting_script(scripts, "start", "not json", exit_code=2)

    run = run_runner(scripts, "--command", "start")

    assert run.returncode == 2
    assert run.result["message"] == "script exited with code 2 (invalid arguments)"
    assert [level for level, _ in run.levelled()] == ["ERROR", "ERROR"]


# What a script may leave at its report path instead of a report: each ends the run at once, as a malformed
# report (a FIFO is not waited on; a directory is not read).
ODD_REPORTS = {
    "fifo": 'mkfifo "$MDOPS_REPORT_FILE"',
    "directory": 'mkdir "$MDOPS_REPORT_FILE"',
    "symbolic link to a fifo": 'mkfifo fifo\nln -s "$PWD/fifo" "$MDOPS_REPORT_FILE"',
    "device": 'ln -s /dev/zero "$MDOPS_REPORT_FILE"',
    "nested 10,000 deep": 'printf "%10000s" "" | tr " " "[" > "$MDOPS_REPORT_FILE"',
    "nested 33 deep in the health report": (
        'printf \'{"health": {"vendor": %s1%s}}\' "$(printf "%32s" "" | tr " " "[")"'
        ' "$(printf "%32s" "" | tr " " "]")" > "$MDOPS_REPORT_FILE"'
    ),
}
ODD_REPORT_PROBLEMS = {
    "fifo": "not a regular file but a FIFO",
    "directory": "not a regular file but a directory",
    "symbolic link to a fifo": "not a regular file but a FIFO",
    "device": "not a regular file but a device",
    "nested 10,000 deep": "nested deeper than 32 levels",
    "nested 33 deep in the health report": "nested deeper than 32 levels",
}


@pytest.mark.parametrize("exit_code", [0, 7])
@pytest.mark.parametrize("odd", list(ODD_REPORTS))
def test_whatever_is_at_the_report_path_the_run_ends_with_the_scripts_own_failure(
    tmp_path: Path, odd: str, exit_code: int
) -> None:
    """Never a hang, and never a 125 that hides how the script ended: a script that failed keeps its
    failure, one that succeeded fails for its report."""
    scripts = tmp_path / "scripts"
    write_script(scripts, "drill", sh(f"{ODD_REPORTS[odd]}\nexit {exit_code}\n"))

    run = run_runner(scripts, "--command", "drill", "--timeout", "60")  # opening the FIFO would block

    problem = f"malformed report file: {ODD_REPORT_PROBLEMS[odd]}"
    assert ("ERROR", problem) in run.levelled()
    assert run.returncode == 1
    assert run.result["message"] == (problem if exit_code == 0 else "script exited with code 7")


def test_a_report_nested_32_deep_is_kept(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    nested: Any = 1
    for _ in range(30):
        nested = [nested]
    reporting_script(scripts, "health_check", {"health": {"coverage_ratio": 1.0, "vendor": nested}})

    run = run_runner(scripts, "--command", "health_check")

    assert run.returncode == 0, run.result
    assert run.result["health"]["vendor"] == nested


def test_the_scripts_working_directory_is_its_own_not_the_runners(tmp_path: Path) -> None:
    """Run as the local executor runs it (in the run's folder, its result written there): a script that
    writes ``pid`` and ``result.json`` into its working directory touches neither of the run's files."""
    scripts = tmp_path / "scripts"
    folder = tmp_path / "run-folder"
    folder.mkdir()
    (folder / "pid").write_text("4242")
    write_script(
        scripts,
        "stop",
        sh("""
            echo 1 > pid
            echo '{"exitCode": 0, "result": "success"}' > result.json
            echo "wrote in $PWD"
            exit 5
        """),
    )

    run = run_runner(scripts, "--command", "stop", "--result-file", str(folder / "result.json"), cwd=folder)

    assert run.returncode == 1
    assert (folder / "pid").read_text() == "4242"
    assert parse_result((folder / "result.json").read_text()) == run.result
    assert sorted(os.listdir(folder)) == ["pid", "result.json"]
    [(_, wrote)] = [line for line in run.levelled() if line[1].startswith("wrote in")]
    assert not wrote.startswith(f"wrote in {folder}")


# A script that records what it was given: its whole environment (as it was exec'd: Python adds to its own),
# arguments, standard input and working directory, in the file $SEEN (passed to it through $MDOPS_SCRIPT_ENV).
RECORDS_WHAT_IT_GOT = py("""
    import json, os, sys
    with open("/proc/self/environ", "rb") as file:
        environ = [item.decode().split("=", 1) for item in file.read().split(b"\\0") if item]
    seen = {
        "env": dict(environ),
        "argv": sys.argv[1:],
        "stdin": sys.stdin.read(),
        "cwd": os.getcwd(),
        "cwd_files": os.listdir("."),
        "report_dir": sorted(os.listdir(os.path.dirname(os.environ["MDOPS_REPORT_FILE"]))),
    }
    with open(os.environ["SEEN"], "w", encoding="utf-8") as file:
        json.dump(seen, file)
""")


def test_environment_given_to_the_script(tmp_path: Path) -> None:
    """The script's whole environment: PATH, HOME, LANG, TZ and TMPDIR from the runner's, the names the
    runner is told to pass, $MDOPS_SCRIPT_ENV's variables and the contract; nothing else of the runner's
    (whatever secrets it holds)."""
    scripts = tmp_path / "scripts"
    seen = tmp_path / "seen.json"
    write_script(scripts, "failover", RECORDS_WHAT_IT_GOT)
    environ = {
        **{name: f"{name.lower()}-value" for name in ("HOME", "LANG", "TZ", "TMPDIR")},
        "PATH": os.environ["PATH"],
        "OPS_API_TOKEN": "secret-token",
        "MDOPS_KUBECONFIG": "/etc/admin.kubeconfig",
        "PASSED": "asked for",
        "NOT_PASSED": "never asked for",
        "MDOPS_SCRIPT_PASS_ENV": json.dumps(["PASSED", "UNSET_NAME"]),
        "MDOPS_SCRIPT_ENV": json.dumps({"SEEN": str(seen), "TZ": "UTC", "MDOPS_MODE": "overridden?"}),
    }
    (tmp_path / "tmpdir-value").mkdir()  # the runner's own temporary folder lives here
    environ["TMPDIR"] = str(tmp_path / "tmpdir-value")

    run = run_runner(
        scripts,
        *("--command", "failover", "--mode", "uat", "--window", "night", "--profile", "backup"),
        *("--config", "cfg-b", "--reason", "it's night", "--requested-by", "alice"),
        *("--enforce", "--dry-run", "--timeout", "42"),
        env=environ,
    )

    assert run.returncode == 0, run.result
    observed = json.loads(seen.read_text())
    report_file = Path(observed["env"].pop("MDOPS_REPORT_FILE"))
    assert observed["env"] == {
        "PATH": os.environ["PATH"],
        "HOME": "home-value",
        "LANG": "lang-value",
        "TZ": "UTC",  # MDOPS_SCRIPT_ENV wins over what the runner passes on
        "TMPDIR": str(tmp_path / "tmpdir-value"),
        "PASSED": "asked for",
        "SEEN": str(seen),
        "MDOPS_COMMAND": "failover",
        "MDOPS_REQUEST_ID": "req-1",
        "MDOPS_MODE": "uat",  # the contract wins over MDOPS_SCRIPT_ENV
        "MDOPS_WINDOW": "night",
        "MDOPS_PROFILE": "backup",
        "MDOPS_CONFIG": "cfg-b",
        "MDOPS_REASON": "it's night",
        "MDOPS_REQUESTED_BY": "alice",
        "MDOPS_ENFORCE": "1",
        "MDOPS_DRY_RUN": "1",
        "MDOPS_TIMEOUT_SECONDS": "42",
    }
    assert (observed["argv"], observed["stdin"]) == ([], "")
    assert observed["report_dir"] == ["work"]  # a fresh directory: the report is not there yet
    assert (observed["cwd"], observed["cwd_files"]) == (str(report_file.parent / "work"), [])
    assert report_file.parent.parent == tmp_path / "tmpdir-value"
    assert not report_file.parent.exists()  # removed after the run
    assert run.result["dryRun"] is True
    assert run.result["state"] == UAT_BACKUP_NIGHT


@pytest.mark.parametrize(
    ("variable", "value", "error"),
    [
        ("MDOPS_SCRIPT_ENV", "[1]", "MDOPS_SCRIPT_ENV: expected a JSON object of strings"),
        ("MDOPS_SCRIPT_ENV", '{"A": 1}', "MDOPS_SCRIPT_ENV: expected a JSON object of strings"),
        ("MDOPS_SCRIPT_ENV", '{"A=B": "x"}', "MDOPS_SCRIPT_ENV: 'A=B' is not a variable name"),
        ("MDOPS_SCRIPT_ENV", '{"A": "x\\u0000"}', "MDOPS_SCRIPT_ENV.A: contains a NUL character"),
        ("MDOPS_SCRIPT_ENV", "{", "MDOPS_SCRIPT_ENV: not JSON"),
        ("MDOPS_SCRIPT_PASS_ENV", "PATH", "MDOPS_SCRIPT_PASS_ENV: not JSON"),
        ("MDOPS_SCRIPT_PASS_ENV", '{"A": "B"}', "MDOPS_SCRIPT_PASS_ENV: expected a JSON list of variable"),
    ],
)
def test_an_invalid_environment_for_the_script_exits_2(
    tmp_path: Path, variable: str, value: str, error: str
) -> None:
    scripts = tmp_path / "scripts"
    marker = tmp_path / "ran"
    write_script(scripts, "stop", sh(f"touch {marker}\n"))

    run = run_runner(scripts, "--command", "stop", env=runner_env(**{variable: value}))

    assert run.returncode == 2
    assert run.result["message"].startswith(f"invalid arguments: {error}")
    assert not marker.exists()


def json_request(**fields: Any) -> dict[str, Any]:
    return {"command": "failover", "requestId": "req-1", "window": "day", **fields}


def run_request(scripts: Path, request: Any, *args: str, via: str = "env", **script_env: str) -> Run:
    """The runner given ``request`` as JSON: in $MDOPS_REQUEST (``via="env"``), in a file
    (``via="file"``) or on standard input (``via="stdin"``)."""
    text = request if isinstance(request, str) else json.dumps(request)
    env = given_to_script(**script_env)
    argv = [sys.executable, "-m", "runner", "--scripts", str(scripts), *args]
    stdin = None
    if via == "env":
        env["MDOPS_REQUEST"] = text
    elif via == "file":
        path = scripts.parent / "request.json"
        path.write_text(text, encoding="utf-8")
        argv += ["--request", str(path)]
    else:
        argv += ["--request", "-"]
        stdin = text
    completed = subprocess.run(
        argv, cwd=REPO, env=env, input=stdin, capture_output=True, encoding="utf-8", timeout=120
    )
    return parse_output(completed.returncode, completed.stdout, completed.stderr)


@pytest.mark.parametrize("via", ["env", "file", "stdin"])
def test_a_json_request_reaches_the_script_verbatim(tmp_path: Path, via: str) -> None:
    scripts = tmp_path / "scripts"
    write_script(scripts, "failover", RECORDS_WHAT_IT_GOT)
    for index, text in enumerate([*AWKWARD_TEXTS, "tab\tand\nnewline", ""]):
        seen = tmp_path / f"seen-{index}.json"
        request = json_request(reason=text, config=text[::-1], requestedBy=text, mode="uat", dryRun=True)

        run = run_request(scripts, request, via=via, SEEN=str(seen))

        assert run.returncode == 0, (text, run.result)
        env = json.loads(seen.read_text(encoding="utf-8"))["env"]
        got = (env["MDOPS_REASON"], env["MDOPS_CONFIG"], env["MDOPS_REQUESTED_BY"])
        assert got == (text, text[::-1], text)
        assert (env["MDOPS_MODE"], env["MDOPS_DRY_RUN"], env["MDOPS_ENFORCE"]) == ("uat", "1", "0")
        assert "MDOPS_REQUEST" not in env
    assert not Path("/tmp/mdops-never").exists()


def test_a_json_request_takes_the_specs_defaults(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    write_script(
        scripts, "stop", sh('echo "$MDOPS_MODE $MDOPS_PROFILE [$MDOPS_CONFIG] $MDOPS_TIMEOUT_SECONDS"\n')
    )

    run = run_request(scripts, {"command": "stop", "requestId": "r", "window": "night"})

    assert run.returncode == 0
    assert run.levelled() == [("INFO", "live primary [] 300")]


@pytest.mark.parametrize(
    ("request_text", "error"),
    [
        ("not json", "MDOPS_REQUEST: not JSON"),
        ("[]", "MDOPS_REQUEST: expected a JSON object, got list"),
        ('{"command": "stop"}', "MDOPS_REQUEST: missing keys ['requestId', 'window']"),
        (json.dumps(json_request(colour="red")), "MDOPS_REQUEST: unknown keys ['colour']"),
        (json.dumps(json_request(command="reboot")), "MDOPS_REQUEST: command: unknown command 'reboot'"),
        (json.dumps(json_request(window="dusk")), "MDOPS_REQUEST: window: must be day or night"),
        (json.dumps(json_request(requestId="")), "MDOPS_REQUEST: requestId: must not be empty"),
        (json.dumps(json_request(reason=5)), "MDOPS_REQUEST: reason: must be a string"),
        (json.dumps(json_request(enforce="yes")), "MDOPS_REQUEST: enforce: must be true or false"),
        (json.dumps(json_request(timeoutSeconds=0)), "MDOPS_REQUEST: timeoutSeconds: must be greater than 0"),
        (json.dumps(json_request(timeoutSeconds=True)), "MDOPS_REQUEST: timeoutSeconds: must be an integer"),
        (json.dumps(json_request(config="a\x00b")), "MDOPS_REQUEST: config: contains a NUL character"),
        ("[" * 10000, "MDOPS_REQUEST: not JSON"),
    ],
)
def test_an_invalid_json_request_exits_2_without_running_the_script(
    tmp_path: Path, request_text: str, error: str
) -> None:
    scripts = tmp_path / "scripts"
    marker = tmp_path / "ran"
    write_script(scripts, "stop", sh(f"touch {marker}\n"))
    write_script(scripts, "failover", sh(f"touch {marker}\n"))

    run = run_request(scripts, request_text)

    assert run.returncode == 2
    assert run.result["message"].startswith(f"invalid arguments: {error}")
    assert not marker.exists()


def test_a_json_request_and_the_request_options_together_exit_2(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    write_script(scripts, "failover", sh("echo ran\n"))

    run = run_request(scripts, json_request(), "--reason", "also here", via="file")

    assert run.returncode == 2
    assert run.result["message"] == "invalid arguments: unrecognized arguments: --reason also here"
    assert run.levelled() == [("ERROR", run.result["message"])]


def test_flags_default_to_off_in_the_environment(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    write_script(
        scripts, "stop", sh('echo "$MDOPS_ENFORCE $MDOPS_DRY_RUN $MDOPS_TIMEOUT_SECONDS $MDOPS_MODE"\n')
    )

    run = run_runner(scripts, "--command", "stop")

    assert run.levelled() == [("INFO", "0 0 300 live")]
    assert run.result["dryRun"] is False


def test_result_keeps_the_last_lines_of_a_huge_output_within_4_kib(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    result_file = tmp_path / "result.json"
    write_script(scripts, "stop", py("for i in range(10000):\n    print(f'{i:05d} ' + 'é' * 394)\n"))

    run = run_runner(scripts, "--command", "stop", "--result-file", str(result_file), "--timeout", "60")

    printed = [f"{i:05d} " + "é" * 394 for i in range(10000)]
    assert run.returncode == 0
    assert [line["message"] for line in run.streamed] == printed  # every line streamed, in order
    assert len(run.result_text.encode()) <= MAX_RESULT_BYTES
    kept = [line["message"] for line in run.result["logs"]]
    assert kept
    assert kept == printed[-len(kept) :]
    assert result_file.read_text(encoding="utf-8") == run.result_text


def test_the_log_file_of_an_endless_output_is_bounded_and_keeps_the_newest_lines(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    logs = tmp_path / "logs"
    logs.mkdir()
    # About 6 MiB of log lines, three times what the log file and its older generation may hold.
    write_script(scripts, "stop", py("for i in range(12000):\n    print(f'{i:05d} ' + 'x' * 480)\n"))

    run = run_runner(scripts, "--command", "stop", "--log-file", str(logs / "runner.log"), "--timeout", "120")

    assert run.returncode == 0
    assert len(run.streamed) == 12000  # standard output has them all
    assert sorted(os.listdir(logs)) == ["runner.log", "runner.log.1"]
    assert all((logs / name).stat().st_size <= LOG_FILE_MAX_BYTES for name in os.listdir(logs))
    kept = [parse_log_line(line) for name in ("runner.log.1", "runner.log") for line in lines(logs / name)]
    assert kept == run.streamed[-len(kept) :]  # the newest lines, whole, in order
    assert len(kept) > LOG_FILE_MAX_BYTES // 600


def test_output_on_both_streams_is_read_concurrently(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    # Each stream gets far more than a pipe holds; a runner reading one stream to its end first would
    # block the script on the other one until the timeout.
    write_script(
        scripts,
        "stop",
        py("""
            import sys
            for i in range(2000):
                print(f"err {i} " + "e" * 400, file=sys.stderr)
            for i in range(2000):
                print(f"out {i} " + "o" * 400)
        """),
    )

    run = run_runner(scripts, "--command", "stop", "--timeout", "30")

    assert run.returncode == 0
    assert sum(line["level"] == "WARNING" for line in run.streamed) == 2000
    assert sum(line["level"] == "INFO" for line in run.streamed) == 2000


def test_result_file_replaces_an_old_one_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    write_script(scripts, "stop", sh("echo done\n"))
    out = tmp_path / "out"
    out.mkdir()
    result_file = out / "result.json"
    result_file.write_text("stale")

    run = run_runner(scripts, "--command", "stop", "--result-file", str(result_file))

    assert result_file.read_text(encoding="utf-8") == run.result_text
    assert os.listdir(out) == ["result.json"]  # no temporary file left behind


def test_result_file_that_is_not_a_regular_file_is_written_in_place(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    write_script(scripts, "stop", sh("echo done\n"))
    fifo = tmp_path / "termination-log"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text(encoding="utf-8")), daemon=True)
    reader.start()

    run = run_runner(scripts, "--command", "stop", "--result-file", str(fifo))

    reader.join(timeout=15)
    assert received == [run.result_text]
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # never replaced by a regular file


def test_runner_crash_still_gives_a_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("runner.cli.run_script", crash)
    result_file = tmp_path / "result.json"

    code = main(
        ["--command", "stop", "--request-id", "r", "--window", "day", "--result-file", str(result_file)]
    )

    run = parse_output(code, capsysbinary.readouterr().out.decode(), "")
    assert code == 125
    assert run.result["message"] == "runner error: RuntimeError: boom"
    assert run.levelled() == [("ERROR", "runner error: RuntimeError: boom")]
    assert result_file.read_text(encoding="utf-8") == run.result_text


@pytest.mark.parametrize(("script_exit", "exit_code", "message"), [
    (7, 1, "script exited with code 7"),
    (0, 125, "runner error after the script ended: RuntimeError: boom"),
])  # fmt: skip
def test_a_runner_crash_after_the_script_ended_keeps_the_scripts_failure(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
    script_exit: int,
    exit_code: int,
    message: str,
) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("runner.cli.read_report", crash)
    scripts = tmp_path / "scripts"
    write_script(scripts, "start", sh(f"exit {script_exit}\n"))

    code = main(["--command", "start", "--request-id", "r", "--window", "day", "--scripts", str(scripts)])

    run = parse_output(code, capsysbinary.readouterr().out.decode(), "")
    assert code == exit_code
    assert run.result["message"] == message
    assert ("ERROR", "runner error after the script ended: RuntimeError: boom") in run.levelled()


# --- the Python API: building, bounding and parsing results ------------------------------------------------

STAMP = "2026-11-26T08:00:00.123Z"


def _result(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "exit_code": 0,
        "message": "stop succeeded",
        "started_at": STAMP,
        "finished_at": STAMP,
        "dry_run": False,
        "health": None,
        "state": None,
        "logs": [],
    }
    return build_result(**(arguments | overrides))


def test_health_extras_go_last_first_and_only_when_no_log_line_fits() -> None:
    health = {"coverage_ratio": 1.0, "a": "x" * 1000, "b": "y" * 1000, "c": "z" * 3000, "generated_at": STAMP}
    logs = [{"time": STAMP, "level": "INFO", "message": f"line {i}"} for i in range(50)]

    result = _result(health=health, logs=logs)

    assert list(result["health"]) == ["coverage_ratio", "a", "b", "generated_at"]
    assert result["logs"] and result["logs"] == logs[-len(result["logs"]) :]
    assert len(dumps(result).encode()) <= MAX_RESULT_BYTES


def test_oversized_known_health_values_leave_the_gate_and_a_truncation_mark() -> None:
    gate = {"passed": True, "enforced": False, "failures": []}
    health = {"generated_at": "x" * 5000, "gate": gate}

    result = _result(health=health, state={"active_profile": "backup"})

    assert result["health"] == {"gate": gate, "truncated": True}
    assert result["state"] == {"active_profile": "backup"}


_numbers = st.none() | st.integers(-(10**40), 10**40) | st.floats(allow_nan=False, allow_infinity=False)
_texts = st.text(max_size=50) | st.integers(0, 3000).map(lambda n: "ü" * n)  # sometimes too long to fit
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _texts,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def _health(draw: st.DrawFn) -> dict[str, Any] | None:
    if draw(st.booleans()):
        return None
    health: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {}, optional={key: _numbers for key in HEALTH_NUMBERS} | {"generated_at": _texts}
        )
    )
    extras = st.dictionaries(st.text(max_size=30).filter(lambda key: key not in health), _json, max_size=10)
    health |= draw(extras)
    if draw(st.booleans()):
        thresholds = Thresholds(
            draw(st.floats(0, 1)), draw(st.integers(0, 10**30)), draw(st.integers(0, 10**30))
        )
        health["gate"] = evaluate(health, thresholds, enforced=draw(st.booleans()))
    return health


_state = st.none() | st.fixed_dictionaries({}, optional={key: st.none() | _texts for key in STATE_KEYS})
_messages = st.text(max_size=MAX_MESSAGE_CHARS) | st.integers(0, MAX_MESSAGE_CHARS).map(lambda n: "é" * n)


@st.composite
def _logs(draw: st.DrawFn) -> list[dict[str, str]]:
    """Up to 120 distinct lines (numbered), often long, so that the oldest ones often do not fit."""
    count = draw(st.integers(0, 120))
    levels = st.sampled_from(LOG_LEVELS)
    return [
        {"time": STAMP, "level": draw(levels), "message": f"{index}:{draw(_messages)}"[:MAX_MESSAGE_CHARS]}
        for index in range(count)
    ]


def _size(result: dict[str, Any]) -> int:
    return len(dumps(result).encode())


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    exit_code=st.sampled_from(list(ExitCode)),
    message=st.text(max_size=2000),
    health=_health(),
    state=_state,
    logs=_logs(),
    dry_run=st.booleans(),
)
def test_result_is_bounded_and_keeps_what_fits(
    exit_code: ExitCode,
    message: str,
    health: dict[str, Any] | None,
    state: dict[str, Any] | None,
    logs: list[dict[str, str]],
    dry_run: bool,
) -> None:
    result = _result(
        exit_code=exit_code, message=message, health=health, state=state, logs=logs, dry_run=dry_run
    )

    assert _size(result) <= MAX_RESULT_BYTES
    assert parse_result(RESULT_PREFIX + dumps(result)) == result
    assert result["exitCode"] == exit_code and result["dryRun"] is dry_run
    assert message.startswith(result["message"])
    kept = len(result["logs"])
    event(f"logs cut: {kept < len(logs)}, health cut: {result['health'] != health}")
    event(f"state cut: {result['state'] != state}")
    assert result["logs"] == logs[len(logs) - kept :]  # the newest lines
    if kept < len(logs):  # as many as fit
        assert _size({**result, "logs": logs[len(logs) - kept - 1 :]}) > MAX_RESULT_BYTES
    if result["health"] != health:  # health is cut only when even no log line would not make it fit
        assert _size({**result, "health": health, "state": state, "logs": []}) > MAX_RESULT_BYTES
        assert result["health"].get("gate") == health.get("gate")
        extras = [key for key in health if key not in (*HEALTH_KEYS, "gate")]
        if result["health"].get("truncated") and "truncated" not in health:  # the last resort
            known = {key: value for key, value in health.items() if key not in extras}
            assert _size({**result, "health": known, "state": state, "logs": []}) > MAX_RESULT_BYTES
        else:  # the last extras dropped, as few as possible
            kept_extras = [key for key in result["health"] if key in extras]
            assert kept_extras == extras[: len(kept_extras)]
            assert result["health"] == {
                key: health[key] for key in health if key not in extras[len(kept_extras) :]
            }
            one_more = {key: health[key] for key in health if key not in extras[len(kept_extras) + 1 :]}
            assert _size({**result, "health": one_more, "state": state, "logs": []}) > MAX_RESULT_BYTES
    if result["state"] != state:
        assert _size({**result, "state": state, "logs": []}) > MAX_RESULT_BYTES


def test_parse_log_line() -> None:
    line = {"time": STAMP, "level": "WARNING", "message": "careful"}

    assert parse_log_line(json.dumps(line)) == line
    assert parse_log_line("plain text") is None
    assert parse_log_line(RESULT_PREFIX + dumps(_result())) is None
    assert parse_log_line(json.dumps(line | {"level": "TRACE"})) is None
    assert parse_log_line(json.dumps(line | {"time": "yesterday"})) is None
    assert parse_log_line(json.dumps(line | {"extra": 1})) is None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("nope", "result is not JSON"),
        ("[]", "result is not a JSON object"),
        (json.dumps({"exitCode": 0}), "result keys are"),
        (dumps(_result() | {"exitCode": 1}), "result 'success' does not match exitCode 1"),
        (dumps(_result() | {"exitCode": True}), "result exitCode is not an exit code"),
        (dumps(_result() | {"startedAt": "soon"}), "result startedAt is not an ISO 8601 timestamp"),
        (dumps(_result() | {"dryRun": "no"}), "result dryRun is not a boolean"),
        (dumps(_result() | {"health": [1]}), "result health is neither an object nor null"),
        (dumps(_result() | {"logs": [{"time": STAMP, "level": "INFO"}]}), r"result logs\[0\]: not a"),
    ],
)
def test_parse_result_rejects_invalid_results(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_result(text)


def test_parse_result_accepts_the_printed_line_and_the_bare_json() -> None:
    result = _result(exit_code=3, message="health gate failed", state=REQUEST_STATE)

    assert parse_result(RESULT_PREFIX + dumps(result) + "\n") == result
    assert parse_result(dumps(result)) == result


def test_the_runner_needs_only_the_standard_library_and_the_contract() -> None:
    """The runner runs wherever Python does: it imports the standard library, runbooks.contract and
    runbooks.keys (themselves standard library only), so the exit codes, commands, time format and the
    names of Kubernetes objects have one definition."""
    probe = "import sys; before = set(sys.modules); import runner.cli; print(*(set(sys.modules) - before))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout.split()
    assert {name for name in loaded if name.startswith("runbooks.")} == {"runbooks.contract", "runbooks.keys"}
    others = {name.split(".")[0] for name in loaded} - sys.stdlib_module_names - {"runner", "runbooks"}
    assert others == set(), f"the runner imports more than the standard library: {sorted(others)}"


def test_the_oom_kills_of_a_job_pod_s_container_are_read_from_its_memory_cgroup(tmp_path, monkeypatch):
    """cgroup v2's memory.events, else v1's memory.oom_control; only by a container's PID 1 (the Job
    pod's runner): elsewhere the files at /sys/fs/cgroup count the whole machine's kills."""
    v2, v1 = tmp_path / "memory.events", tmp_path / "memory.oom_control"
    v2.write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 3\noom_group_kill 0\n")
    v1.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert execute.oom_kills((v2, v1)) is None, "not a container's PID 1"
    monkeypatch.setattr(execute.os, "getpid", lambda: 1)
    assert execute.oom_kills((v2, v1)) == 3
    assert execute.oom_kills((tmp_path / "missing", v1)) == 2
    assert execute.oom_kills((tmp_path / "missing",)) is None
