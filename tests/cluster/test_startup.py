"""What a starting controller costs: finished Runbooks cost it nothing but their place in the API server's
cache (no handler, no patch, no API call for each), whatever their number. And what it needs: not its
CRDs before it, which it finds when they come."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

from devcluster.components import ControllerProcess
from devcluster.controlplane import ControlPlane
from devcluster.processes import wait_until
from runbooks import keys
from runbooks.kube import api_client
from tests.runbook_client import Runbooks, write_script

FINISHED = 150
# What the controller reads and writes per object: a call on one of these for each finished Runbook
# would show as at least FINISHED calls.
PER_OBJECT = ("runbooks", "runbooks/status", "leases")
STAMP = "2026-11-26T08:00:00.000Z"


def finished_status(name: str) -> dict:
    """A status as the controller leaves a successful run."""
    conditions = [
        {"type": kind, "status": status, "reason": "Succeeded", "message": "", "lastTransitionTime": STAMP}
        for kind, status in (
            ("Succeeded", "True"),
            ("Queued", "False"),
            ("Running", "False"),
            ("Ready", "True"),
            ("Reconciling", "False"),
            ("Stalled", "False"),
        )
    ]
    return {
        "requestId": name,
        "window": "day",
        "exitCode": 0,
        "result": "success",
        "message": "succeeded",
        "startedAt": STAMP,
        "finishedAt": STAMP,
        "conditions": conditions,
    }


def per_object_calls(calls) -> int:
    """Calls on Runbooks and Leases other than lists, watches and deletions (those come from the
    namespace controller too, as earlier tests' namespaces go)."""
    return sum(
        count
        for key, count in calls.items()
        if key.split(" ")[1] in PER_OBJECT and key.split(" ")[0] not in ("LIST", "WATCH", "DELETE")
    )


def test_finished_runbooks_cost_the_starting_controller_no_api_call(
    start_controller, api_client, namespace, cluster, tmp_path
):
    rbs = Runbooks(api_client, namespace)

    def finished(index: int) -> None:
        name = f"done-{index:03d}"
        rbs.create(name, command="health_check")
        rbs.set_status(name, finished_status(name))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(finished, range(FINISHED)))
    write_script(tmp_path / "scripts", "health_check", "echo ok")

    before = cluster.request_counts()
    controller = start_controller(MDOPS_SCRIPTS_DIR=str(tmp_path / "scripts"))
    rbs.create("after-start", command="health_check")
    rbs.watch_finished("after-start")  # a watch: the test's own reads are no GETs to count

    # The witness is the API server's own count; the start is over when it stops moving.
    seen = [per_object_calls(cluster.request_counts())]

    def settled():
        now = cluster.request_counts()
        seen.append(per_object_calls(now))
        return seen[-1] == seen[-2] and now

    calls = wait_until(settled, 30, "the controller's calls to stop", [controller.process], interval=1)
    counted = per_object_calls(calls - before) - 1  # the test's own create of "after-start"
    # The new Runbook's run costs a few calls (claim, finalizer, status, ledger result); a call for
    # each finished Runbook would cost FINISHED more.
    assert 0 < counted < FINISHED // 10, dict(calls - before)
    assert all(rbs.get(f"done-{index:03d}")["status"]["result"] == "success" for index in (0, FINISHED - 1))


def test_a_controller_started_before_its_crds_serves_runbooks_once_they_are_applied(tmp_path):
    """GitOps applies the CRDs and the controller together, in any order, and a starting API server can
    answer discovery without some kinds: a controller that did not find its kinds as it started looks for
    them again, and runs the Runbooks once their CRDs are there (it ran nothing until restarted before)."""
    write_script(tmp_path / "scripts", "health_check", "echo ok")
    with ControlPlane(tmp_path / "cluster") as plane:
        plane.kubectl("create", "namespace", "early")
        (tmp_path / "controller").mkdir()
        env = {"MDOPS_SCRIPTS_DIR": str(tmp_path / "scripts")}
        controller = ControllerProcess(plane.kubeconfig, "early", tmp_path / "controller", env)
        try:
            # kopf's own word that its discovery found no Runbooks (kopf is pinned).
            unresolved = (
                rf"Unresolved resources cannot be served.*group='{keys.GROUP}'.*any_name='{keys.PLURAL}'"
            )
            wait_until(
                lambda: re.search(unresolved, controller.process.log.read_text()),
                60,
                "the controller to find no Runbooks",
                [controller.process],
            )
            plane.install_crds()
            rbs = Runbooks(api_client(plane.kubeconfig), "early")
            rbs.create("after-its-crd", command="health_check")
            assert rbs.wait_finished("after-its-crd", timeout=60)["status"]["result"] == "success"
        finally:
            controller.stop()


def test_a_replica_started_before_the_peering_crd_acts_once_it_is_applied(tmp_path):
    """With peering, kopf pauses the replica while it has not found the KopfPeering kind, and it discovers
    once: a replica started while a restarting API server listed the Runbooks but not kopf.dev's kinds (or
    before the peering component was applied) stayed paused for good, looking alive, and ran nothing."""
    write_script(tmp_path / "scripts", "health_check", "echo ok")
    with ControlPlane(tmp_path / "cluster") as plane:
        plane.install_crds()
        plane.kubectl("create", "namespace", "early")
        (tmp_path / "controller").mkdir()
        env = {"MDOPS_SCRIPTS_DIR": str(tmp_path / "scripts"), "MDOPS_PEERING": "mdops"}
        controller = ControllerProcess(plane.kubeconfig, "early", tmp_path / "controller", env)
        try:
            # Its dispatcher's word that kopf, its discovery done, paused it.
            wait_until(
                lambda: "pausing" in controller.process.log.read_text(), 60, "the pause", [controller.process]
            )
            plane.install_peering("early")
            rbs = Runbooks(api_client(plane.kubeconfig), "early")
            rbs.create("after-the-peering-crd", command="health_check")
            assert rbs.wait_finished("after-the-peering-crd", timeout=60)["status"]["result"] == "success"
        finally:
            controller.stop()
