"""Controller replicas frozen (SIGSTOP: a VM paused, a long GC or swap stall, a container's cgroup frozen),
not killed: the connections stay open, nothing answers, and the replica wakes with what it knew before,
believing itself the active one, while the other took over meanwhile (kopf's peering, 4 s)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Iterator

import pytest

from controller import login
from controller.kubeapi import KubeApi, Started
from devcluster.components import ControllerProcess
from devcluster.processes import wait_until
from tests.cluster import test_semantics
from tests.cluster.test_cancelled_runs import WHO, assert_cancelled_unstarted, cancel
from tests.cluster.test_guarantees import job_env, wait_paused
from tests.cluster.test_semantics import release, started, wait_started
from tests.cluster.webhooks import held_writes

env, rbs = test_semantics.env, test_semantics.rbs


@contextlib.contextmanager
def frozen(controller: ControllerProcess) -> Iterator[None]:
    """``controller`` stopped (SIGSTOP) for the ``with`` block, continued (SIGCONT) after."""
    os.kill(controller.process.popen.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(controller.process.popen.pid, signal.SIGCONT)


def acting_pair(start_controller, settings: dict) -> tuple[ControllerProcess, ControllerProcess]:
    """The active replica (priority 20) and the standby (10), paused for it."""
    standby = start_controller("standby", MDOPS_PRIORITY="10", **settings)
    wait_until(lambda: "resuming" in standby.process.log.read_text(), 60, "the standby to act alone")
    active = start_controller("active", MDOPS_PRIORITY="20", **settings)
    wait_paused(standby)
    return active, standby


@pytest.mark.parametrize("cancelled", [False, True], ids=["ran", "cancelled"])
def test_a_replica_frozen_before_its_runs_start_wakes_to_the_others_end_and_records_it_once(
    start_controller, cluster, peering, rbs, env, api_client, namespace, tmp_path, cancelled
):
    """The active replica makes a run's Job (suspended) and freezes before it takes the claim's mark off.
    The standby takes over and runs it (or, the Runbook cancelled meanwhile, ends it cancelled before it
    started), and records its end. The frozen replica wakes and takes the mark off: the claim has a result.
    It took any for a cancel recorded by the other replica and failed on the spec's missing cancel (a
    KeyError, the step tried again 5 s later, then dropped as the Runbook left the watch). Now it finishes
    the run from the recorded end at once: the run ran once (or never), the other's end stands."""
    settings = {**job_env(cluster, namespace, env), **peering}
    active, standby = acting_pair(start_controller, settings)
    release(env)  # the scripts run through
    rule = {"apiGroups": ["batch"], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["jobs"]}
    with held_writes(api_client, tmp_path / "jobs", f"{namespace}-jobs", namespace, rule) as creates:
        rbs.create("elsewhere", command="failover")
        wait_until(creates.asked.is_set, 30, "the active replica to make the run's Job")
        with frozen(active):
            if cancelled:
                cancel(rbs, "elsewhere", **WHO)
            creates.released.set()  # the Job is made, the answer waits in the frozen replica's socket
            wait_until(lambda: "resuming" in standby.process.log.read_text(), 30, "the standby to take over")
            status = rbs.wait_finished("elsewhere", timeout=30)["status"]
    ended = ('"transition": "Cancelled"' if cancelled else '"transition": "Succeeded"', "a step failed")
    wait_until(lambda: any(e in active.process.log.read_text() for e in ended), 30, "the woken replica's end")
    assert "a step failed" not in active.process.log.read_text()
    if cancelled:
        assert_cancelled_unstarted(status)
    else:
        assert (status["result"], status["exitCode"]) == ("success", 0)
    assert started(env) == ([] if cancelled else ["elsewhere"])
    assert rbs.get("elsewhere")["status"] == status


