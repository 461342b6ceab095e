"""Cancel (``spec.cancel``): a run not started never starts, one running is stopped, the Runbook and its
record stay. Each test trusts the scripts' own records (see ``RECORDING``), not the controller's status."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from devcluster.processes import wait_until
from runbooks import keys
from tests.cluster import test_semantics
from tests.cluster.test_executors import jobs
from tests.cluster.test_gate import Gate, blackout, reason, rule, wait_reason
from tests.cluster.test_guarantees import claim_of, job_env, kill, ledger_result, script_pid
from tests.cluster.test_semantics import release, script_env, started, wait_started
from tests.runbook_client import Runbooks, wait_events

# The recording scripts and the Runbooks client of the semantics tests.
env, rbs = test_semantics.env, test_semantics.rbs

WHO = {"requestedBy": "alice", "reason": "wrong venue"}


def cancel(rbs: Runbooks, name: str, **fields: str) -> None:
    """Set ``spec.cancel`` as a person on shift does (kubectl patch --type merge)."""
    rbs.custom.patch_namespaced_custom_object(
        keys.GROUP, keys.VERSION, rbs.namespace, keys.PLURAL, name, {"spec": {"cancel": fields}}
    )


def assert_cancelled_unstarted(
    status: dict, message: str = "cancelled by alice before it started: wrong venue"
) -> None:
    assert (status["result"], status.get("exitCode"), status["message"]) == ("failed", None, message), status
    assert reason({"status": status}) == "Cancelled"


def test_a_queued_run_cancelled_never_runs_the_next_one_does_and_its_request_id_is_used_up(
    start_controller, rbs, env, api_client, namespace
):
    start_controller(**script_env(env))
    rbs.create("a-first", command="failover")
    wait_started(env, "a-first")
    rbs.create("b-cancelled", command="failback", requestId="req-b")
    rbs.create("c-next", command="drill")
    rbs.wait_for("b-cancelled", "Queued", "True")
    cancel(rbs, "b-cancelled", **WHO)
    assert_cancelled_unstarted(rbs.wait_finished("b-cancelled", timeout=30)["status"])
    assert rbs.get("a-first")["status"].get("result") is None  # ended at once, not after the run ahead
    wait_events(api_client, namespace, keys.KIND, "b-cancelled", "Cancelled")
    assert ledger_result(api_client, namespace, "req-b")["message"].startswith("cancelled by alice")
    release(env)
    for name in ("a-first", "c-next"):
        assert rbs.wait_finished(name)["status"]["result"] == "success"
    assert started(env) == ["a-first", "c-next"]
    rbs.create("b-again", command="failback", requestId="req-b")
    again = rbs.wait_finished("b-again")["status"]
    assert (again["duplicateOf"], again["result"], again.get("exitCode")) == (
        f"{namespace}/b-cancelled",
        "failed",
        None,
    )
    assert reason({"status": again}) == "Duplicate"
    assert started(env) == ["a-first", "c-next"]


def test_runs_held_for_their_window_or_awaiting_approval_cancelled_end_at_once(
    start_controller, rbs, env, api_client, namespace
):
    start_controller(**script_env(env))
    gate = Gate(api_client, namespace)
    gate.policy("freeze", rule("drills", ["drill"], blackouts=[blackout(3600)], outside="Wait"))
    gate.policy(
        "four-eyes", rule("failovers", ["failover"], approvals={"required": 2, "expireAfterSeconds": 600})
    )
    rbs.create("held", command="drill")
    rbs.create("awaiting", command="failover", requested_by="bob")
    wait_reason(rbs, "held", "Queued", "OutsideChangeWindow")
    wait_reason(rbs, "awaiting", "Queued", "AwaitingApproval")
    cancel(rbs, "held", reason="not today")
    cancel(rbs, "awaiting")
    assert_cancelled_unstarted(
        rbs.wait_finished("held", timeout=20)["status"], "cancelled before it started: not today"
    )
    assert_cancelled_unstarted(
        rbs.wait_finished("awaiting", timeout=20)["status"], "cancelled before it started"
    )
    assert rbs.get("held")["status"].get("waitingUntil") is None
    release(env)
    rbs.create("after", command="health_check")  # the controller went on: nothing of the two ran
    rbs.wait_finished("after")
    assert started(env) == ["after"]


def assert_stopped(
    rbs: Runbooks, env: Path, name: str, message: str = "cancelled by alice: wrong venue"
) -> None:
    status = rbs.wait_finished(name, timeout=60)["status"]
    assert (status["result"], status["exitCode"]) == ("failed", 130), status
    assert status["message"].startswith(message), status  # "; lost: ..." when its Job went with the stop
    assert reason({"status": status}) == "Cancelled"
    assert status["logs"], status  # the run's lines, kept
    assert started(env).count(name) == 1  # once (the next run on its target may start as soon as it ends)


def test_a_running_local_run_cancelled_is_stopped_kept_with_its_logs_and_frees_the_lock(
    start_controller, rbs, env, api_client, namespace
):
    controller = start_controller(**script_env(env))
    rbs.create("long", command="failover")
    rbs.wait_for("long", "Running", "True")
    pid = script_pid(env, "long")
    rbs.create("next", command="failback")
    rbs.wait_for("next", "Queued", "True")
    cancel(rbs, "long", **WHO)
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), 30, "the script to be stopped")
    assert_stopped(rbs, env, "long")
    said = controller.process.log.read_text()  # the person on shift reads who stopped it in the log
    assert f"{namespace}/long: stopping its run" in said and "cancelled by" in said, said[-2000:]
    assert f"{namespace}/long: its run" in said and "stopped: exit code 130" in said
    assert keys.FINALIZER not in (rbs.get("long")["metadata"].get("finalizers") or [])
    wait_started(env, "next")  # the lock was freed
    release(env)
    assert rbs.wait_finished("next")["status"]["result"] == "success"
    assert [line.split()[:2] for line in (env / "runs.log").read_text().splitlines()] == [
        ["long", "start"],
        ["next", "start"],
        ["next", "end"],
    ]


def test_a_running_job_cancelled_is_stopped_with_its_pod_and_kept(
    start_controller, cluster, rbs, env, api_client, namespace
):
    start_controller(**job_env(cluster, namespace, env))
    rbs.create("in-a-job", command="failover")
    wait_started(env, "in-a-job")
    cancel(rbs, "in-a-job", **WHO)
    status = rbs.wait_finished("in-a-job", timeout=60)["status"]
    assert (status["result"], status["exitCode"], status["message"]) == (
        "failed",
        130,
        "cancelled by alice: wrong venue",
    ), status
    core = client.CoreV1Api(api_client)
    wait_until(lambda: not core.list_namespaced_pod(namespace).items, 30, "the pod to be deleted")
    wait_until(lambda: not jobs(api_client, namespace), 30, "the Job to be deleted")
    assert rbs.get("in-a-job") is not None and started(env) == ["in-a-job"]
    release(env)
    rbs.create("next", command="failback")  # the lock was freed
    assert rbs.wait_finished("next")["status"]["result"] == "success"
    assert started(env) == ["in-a-job", "next"]


def test_a_cancel_set_while_no_controller_ran_and_a_runbook_created_cancelled_never_run(
    start_controller, rbs, env
):
    first = start_controller("first", **script_env(env))
    rbs.create("a-first", command="failover")
    wait_started(env, "a-first")
    rbs.create("b-queued", command="failback")
    rbs.wait_for("b-queued", "Queued", "True")
    kill(first)
    cancel(rbs, "b-queued", **WHO)
    rbs.create("c-created-cancelled", command="drill", cancel={"requestedBy": "bob"})
    rbs.create("d-created-cancelled", command="health_check", cancel={})
    release(env)
    start_controller("second", MDOPS_STATE_DIR=first.env["MDOPS_STATE_DIR"], **script_env(env))
    assert_cancelled_unstarted(rbs.wait_finished("b-queued")["status"])
    assert_cancelled_unstarted(
        rbs.wait_finished("c-created-cancelled")["status"], "cancelled by bob before it started"
    )
    assert_cancelled_unstarted(
        rbs.wait_finished("d-created-cancelled")["status"], "cancelled before it started"
    )
    first_status = rbs.wait_finished("a-first")["status"]
    assert first_status["result"] == "success", first_status
    assert started(env) == ["a-first"]


@pytest.mark.parametrize(
    ("executor", "cancel_first"),
    [("local", True), ("local", False), ("job", True)],
    ids=[
        "local-killed-right-after-the-cancel",
        "local-cancelled-while-down",
        "job-killed-right-after-the-cancel",
    ],
)
def test_a_running_runs_cancel_its_controller_did_not_live_to_carry_out_is_done_once_by_the_next(
    start_controller, cluster, namespace, rbs, env, executor, cancel_first
):
    """The controller is killed right after the cancel is written (it may have begun to stop the run), or
    the cancel comes while it is down: the next controller stops the run, which ran once, and records it
    cancelled."""
    settings = job_env(cluster, namespace, env) if executor == "job" else script_env(env)
    first = start_controller("first", **settings)
    rbs.create("long", command="failover")
    rbs.wait_for("long", "Running", "True")
    pid = script_pid(env, "long")
    if cancel_first:
        cancel(rbs, "long", **WHO)
    kill(first)
    if not cancel_first:
        cancel(rbs, "long", **WHO)
        assert Path(f"/proc/{pid}").exists()  # nobody stopped it yet
    start_controller("second", MDOPS_STATE_DIR=first.env["MDOPS_STATE_DIR"], **settings)
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), 30, "the script to be stopped")
    assert_stopped(rbs, env, "long")
    assert [line.split()[:2] for line in (env / "runs.log").read_text().splitlines()] == [["long", "start"]]


def test_a_duplicate_waiting_for_its_originals_result_cancelled_ends_at_once_and_the_original_runs_on(
    start_controller, rbs, env, api_client, namespace
):
    start_controller(**script_env(env))
    rbs.create("original", command="failover", requestId="req-o")
    wait_started(env, "req-o")
    rbs.create("twin", command="failover", requestId="req-o")
    wait_reason(rbs, "twin", "Queued", "Queued")  # waiting for the original's result
    cancel(rbs, "twin", **WHO)
    assert_cancelled_unstarted(rbs.wait_finished("twin", timeout=30)["status"])
    assert rbs.get("original")["status"].get("result") is None
    release(env)
    assert rbs.wait_finished("original")["status"]["result"] == "success"
    assert ledger_result(api_client, namespace, "req-o")["result"] == "success"  # the original's record
    assert started(env) == ["req-o"]


def test_a_run_waiting_for_a_slot_cancelled_ends_at_once(start_controller, rbs, env, api_client, namespace):
    start_controller(MDOPS_MAX_PARALLEL="1", **script_env(env))
    rbs.create("a-running", command="failover")
    wait_started(env, "a-running")
    rbs.create("b-for-a-slot", command="drill", dryRun=True)  # no lock: admitted, it waits for a slot
    wait_until(lambda: claim_of(api_client, namespace, "b-for-a-slot"), 30, "its claim")
    cancel(rbs, "b-for-a-slot", **WHO)
    assert_cancelled_unstarted(rbs.wait_finished("b-for-a-slot", timeout=20)["status"])
    assert rbs.get("a-running")["status"].get("result") is None  # not after the run that held the slot
    release(env)
    assert rbs.wait_finished("a-running")["status"]["result"] == "success"
    assert started(env) == ["a-running"]
