"""The controller runs Runbooks on the real control plane: results, conditions, events and metrics."""

from __future__ import annotations

import datetime
import json

import pytest

from devcluster.processes import wait_until
from runbooks.calendar import VenueCalendar
from runbooks.contract import parse_time
from tests.conftest import keep_an_ended_calendar
from tests.runbook_client import HOLD, Runbooks, lines, write_script

HEALTHY = """
    echo "INFO: checking $MDOPS_COMMAND for $MDOPS_PROFILE in $MDOPS_WINDOW"
    echo "$MDOPS_REQUEST_ID dry=$MDOPS_DRY_RUN" >> "$RUNS"
    cat > "$MDOPS_REPORT_FILE" <<JSON
    {"health": {"coverage_ratio": ${COVERAGE:-0.999}, "consumer_backlog_messages": 12},
     "state": {"environment_mode": "$MDOPS_MODE", "active_profile": "backup",
               "active_window": "$MDOPS_WINDOW"}}
    JSON
"""


@pytest.fixture
def scripts(tmp_path):
    folder = tmp_path / "scripts"
    for command in ("health_check", "failover", "failback", "start", "drill"):
        write_script(folder, command, HEALTHY)
    return folder


@pytest.fixture
def runs_file(tmp_path):
    return tmp_path / "runs.log"


@pytest.fixture
def controller(start_controller, scripts, runs_file):
    return start_controller(MDOPS_SCRIPTS_DIR=str(scripts), MDOPS_SCRIPT_ENV=f'{{"RUNS": "{runs_file}"}}')


@pytest.fixture
def rbs(api_client, namespace):
    return Runbooks(api_client, namespace)


def test_successful_run_records_result_health_state_and_conditions(
    controller, rbs, runs_file, cluster, namespace
):
    rbs.create("check-1", command="health_check", window="day", reason="morning check")
    body = rbs.wait_finished("check-1")
    status = body["status"]
    assert (status["exitCode"], status["result"], status["requestId"], status["window"]) == (
        0,
        "success",
        "check-1",
        "day",
    )
    assert status["health"]["coverage_ratio"] == 0.999
    assert status["health"]["gate"]["passed"] is True
    assert status["state"] == {"environmentMode": "live", "activeProfile": "backup", "activeWindow": "day"}
    assert any("checking health_check for primary in day" in line["message"] for line in status["logs"])
    assert status["startedAt"] <= status["finishedAt"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Succeeded"]["status"] == "True"
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Reconciling"]["status"] == "False"
    assert all(c["observedGeneration"] == body["metadata"]["generation"] for c in conditions.values())
    assert lines(runs_file) == ["check-1 dry=0"]
    # kubectl wait works on the condition, and each transition (it started at once) left an Event.
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Succeeded", "rb/check-1", "--timeout=5s")
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "-o", "jsonpath={.items[*].reason}"
    ).stdout.split()
    assert {"Started", "Succeeded"} <= set(events)


@pytest.mark.parametrize(
    ("script", "spec", "code", "reason"),
    [
        ("echo 'ERROR: feed refused'; exit 1", {}, 1, "Failed"),
        ("exit 2", {}, 2, "InvalidArguments"),
        ("sleep 30", {"timeoutSeconds": 1}, 124, "TimedOut"),
        (None, {}, 125, "ExecutionError"),
    ],
    ids=["script-fails", "invalid-arguments", "timeout", "script-missing"],
)
def test_failed_runs_record_exit_code_and_reason(start_controller, rbs, tmp_path, script, spec, code, reason):
    folder = tmp_path / "failing"
    folder.mkdir()
    if script is not None:
        write_script(folder, "restart", script)
    start_controller(MDOPS_SCRIPTS_DIR=str(folder))
    rbs.create("rb", command="restart", **spec)
    status = rbs.wait_finished("rb")["status"]
    assert (status["exitCode"], status["result"]) == (code, "failed")
    succeeded = {c["type"]: c for c in status["conditions"]}["Succeeded"]
    assert (succeeded["status"], succeeded["reason"]) == ("False", reason)
    assert {c["type"]: c for c in status["conditions"]}["Stalled"]["status"] == "True"


