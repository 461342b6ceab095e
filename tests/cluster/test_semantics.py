"""What users rely on: at most one run per request id, one mutating run per target, and cancellation."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
from pathlib import Path

import pytest
from kubernetes import client

from controller.ledger import lease_name
from devcluster.processes import answers_200, process_gone, wait_until
from runbooks import keys
from tests.runbook_client import HOLD, Runbooks, lines, runbook, write_script

# Each run appends "<request id> start <epoch ns>" and "... end ..." to $RUNS, and is held in between until
# the test releases the runs (see HOLD).
RECORDING = f"""
    echo "$MDOPS_REQUEST_ID start $(date +%s%N)" >> "$RUNS"
    echo $$ > "$PIDS/$MDOPS_REQUEST_ID"
    {HOLD}
    echo "$MDOPS_REQUEST_ID end $(date +%s%N)" >> "$RUNS"
"""


@pytest.fixture
def rbs(api_client, namespace):
    return Runbooks(api_client, namespace)


@pytest.fixture
def env(tmp_path):
    (tmp_path / "pids").mkdir()
    folder = tmp_path / "scripts"
    for command in ("failover", "failback", "drill", "stop"):
        write_script(folder, command, RECORDING)
    write_script(folder, "health_check", "RELEASE=/\n" + RECORDING)  # never held
    yield tmp_path
    release(tmp_path)  # nothing held outlives the test


def script_env(tmp_path: Path) -> dict[str, str]:
    values = {
        "RUNS": str(tmp_path / "runs.log"),
        "PIDS": str(tmp_path / "pids"),
        "RELEASE": str(tmp_path / "go"),
        "BEATS": str(tmp_path / "beats.log"),
    }
    return {"MDOPS_SCRIPTS_DIR": str(tmp_path / "scripts"), "MDOPS_SCRIPT_ENV": json.dumps(values)}


def release(tmp_path: Path) -> None:
    """Let every held run go on (and every later one run through)."""
    (tmp_path / "go").touch()


def started(tmp_path: Path) -> list[str]:
    return [line.split()[0] for line in lines(tmp_path / "runs.log") if line.split()[1] == "start"]


def wait_started(tmp_path: Path, request_id: str) -> None:
    wait_until(lambda: request_id in started(tmp_path), 30, f"the script of {request_id} to start")


def test_reapplying_a_finished_manifest_does_not_run_it_again(start_controller, rbs, env, cluster, namespace):
    release(env)
    start_controller(**script_env(env))
    manifest = json.dumps(runbook("failover-1", command="failover", reason="switch"))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)
    first = rbs.wait_finished("failover-1")
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)
    again = rbs.get("failover-1")
    assert again["status"] == first["status"]
    assert started(env) == ["failover-1"]


def test_recreated_runbook_with_a_finished_request_id_is_a_duplicate(start_controller, rbs, env):
    release(env)
    start_controller(**script_env(env))
    rbs.create("first", command="failover", requestId="req-42")
    earlier = rbs.wait_finished("first")["status"]
    rbs.delete("first")
    wait_until(lambda: rbs.gone("first"), 30, "the Runbook to be deleted")
    rbs.create("first", command="failover", requestId="req-42")
    rbs.create("second", command="failover", requestId="req-42")
    for name in ("first", "second"):
        status = rbs.wait_finished(name)["status"]
        assert status["duplicateOf"].endswith("/first")
        assert (status["exitCode"], status["result"]) == (earlier["exitCode"], earlier["result"])
        assert {c["type"]: c for c in status["conditions"]}["Succeeded"]["reason"] == "Duplicate"
    assert started(env) == ["req-42"]


def test_a_request_id_used_again_with_other_parameters_is_refused_not_shown_the_first_result(
    start_controller, rbs, env
):
    """The first Runbook of a request id is gone (retention, a person), or still holds it: a Runbook with the
    same id and another command never runs, and never shows the first's success as its own."""
    start_controller(**script_env(env))
    rbs.create("first", command="failover", requestId="req-44")
    wait_started(env, "req-44")
    rbs.create("waiting", command="drill", requestId="req-44")  # while the first runs (held)
    assert rbs.wait_finished("waiting")["status"]["result"] == "failed"
    release(env)
    assert rbs.wait_finished("first")["status"]["result"] == "success"
    rbs.delete("first")
    wait_until(lambda: rbs.gone("first"), 30, "the Runbook to be deleted")
    rbs.create("other", command="failback", requestId="req-44")
    for name in ("waiting", "other"):
        status = rbs.wait_finished(name)["status"]
        assert (status["result"], status["exitCode"]) == ("failed", 2)
        assert status["duplicateOf"].endswith("/first")
        assert "not run: request id req-44 was used by" in status["message"]
        assert "with other parameters" in status["message"]
    assert started(env) == ["req-44"]


