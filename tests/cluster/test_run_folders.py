"""The local executor's run folders: each is removed ``MDOPS_RUN_FOLDER_TTL_SECONDS`` after its run's result
is recorded, never before (the folder is the proof of what ran until then), and never while a process of its
run lives. Each test trusts what is on the disk and in ``/proc``, not the controller's word."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from controller.executors.launcher import NEVER_STARTED, PID_FILE
from devcluster.processes import wait_until
from tests.api.proxy import Proxy
from tests.cluster import test_semantics
from tests.cluster.test_frozen_replicas import audited
from tests.cluster.test_semantics import release, script_env, started, wait_started
from tests.runbook_client import write_script

# The recording scripts and the Runbooks client of the semantics tests.
env, rbs = test_semantics.env, test_semantics.rbs

TTL = 5
# A script that leaves a process behind in its runner's session, and ends.
LEAVES_A_PROCESS = 'sleep 600 >/dev/null 2>&1 &\necho $! > "$PIDS/left-behind"\n'


def create(controller, rbs, namespace: str, name: str, command: str) -> Path:
    """Create the Runbook ``name``; the folder its run has (or will have)."""
    uid = rbs.create(name, command=command)["metadata"]["uid"]
    return Path(controller.env["MDOPS_STATE_DIR"]) / namespace / uid


def test_a_finished_runs_folder_goes_after_its_ttl_and_one_whose_result_is_not_recorded_stays(
    start_controller, cluster, rbs, env, namespace, tmp_path
):
    """A run ends while the controller cannot reach the API server (its result cannot be recorded); another
    run's folder goes meanwhile, after its TTL. The first one's folder stays, and its result is the script's
    once the controller is back in reach; then its folder goes too."""
    with Proxy(cluster.server) as proxy:
        through_proxy = proxy.kubeconfig(cluster.kubeconfig, tmp_path / "through-proxy")
        settings = {"MDOPS_RUN_FOLDER_TTL_SECONDS": str(TTL), "MDOPS_KUBECONFIG": str(through_proxy)}
        controller = start_controller(**settings, **script_env(env))
        unrecorded = create(controller, rbs, namespace, "held", "failover")
        wait_started(env, "held")
        finished = create(controller, rbs, namespace, "done", "health_check")
        rbs.wait_finished("done")
        # Its end told (after its finished status's answer came back): cut sooner, that answer may be lost,
        # and the controller then keeps the folder, its end not known to be recorded, until it is back.
        wait_until(lambda: "Succeeded" in audited(controller, "done"), 30, "the controller to see done's end")
        proxy.cut()  # what ends from now on cannot be recorded
        release(env)
        wait_until(lambda: (unrecorded / "exit").exists(), 30, "the held run's runner to end")
        assert finished.exists(), "inconclusive: the finished run's folder went before the other run ended"
        wait_until(lambda: not finished.exists(), 3 * TTL + 30, "the finished run's folder to go")
        assert (unrecorded / "result.json").exists(), "a run's folder went before its result was recorded"
        proxy.resume()
        status = rbs.wait_finished("held", timeout=90)["status"]
        assert (status["result"], status["exitCode"]) == ("success", 0), status  # read from its folder
        assert started(env) == ["held", "done"]  # each ran once
        wait_until(lambda: not unrecorded.exists(), 3 * TTL + 30, "the held run's folder to go")


def test_a_runs_folder_stays_while_a_process_its_script_left_lives(start_controller, rbs, env, namespace):
    write_script(env / "scripts", "drill", LEAVES_A_PROCESS)
    controller = start_controller(MDOPS_RUN_FOLDER_TTL_SECONDS="1", **script_env(env))
    lingering = create(controller, rbs, namespace, "lingering", "drill")
    rbs.wait_finished("lingering")
    left = int((env / "pids" / "left-behind").read_text())
    try:
        # A later run's folder going means a pass came after the first one's TTL was over.
        done = create(controller, rbs, namespace, "done", "health_check")
        rbs.wait_finished("done")
        wait_until(lambda: not done.exists(), 30, "the later run's folder to go")
        assert lingering.exists(), "a run's folder went while a process its script left lived"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(left, signal.SIGKILL)
    wait_until(lambda: not lingering.exists(), 30, "the folder to go once that process is gone")


def test_the_folder_of_a_run_that_never_started_goes_after_its_ttl_too(start_controller, rbs, env, namespace):
    """A controller recorded a run as started and died having made its folder but asked no launcher: the
    next one finds it never started and fails it (its status said Running: never started again). Its folder,
    without a runner, is released with the result like any other, not kept for good."""
    uid = rbs.create("never", command="failover")["metadata"]["uid"]
    rbs.set_status("never", {"attempts": 1, "execution": {"executor": "local", "name": "pid/unknown"}})
    folder = env / "state" / namespace / uid
    folder.mkdir(parents=True)
    (folder / PID_FILE).write_text(NEVER_STARTED)
    start_controller(MDOPS_STATE_DIR=str(env / "state"), MDOPS_RUN_FOLDER_TTL_SECONDS="1", **script_env(env))
    status = rbs.wait_finished("never")["status"]
    assert status["message"].startswith("never started"), status["message"]
    wait_until(lambda: not folder.exists(), 30, "the never-started run's folder to go")
    assert started(env) == []