def audited(controller: ControllerProcess, name: str) -> list[str]:
    """The transitions of Runbook ``name`` in the controller's audit lines, in order."""
    lines = (json.loads(line) for line in controller.process.log.read_text().splitlines() if line[:1] == "{")
    return [
        line["transition"] for line in lines if line.get("logger") == "mdops.audit" and line["name"] == name
    ]


def test_a_replica_frozen_while_the_other_starts_its_queued_run_adopts_it_and_keeps_its_recorded_start(
    start_controller, cluster, peering, rbs, env, api_client, namespace
):
    """A run waits for its target's lock behind a running one when the active replica freezes. The standby
    takes over, the running one is deleted (stopped), and the standby starts the waiting one and says so
    (Running, its start). The frozen replica wakes, believing itself the active one, with its view of before:
    the waiting run had not started. It started it again (its Job found running, so its script ran once), and
    wrote its own Running over the other's: a second `Started` in the audit, and a start moved to when it
    woke. Now it takes the other's Running from its watch and adopts the run, as a restarted controller
    does: one `Started`, the start the other recorded."""
    settings = {**job_env(cluster, namespace, env), **peering}
    active, standby = acting_pair(start_controller, settings)
    rbs.create("first", command="failover")
    wait_started(env, "first")
    rbs.create("second", command="failback")
    rbs.wait_for("second", "Queued", "True")
    with frozen(active):
        wait_until(lambda: "resuming" in standby.process.log.read_text(), 30, "the standby to take over")
        rbs.delete("first")
        wait_started(env, "second")
        recorded = rbs.wait_for("second", "Running", "True")["status"]["startedAt"]
    wait_until(lambda: "Cancelled" in audited(active, "first"), 30, "the woken replica to end the first")
    shown = set()  # the starts its Running statuses show

    def ended() -> bool:
        status = rbs.get("second")["status"]
        if status.get("result"):
            return True
        shown.add(status["startedAt"])
        return False

    release(env)
    wait_until(ended, 30, "the second to end", interval=0.02)
    assert started(env) == ["first", "second"]
    assert audited(standby, "second").count("Started") + audited(active, "second").count("Started") == 1
    assert shown == {recorded}


def test_a_status_that_names_no_run_is_never_written_over_one_that_names_the_run_another_replica_started(
    rbs, mdops_crds
):
    """A replica that wakes from a freeze writes from its view of before (a run queued, waiting for its
    lock) while the other replica started the run and wrote Running: the soak saw such a Queued hide a
    run for 6.8 s, until the run ended (its script quiet: nothing else wrote its status). The write of a
    status that names no run is made only while the stored one names none, whether its writer had seen a
    status (the test of its ``execution``) or none (of the status): else it raises Started with the
    Runbook as it is. Run on the real API server, whose JSON patch passes the test of an absent member."""
    uid = rbs.create("queued", command="failover")["metadata"]["uid"]
    queued = {"message": "waiting for earlier to finish on target t", "attempts": 0}
    running = {
        "message": "running as job queued-1",
        "attempts": 1,
        "execution": {"executor": "job", "name": "q-1"},
    }

    async def scenario() -> None:
        kube = KubeApi(lambda: login.from_kubeconfig(mdops_crds.kubeconfig))
        try:
            # No status yet, seen none: written; seen none, one written since without a run: written too.
            assert await kube.put_status(rbs.namespace, "queued", uid, queued, unstarted=False)
            assert await kube.put_status(rbs.namespace, "queued", uid, queued, unstarted=False)
            assert await kube.put_status(rbs.namespace, "queued", uid, queued, unstarted=True)
            rbs.set_status("queued", running)  # the other replica's start
            for seen in (True, False):
                with pytest.raises(Started) as started:
                    await kube.put_status(rbs.namespace, "queued", uid, queued, unstarted=seen)
                assert started.value.body["status"]["execution"]["name"] == "q-1"
            assert await kube.put_status(rbs.namespace, "queued", uid, {**running, "message": "logs"})
        finally:
            await kube.close()

    asyncio.run(scenario())
    assert rbs.get("queued")["status"]["message"] == "logs"