def test_a_request_id_whose_claim_was_edited_unreadable_waits_saying_so_until_the_claim_is_mended(
    start_controller, rbs, env, api_client, namespace
):
    """A person edited the ledger's Lease of a finished request id into something mdops cannot read: whether
    that request id ran, and how, cannot be told. A Runbook of it waits, saying which Lease to mend (before,
    it stayed without a word in its status, a traceback in the controller's log every 5 s); the runs of other
    request ids go on; deleted by the person, the Lease frees the request id."""
    release(env)
    start_controller(**script_env(env))
    rbs.create("first", command="drill", requestId="req-45")
    rbs.wait_finished("first")
    leases, name = client.CoordinationV1Api(api_client), lease_name("req-45")
    leases.patch_namespaced_lease(name, namespace, {"metadata": {"annotations": {keys.RESULT: "{not json"}}})
    rbs.create("again", command="drill", requestId="req-45")

    def why() -> str:
        return (rbs.condition("again", "Succeeded") or {}).get("message", "")

    wait_until(lambda: "mend that Lease" in why(), 30, "the waiting Runbook to say why")
    assert f"the ledger's Lease {name} cannot be read" in why() and keys.RESULT in why(), why()
    assert rbs.condition("again", "Succeeded")["status"] == "Unknown"
    rbs.create("other", command="drill", requestId="req-46")
    assert rbs.wait_finished("other")["status"]["result"] == "success"
    assert rbs.condition("again", "Succeeded")["status"] == "Unknown"
    assert started(env) == ["req-45", "req-46"]
    leases.delete_namespaced_lease(name, namespace)
    assert rbs.wait_finished("again")["status"]["result"] == "success"
    assert started(env) == ["req-45", "req-46", "req-45"]


def test_same_request_id_at_once_runs_once(start_controller, rbs, env):
    start_controller(**script_env(env))
    for index in range(5):
        rbs.create(f"twin-{index}", command="drill", requestId="req-twin")
    wait_started(env, "req-twin")
    release(env)
    results = [rbs.wait_finished(f"twin-{index}")["status"] for index in range(5)]
    assert started(env) == ["req-twin"]
    assert sum(1 for status in results if "duplicateOf" not in status) == 1


def test_mutating_runbooks_on_one_target_run_one_at_a_time_in_order(start_controller, rbs, env):
    start_controller(**script_env(env))
    rbs.create("a-failover", command="failover")
    rbs.wait_for("a-failover", "Running", "True")
    wait_started(env, "a-failover")  # its script's own record, before d-check's can come (a loaded machine)
    rbs.create("b-failback", command="failback")
    rbs.create("c-drill", command="drill")
    queued = rbs.wait_for("b-failback", "Queued", "True")
    message = {c["type"]: c for c in queued["status"]["conditions"]}["Queued"]["message"]
    assert "waiting for a-failover" in message
    # health_check takes no lock: it runs (to its end) while the failover, held, holds the lock.
    rbs.create("d-check", command="health_check")
    assert rbs.wait_finished("d-check")["status"]["result"] == "success"
    assert rbs.get("a-failover")["status"].get("result") is None
    assert started(env) == ["a-failover", "d-check"]
    release(env)
    for name in ("a-failover", "b-failback", "c-drill"):
        assert rbs.wait_finished(name)["status"]["result"] == "success"
    spans = {}
    for line in lines(env / "runs.log"):
        request, edge, stamp = line.split()
        spans.setdefault(request, {})[edge] = int(stamp)
    order = ["a-failover", "b-failback", "c-drill"]
    for earlier, later in itertools.pairwise(order):
        assert spans[earlier]["end"] <= spans[later]["start"], f"{later} overlapped {earlier}"


def test_the_queue_depth_is_reported_per_target(start_controller, rbs, env):
    groups = json.dumps({"backup": "feed-b"})
    controller = start_controller(MDOPS_LOCK_GROUPS=groups, **script_env(env))
    rbs.create("a1", command="failover")
    rbs.create("b1", command="failover", profile="backup")
    for name in ("a1", "b1"):
        rbs.wait_for(name, "Running", "True")
    rbs.create("a2", command="failback")
    rbs.create("a3", command="drill")
    rbs.create("b2", command="failback", profile="backup")
    for name in ("a2", "a3", "b2"):
        rbs.wait_for(name, "Queued", "True")

    def depths() -> dict[str, float]:
        found = re.findall(r'^md_runbook_queue_depth\{target="([^"]+)"\} (\S+)$', controller.metrics(), re.M)
        return {target: float(value) for target, value in found}

    expected = {f"{rbs.namespace}/default": 2.0, f"{rbs.namespace}/feed-b": 1.0}
    wait_until(lambda: depths() == expected, 30, f"queue depths {expected}")
    release(env)
    for name in ("a1", "a2", "a3", "b1", "b2"):
        rbs.wait_finished(name)
    wait_until(lambda: set(depths().values()) == {0.0}, 30, "empty queues")