def test_enforced_health_gate_fails_the_run_and_unenforced_only_warns(start_controller, rbs, tmp_path):
    folder = tmp_path / "degraded"
    write_script(folder, "health_check", HEALTHY)
    # The default gate wants coverage >= 0.99; this platform reports 0.5.
    env = f'{{"RUNS": "{tmp_path / "runs"}", "COVERAGE": "0.5"}}'
    start_controller(MDOPS_SCRIPTS_DIR=str(folder), MDOPS_SCRIPT_ENV=env)
    rbs.create("enforced", command="health_check", enforce=True)
    rbs.create("warned", command="health_check")
    enforced = rbs.wait_finished("enforced")["status"]
    assert (enforced["exitCode"], enforced["result"]) == (3, "failed")
    assert {c["type"]: c for c in enforced["conditions"]}["Succeeded"]["reason"] == "HealthGateFailed"
    assert enforced["health"]["gate"] == {
        "passed": False,
        "enforced": True,
        "failures": ["coverage_ratio 0.5 < 0.99"],
    }
    warned = rbs.wait_finished("warned")["status"]
    assert (warned["exitCode"], warned["result"]) == (0, "success")
    assert any(line["level"] == "WARNING" and "gate" in line["message"] for line in warned["logs"])


def test_dry_run_changes_no_reported_state_and_no_exit_code_metric(controller, rbs, runs_file):
    rbs.create("dry", command="failover", dryRun=True)
    status = rbs.wait_finished("dry")["status"]
    assert status["result"] == "success"
    assert "state" not in status
    assert lines(runs_file) == ["dry dry=1"]
    counted = 'md_runbook_runs_total{command="failover",result="success"} 1.0'
    metrics = wait_until(
        lambda: counted in (text := controller.metrics()) and text, 10, "the run to be counted"
    )
    assert 'md_runbook_exit_code{command="failover"}' not in metrics


def test_metrics_report_last_exit_code_counts_and_durations(controller, rbs):
    rbs.create("m1", command="health_check")
    rbs.wait_finished("m1")
    recorded = 'md_runbook_exit_code{command="health_check"} 0.0'
    metrics = wait_until(
        lambda: recorded in (text := controller.metrics()) and text, 10, "the exit code metric"
    )
    assert 'md_runbook_runs_total{command="health_check",result="success"} 1.0' in metrics
    assert 'md_runbook_duration_seconds_count{command="health_check",result="success"} 1.0' in metrics
    assert "md_runbook_queue_depth" in metrics


def test_logs_of_a_running_run_show_in_its_status(start_controller, rbs, tmp_path):
    folder = tmp_path / "chatty"
    # Far more lines than the status keeps, shown; then a later line must still reach the status. The script
    # holds after the 300 lines until the test has seen them, and again (until deleted) after the last one.
    script = (
        f'for i in $(seq 300); do echo "step $i"; done\n{HOLD}echo "INFO: halfway"\nRELEASE=/none\n{HOLD}'
    )
    write_script(folder, "drill", script)
    seen = tmp_path / "seen"
    start_controller(MDOPS_SCRIPTS_DIR=str(folder), MDOPS_SCRIPT_ENV=json.dumps({"RELEASE": str(seen)}))
    rbs.create("chatty", command="drill")

    def shown(message: str):
        def check():
            body = rbs.get("chatty")
            logs = (body.get("status") or {}).get("logs") or []
            return any(line["message"] == message for line in logs) and body

        return check

    wait_until(shown("step 300"), 30, "the first log lines in the running run's status")
    seen.touch()
    body = wait_until(shown("halfway"), 30, "a later log line in the running run's status")
    assert body["status"].get("result") is None  # still running
    assert len(body["status"]["logs"]) == 50
    rbs.delete("chatty")


