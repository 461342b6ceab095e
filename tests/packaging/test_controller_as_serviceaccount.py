"""The controller runs with its ServiceAccount's own credentials (the packaged Role), not the admin's."""

import re

from devcluster.processes import wait_until
from tests.cluster import test_semantics
from tests.cluster.test_executors import job_settings, jobs
from tests.cluster.test_guarantees import job_env, ledger_result
from tests.cluster.test_semantics import wait_started
from tests.runbook_client import Runbooks

env = test_semantics.env  # the recording scripts, held until released


def refused_nothing(controller) -> None:
    log = controller.process.log.read_text()
    # A 403 status, not the digits of a time (",403" milliseconds, "0.403 s").
    assert "Forbidden" not in log and not re.search(r"(?<![,.])\b403\b", log), (
        "the packaged Role lacks a permission the controller used"
    )


def test_controller_runs_a_job_with_its_own_serviceaccount(
    start_controller, cluster, api_client, namespace, controller_rbac, sa_kubeconfig, tmp_path
):
    kubeconfig = sa_kubeconfig(namespace, controller_rbac)
    controller = start_controller(
        MDOPS_KUBECONFIG=str(kubeconfig), **job_settings(cluster, namespace, tmp_path)
    )
    rbs = Runbooks(api_client, namespace)
    rbs.create("as-sa", command="failover", timeoutSeconds=90)
    status = rbs.wait_finished("as-sa")["status"]
    assert (status["exitCode"], status["result"], status["execution"]["executor"]) == (0, "success", "job")
    reasons = cluster.kubectl(
        "get", "events", "-n", namespace, "-o", "jsonpath={.items[*].reason}"
    ).stdout.split()
    assert {"Started", "Succeeded"} <= set(reasons)
    refused_nothing(controller)


def test_controller_stops_a_deleted_runbooks_job_with_its_own_serviceaccount(
    start_controller, cluster, api_client, namespace, controller_rbac, sa_kubeconfig, env
):
    """Its pods kept for their end while it is stopped (patched), then let go: the Job goes with them."""
    kubeconfig = sa_kubeconfig(namespace, controller_rbac)
    controller = start_controller(MDOPS_KUBECONFIG=str(kubeconfig), **job_env(cluster, namespace, env))
    rbs = Runbooks(api_client, namespace)
    rbs.create("stopped", command="failover")
    wait_started(env, "stopped")
    rbs.delete("stopped")
    wait_until(lambda: rbs.gone("stopped"), 60, "the deleted Runbook to go")
    assert ledger_result(api_client, namespace, "stopped")["exitCode"] == 130
    wait_until(lambda: not jobs(api_client, namespace), 60, "its Job and pod to go")
    refused_nothing(controller)