def test_deleting_a_running_runbook_stops_its_run_and_releases_the_lock(start_controller, rbs, env):
    start_controller(**script_env(env))
    rbs.create("long", command="failover")
    rbs.wait_for("long", "Running", "True")
    pid = int(
        wait_until(
            lambda: (env / "pids" / "long").exists() and (env / "pids" / "long").read_text(), 30, "pid"
        )
    )
    rbs.delete("long")
    wait_until(lambda: rbs.gone("long"), 30, "the Runbook to be deleted")
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), 30, "the script to be stopped")
    # The lock was released: the next mutating runbook on the target starts.
    rbs.create("next", command="failback", reason="after the deleted one")
    rbs.wait_for("next", "Running", "True", timeout=30)
    wait_started(env, "next")
    # The cancelled run is remembered: re-creating it does not run it again.
    rbs.create("long", command="failover")
    status = rbs.wait_finished("long")["status"]
    assert (status["exitCode"], status["duplicateOf"]) == (130, f"{rbs.namespace}/long")
    assert started(env) == ["long", "next"]


@pytest.mark.parametrize("controller_down", [False, True], ids=["controller-up", "controller-down"])
def test_deleting_the_namespace_stops_its_runs_and_is_not_held_by_their_finalizers(
    start_controller, cluster, rbs, env, controller_down
):
    """Everything in a deleted namespace goes at once, the ledger's and the lock's Leases too, and nothing
    can be created in it any more: the runs are stopped and their Runbooks let go all the same, also by
    a controller that starts only after that (it can claim no request id there)."""
    first = start_controller("first", **script_env(env))
    rbs.create("running", command="failover")
    rbs.wait_for("running", "Running", "True")
    rbs.create("queued", command="failback")
    rbs.wait_for("queued", "Queued", "True")  # behind it, for the same target's lock
    pid = int(
        wait_until(
            lambda: (env / "pids" / "running").exists() and (env / "pids" / "running").read_text(), 30, "pid"
        )
    )
    # A schedule too: kopf keeps a finalizer on it (for its timer), and a slot comes every 5 s.
    schedule = {
        "apiVersion": "ops.mdops.io/v1alpha1",
        "kind": "RunbookSchedule",
        "metadata": {"name": "checks"},
        "spec": {"trigger": {"every": "5s"}, "template": {"command": "health_check"}},
    }
    cluster.kubectl("apply", "-n", rbs.namespace, "-f", "-", input=json.dumps(schedule))
    finalizers = ("get", "rbs", "checks", "-n", rbs.namespace, "-o", "jsonpath={.metadata.finalizers}")
    wait_until(lambda: cluster.kubectl(*finalizers).stdout.strip(), 30, "the schedule's finalizer")
    if controller_down:
        os.kill(first.process.popen.pid, signal.SIGKILL)
        first.process.popen.wait()
    cluster.kubectl("delete", "namespace", rbs.namespace, "--wait=false")
    if controller_down:
        leases = ("get", "leases", "-n", rbs.namespace, "-o", "name")
        wait_until(lambda: not cluster.kubectl(*leases).stdout.strip(), 60, "the Leases to be deleted")
        start_controller("second", MDOPS_STATE_DIR=first.env["MDOPS_STATE_DIR"], **script_env(env))
    wait_until(
        lambda: cluster.kubectl("get", "namespace", rbs.namespace, check=False).returncode != 0,
        60,
        "the namespace to be gone",
    )
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), 30, "the script to be stopped")
    assert "running" in started(env) and "queued" not in started(env)
    # A namespace of that name again is a new one: its first Runbook runs, whatever the old one held.
    cluster.kubectl("create", "namespace", rbs.namespace)
    release(env)
    rbs.create("running", command="failover")
    assert rbs.wait_finished("running", timeout=60)["status"]["result"] == "success"
    assert [run for run in started(env) if run == "running"] == ["running", "running"]


def test_controller_killed_mid_run_adopts_the_run_and_never_starts_it_twice(start_controller, rbs, env):
    first = start_controller("first", **script_env(env))
    rbs.create("adopted", command="drill")
    rbs.wait_for("adopted", "Running", "True")
    wait_started(env, "adopted")
    os.kill(first.process.popen.pid, signal.SIGKILL)
    first.process.popen.wait()
    # The new controller uses the same state folder, as a restarted pod or process would.
    second = start_controller("second", MDOPS_STATE_DIR=first.env["MDOPS_STATE_DIR"], **script_env(env))
    wait_until(lambda: answers_200(second.metrics_url), 30, "the second controller", [second.process])
    release(env)
    status = rbs.wait_finished("adopted", timeout=60)["status"]
    assert (status["result"], status["attempts"]) == ("success", 1)
    assert started(env) == ["adopted"]