@pytest.mark.parametrize("window", ["day", "night"])
def test_auto_window_comes_from_the_venue_calendar_and_its_mapping(
    start_controller, scripts, runs_file, rbs, window
):
    """The controller loads the venue's sessions (a child process of its own) and maps whatever state
    the venue is in now to the window this mapping gives every state: the script gets it too."""
    mapping = dict.fromkeys(("pre_open", "open", "lunch_break", "closed", "holiday"), window)
    start_controller(
        MDOPS_SCRIPTS_DIR=str(scripts),
        MDOPS_SCRIPT_ENV=f'{{"RUNS": "{runs_file}"}}',
        MDOPS_SESSION_WINDOWS=json.dumps(mapping),
    )
    rbs.create("auto-1", command="health_check")
    status = rbs.wait_finished("auto-1")["status"]
    assert (status["result"], status["window"], status["state"]["activeWindow"]) == (
        "success",
        window,
        window,
    )


def test_a_venue_the_library_knows_for_less_than_a_year_ahead_runs_until_then(
    start_controller, scripts, runs_file, rbs
):
    """exchange_calendars 4.13.2 records XSHG's holidays up to the end of 2026 only, and the controller asks
    for a year ahead: it still resolves the window of a run while the library knows the venue."""
    now = datetime.datetime.now(datetime.UTC)
    calendar = VenueCalendar("XSHG").at(now)
    if calendar.ended(now + datetime.timedelta(minutes=1)):
        pytest.skip(f"{calendar.table.library} knows XSHG no longer: the next test covers that")
    start_controller(
        MDOPS_SCRIPTS_DIR=str(scripts), MDOPS_SCRIPT_ENV=f'{{"RUNS": "{runs_file}"}}', MDOPS_VENUE="XSHG"
    )
    rbs.create("shanghai", command="health_check")
    status = rbs.wait_finished("shanghai")["status"]
    assert (status["result"], status["session"]["venue"]) == ("success", "XSHG")
    accepted = parse_time(rbs.get("shanghai")["metadata"]["creationTimestamp"])
    started = parse_time(status["startedAt"])
    assert status["window"] in {calendar.window(accepted), calendar.window(started)}


def test_past_what_the_library_knows_a_run_says_why_it_cannot_start_and_an_explicit_window_runs(
    start_controller, scripts, runs_file, rbs, tmp_path
):
    """As XSHG will be from 2027 with 4.13.2: the controller's kept session table (its cache, which it
    reads at start) ends yesterday, where the library's knowledge ends. An auto window is not guessed."""
    cache = tmp_path / "sessions.json"
    yesterday = keep_an_ended_calendar(cache)
    start_controller(
        MDOPS_SCRIPTS_DIR=str(scripts),
        MDOPS_SCRIPT_ENV=f'{{"RUNS": "{runs_file}"}}',
        MDOPS_VENUE="XSHG",
        MDOPS_CALENDAR_CACHE=str(cache),
    )
    rbs.create("auto", command="health_check")
    rbs.create("explicit", command="health_check", window="night")
    assert rbs.wait_finished("explicit")["status"]["result"] == "success"

    def said() -> str | bool:
        message = (rbs.condition("auto", "Succeeded") or {}).get("message", "")
        return f"records its holidays only up to {yesterday}" in message and message

    message = wait_until(said, 60, "the reason in the status")
    assert message.startswith("cannot start: ") and "give its window (day or night)" in message
    assert rbs.condition("auto", "Succeeded")["status"] == "Unknown"  # still waiting, not failed


def test_every_run_records_the_venues_session_it_was_accepted_in(controller, rbs):
    """The session state beside the resolved window, for auto and explicit windows alike, as the venue's
    real calendar has it at the time the run was accepted (checked against a calendar of the test's own)."""
    rbs.create("auto-2", command="health_check")
    rbs.create("explicit", command="health_check", window="night")
    calendar = VenueCalendar("XHKG")
    for name in ("auto-2", "explicit"):
        status = rbs.wait_finished(name)["status"]
        accepted = parse_time(rbs.get(name)["metadata"]["creationTimestamp"])
        # The state around the creation (the run was accepted within seconds of it).
        around = {calendar.at(accepted).state(accepted + datetime.timedelta(seconds=s)) for s in (-1, 10)}
        assert status["session"]["venue"] == "XHKG"
        assert status["session"]["state"] in around
    assert rbs.get("explicit")["status"]["window"] == "night"
