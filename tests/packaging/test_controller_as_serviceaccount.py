"""The controller runs with its ServiceAccount's own credentials (the packaged Role), not the admin's."""

from tests.cluster.test_executors import job_settings
from tests.runbook_client import Runbooks


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
    log = controller.process.log.read_text()
    assert "Forbidden" not in log and "403" not in log, (
        "the packaged Role lacks a permission the controller used"
    )