def test_a_replica_that_pauses_leaves_its_runs_to_the_one_that_takes_over(
    start_controller, peering, rbs, env
):
    """A replica with a higher priority comes: the running one pauses (kopf's peering), leaves its run and
    its queue, and the new one adopts the run and runs the queue: each request once, in order."""
    state = env / "state"  # both replicas on one machine: the run's folder is found again
    common = {**peering, "MDOPS_STATE_DIR": str(state), **script_env(env)}
    low = start_controller("low", MDOPS_PRIORITY="10", **common)
    rbs.create("a-failover", command="failover")
    rbs.wait_for("a-failover", "Running", "True")
    wait_started(env, "a-failover")
    rbs.create("b-failback", command="failback")
    rbs.create("c-drill", command="drill")
    rbs.wait_for("c-drill", "Queued", "True")

    high = start_controller("high", MDOPS_PRIORITY="20", **common)

    def running(controller) -> float | None:
        if not answers_200(controller.metrics_url):
            return None
        found = re.search(r"^md_runbook_running (\S+)$", controller.metrics(), re.M)
        return float(found.group(1)) if found else 0.0

    # The witnesses of the handover: the new replica waits for the run, the old one no longer does.
    wait_until(lambda: running(high) == 1.0 and running(low) == 0.0, 60, "the run to change replicas")
    release(env)
    for name in ("a-failover", "b-failback", "c-drill"):
        status = rbs.wait_finished(name)["status"]
        assert (status["result"], status["attempts"]) == ("success", 1)
    assert started(env) == ["a-failover", "b-failback", "c-drill"]
    spans = {}
    for line in lines(env / "runs.log"):
        request, edge, stamp = line.split()
        spans.setdefault(request, {})[edge] = int(stamp)
    for earlier, later in itertools.pairwise(["a-failover", "b-failback", "c-drill"]):
        assert spans[earlier]["end"] <= spans[later]["start"], f"{later} overlapped {earlier}"


# RECORDING, after starting a child in the script's process group that appends a timestamp to $BEATS every
# 50 ms for as long as it lives (as a daemon the script forgot would go on changing the platform), at most a
# minute or so (so that a failed test leaves nothing behind).
BEATING = (
    """
    echo "the child beats"
    (i=0; while [ "$i" -lt 1200 ]; do date +%s%N >> "$BEATS"; sleep 0.05; i=$((i + 1)); done) &
    echo $! > "$PIDS/$MDOPS_REQUEST_ID.child"
"""
    + RECORDING
)


def test_a_killed_runner_leaves_nothing_running_when_the_next_run_starts(start_controller, rbs, env):
    """``kill -9`` of the runner (as the OOM killer does): its script and what the script started are
    killed, and seen gone, before the lock goes to the next mutating run; the run fails, never succeeds."""
    write_script(env / "scripts", "failover", BEATING)
    start_controller(**script_env(env))
    rbs.create("a-failover", command="failover")
    wait_started(env, "a-failover")
    rbs.create("b-failback", command="failback")
    rbs.wait_for("b-failback", "Queued", "True")
    script = int((env / "pids" / "a-failover").read_text())
    child = int((env / "pids" / "a-failover.child").read_text())
    execution = rbs.get("a-failover")["status"]["execution"]["name"]  # pid/<the runner's pid>
    wait_until(lambda: lines(env / "beats.log"), 30, "the child's first beat")

    def said() -> list[str]:
        return [line["message"] for line in rbs.get("a-failover")["status"].get("logs") or []]

    wait_until(lambda: "the child beats" in said(), 30, "the script's line in the run's status")

    os.kill(int(execution.removeprefix("pid/")), signal.SIGKILL)

    wait_started(env, "b-failback")
    # The witnesses: the killed run's script and its child, and the child's own heartbeats.
    assert process_gone(script) and process_gone(child)
    runs = {(request, edge): int(stamp) for request, edge, stamp in map(str.split, lines(env / "runs.log"))}
    assert max(int(beat) for beat in lines(env / "beats.log")) < runs["b-failback", "start"]
    assert ("a-failover", "end") not in runs
    status = rbs.wait_finished("a-failover")["status"]
    assert (status["exitCode"], status["result"]) == (125, "failed")
    died = "the runner died (killed by SIGKILL) without writing a result; killed what its script had left"
    assert status["message"].startswith(died), status["message"]
    # What the script said before its runner died stays in the run's log, the controller's word after it.
    logged = [(line["level"], line["message"]) for line in status["logs"]]
    assert ("INFO", "the child beats") in logged and logged[-1] == ("ERROR", status["message"]), logged
    release(env)
    assert rbs.wait_finished("b-failback")["status"]["result"] == "success"
