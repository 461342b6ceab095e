"""The manifests' Deployment run from the image: the controller (with the local executor, as the chart's
``controller.executor=local`` runs it) and its API sidecar, with the manifests' security context,
environment and mounts, next to the demo simulator (as the chart's ``simulator.enabled`` runs it). Each
is a container of the image; a real Prometheus scrapes the simulator and the controller.

The containers use this machine's network (``--network host``): the controller and the API reach the
control plane on loopback, the reference scripts reach the simulator, the test reaches all three.
Nothing else would reach them: every address they listen on is 127.0.0.1.

The controller and the API log in as a pod's do (``MDOPS_IN_CLUSTER=true``, as the manifests set it): as
the manifests' ServiceAccount, with its RBAC, from the token volume a kubelet mounts and the API server's
address in ``KUBERNETES_SERVICE_HOST``/``_PORT`` (:func:`tests.image.conftest.in_pod`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from devcluster import podman
from devcluster.components import install_rbac
from devcluster.processes import free_port, wait_until
from devcluster.prometheus import Prometheus, ScrapeTarget
from tests.image.conftest import (
    KUBE_API_ACCESS,
    UID,
    Container,
    Containers,
    deployment,
    in_pod,
    service_account_volume,
    uid_of_pid_1,
    with_env,
    writable_places,
)
from tests.runbook_client import Runbooks

TOKEN = "image-test-admin-token"
GRACE_SECONDS = 30  # a pod's terminationGracePeriodSeconds (the manifests keep Kubernetes' default)
STATE = "/var/lib/mdops"


@dataclass
class Deployed:
    namespace: str
    sim: Container
    controller: Container
    api: Container
    sim_url: str
    api_url: str

    def sim_status(self) -> dict:
        return httpx.get(f"{self.sim_url}/admin/status").json()


@pytest.fixture(scope="module")
def deployed(image, cluster, identities, tmp_path_factory) -> Iterator[Deployed]:
    """The pod in a namespace of its own, as the manifests install it there: their ServiceAccount, RBAC
    and identity policies; the controller and the API with that ServiceAccount's token volume."""
    workdir = tmp_path_factory.mktemp("deployed")
    namespace = f"image-deployment-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    containers = Containers(image, workdir)
    pod = deployment()
    manifest = {c["name"]: c for c in pod["containers"]}
    ports = {name: free_port() for name in ("sim", "metrics", "liveness", "api")}
    sim_url = f"http://127.0.0.1:{ports['sim']}"
    common = {"MDOPS_NAMESPACE": namespace}
    try:
        account = install_rbac(cluster, namespace, workdir)
        assert account == pod["serviceAccountName"], "the pod runs as the manifests' ServiceAccount"
        token = {KUBE_API_ACCESS["name"]: service_account_volume(cluster, namespace, account, workdir)}
        simulator = {
            "name": "simulator",
            "args": [
                *("python", "-m", "sim", "--host", "127.0.0.1", "--port", str(ports["sim"])),
                *("--failover-ms", "300", "--failover-jitter", "0"),
            ],
            "resources": {"limits": {"memory": "128Mi"}},
            "securityContext": manifest["controller"]["securityContext"],
        }
        sim = containers.run("sim", {"securityContext": pod["securityContext"]}, simulator)

        # The local executor: its runs' state in an emptyDir, the image's own reference scripts.
        controller_pod = {**pod, "volumes": [*pod["volumes"], {"name": "state", "emptyDir": {}}]}
        controller = with_env(
            manifest["controller"],
            **common,
            MDOPS_EXECUTOR="local",
            MDOPS_METRICS_HOST="127.0.0.1",
            MDOPS_METRICS_PORT=str(ports["metrics"]),
            MDOPS_LIVENESS_PORT=str(ports["liveness"]),
            MDOPS_SCRIPT_ENV=json.dumps({"MDOPS_SIM_URL": sim_url}),
        )
        controller["volumeMounts"] = [*controller["volumeMounts"], {"name": "state", "mountPath": STATE}]
        controller = containers.run("controller", *in_pod(controller_pod, controller, cluster), volumes=token)

        targets = [
            ScrapeTarget("sim", f"127.0.0.1:{ports['sim']}"),
            ScrapeTarget("controller", f"127.0.0.1:{ports['metrics']}"),
        ]
        with Prometheus(workdir / "prometheus", targets, scrape_interval="1s") as prometheus:
            api = with_env(
                manifest["api"],
                **common,
                MDOPS_API_HOST="127.0.0.1",
                MDOPS_API_PORT=str(ports["api"]),
                MDOPS_PROMETHEUS_URL=prometheus.url,
                OPS_API_TOKEN=TOKEN,
            )
            api = containers.run("api", *in_pod(pod, api, cluster), volumes=token)
            api_url = f"http://127.0.0.1:{ports['api']}"
            wait_until(lambda: sim.answers(f"{sim_url}/healthz"), 60, "the simulator container")
            wait_until(
                lambda: controller.answers(f"http://127.0.0.1:{ports['metrics']}/metrics"),
                60,
                "the controller container",
            )
            wait_until(lambda: api.answers(f"{api_url}/readyz"), 60, "the API container to be ready")
            wait_until(prometheus.targets_up, 60, "Prometheus to scrape the simulator and the controller")
            yield Deployed(namespace, sim, controller, api, sim_url, api_url)
    finally:
        containers.remove()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def api(deployed) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=deployed.api_url, headers=headers, timeout=60) as client:
        yield client


@pytest.mark.parametrize(
    ("program", "writable"),
    [("sim", set()), ("controller", {"/tmp", STATE}), ("api", {"/tmp"})],
)
def test_each_program_runs_as_uid_10001_on_a_read_only_root_writing_only_to_its_mounts(
    deployed, program, writable
):
    container = getattr(deployed, program)
    assert uid_of_pid_1(container) == {UID}
    places = writable_places(container)
    assert places["/"] == "EROFS", "the root filesystem is read-only"
    assert {place for place, outcome in places.items() if outcome == "ok"} == writable, places


def process_state(container: Container, pid: int) -> str | None:
    """The state letter of process ``pid`` in ``container`` (``Z``: a zombie), None once it is gone."""
    result = podman.podman("exec", container.name, "cat", f"/proc/{pid}/stat", check=False)
    return result.stdout.rsplit(")", 1)[1].split()[0] if result.returncode == 0 else None


def test_the_controller_container_reaps_what_a_script_leaves_behind(deployed):
    """A script's background job that outlives the script, and its runner, is orphaned to the container's
    PID 1 (the local executor runs scripts in the controller's container). When it ends, PID 1 must reap
    it, or every such run leaves a zombie for the container's life. Here a shell orphans its own job the
    same way; the job ends at once."""
    orphan = int(deployed.controller.exec("sh", "-c", "sleep 0.1 & echo $!"))
    wait_until(lambda: process_state(deployed.controller, orphan) in (None, "Z"), 30, "the orphan to end")
    wait_until(
        lambda: process_state(deployed.controller, orphan) is None, 5, "PID 1 to reap the ended orphan"
    )


def test_the_api_answers_health_and_readiness_without_a_token(deployed):
    for path in ("/healthz", "/readyz"):
        response = httpx.get(deployed.api_url + path)
        assert response.status_code == 200, response.text


def test_execute_runs_a_health_check_in_the_controller_container_with_the_image_s_scripts(deployed, api):
    request_id = f"hc-{uuid.uuid4().hex[:8]}"
    body = {"command": "health_check", "request_id": request_id}
    response = api.post("/api/ops/runbooks/execute", json=body)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["runbook"]["status"], body["runbook"]["exit_code"]) == ("success", 0), body
    sim = deployed.sim_status()
    assert body["health"]["expected_total"] == sim["expected_total"]
    assert body["health"]["active_total"] == sim["active_total"]
    assert body["health"]["gate"]["passed"] is True

    looked_up = api.get(f"/api/ops/runbooks/{request_id}")  # execute's shape, of which the read says more
    assert looked_up.status_code == 200, looked_up.text
    read = looked_up.json()["runbook"]
    assert {key: read[key] for key in body["runbook"]} == body["runbook"]
    status = api.get("/api/ops/status")
    assert status.status_code == 200
    assert status.json()["last_exit_codes"]["health_check"] == 0
    assert request_id in status.json()["health_by_request"]


def test_the_metrics_endpoints_serve_what_prometheus_scraped_from_the_containers(deployed, api):
    def summary_with_a_run():
        body = api.get("/api/ops/metrics/summary").json()
        fresh = not body["coverage_ratio"]["stale"] and not body["runbook_exit_code"]["stale"]
        return body if fresh else None

    api.post("/api/ops/runbooks/execute", json={"command": "health_check"}).raise_for_status()
    summary = wait_until(summary_with_a_run, 60, "the summary to show the simulator and a finished run")
    assert summary["coverage_ratio"]["context"]["expected_total"] == deployed.sim_status()["expected_total"]
    assert summary["runbook_exit_code"]["value"] == 0
    series = api.get("/api/ops/metrics/timeseries", params={"metric": "md_feed_up", "minutes": 5})
    assert series.status_code == 200, series.text
    assert series.json()["points"], "Prometheus has samples of the simulator"


def test_the_controller_runs_a_kubectl_runbook_with_the_local_executor(deployed, api_client):
    runbooks = Runbooks(api_client, deployed.namespace)
    created = runbooks.create("failover-in-the-image", command="failover", reason="image test")
    status = runbooks.wait_finished("failover-in-the-image")["status"]
    assert (status["result"], status["exitCode"], status["execution"]["executor"]) == ("success", 0, "local")
    assert deployed.sim_status()["active_source"] == "backup", "the reference script failed the feed over"
    run = deployed.controller.volumes["state"] / deployed.namespace / created["metadata"]["uid"]
    assert (run / "result.json").stat().st_uid == UID, "the run's files are the image user's"


def test_the_image_s_mdops_command_speaks_to_the_api(deployed):
    """The console scripts the image installs (mdops, kubectl-mdops) run with the runtime's interpreter."""
    env = ("--env", f"MDOPS_API_URL={deployed.api_url}", "--env", f"MDOPS_API_TOKEN={TOKEN}")
    for command in ("mdops", "kubectl-mdops"):
        answer = podman.podman("exec", *env, deployed.api.name, command, "status", "-o", "json").stdout
        assert set(json.loads(answer)) >= {"environment_mode", "last_runbook", "audit"}


def test_the_packaged_role_refused_neither_program_anything(deployed):
    """After the runs above: the API server refused no call of the controller or the API as the pod's
    ServiceAccount (kopf and the API's watches log a 403 and go on)."""
    for container in (deployed.controller, deployed.api):
        log = container.logs(last=None)
        assert "forbidden" not in log.lower(), f"{container.name}: the Role lacks a permission:\n{log}"


def test_each_program_stops_at_sigterm_and_exits_0(deployed):
    """Last in this module: ``podman stop`` sends SIGTERM, as a kubelet does, which tini passes on. Each
    program stops well within a pod's grace period (the API with an event stream open) and exits 0: a
    stop that was asked for and went well is no error (a container's exit code is what a kubelet
    reports)."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.stream("GET", f"{deployed.api_url}/api/ops/events", headers=headers, timeout=60) as events:
        assert events.status_code == 200
        for container in (deployed.api, deployed.controller, deployed.sim):
            began = time.monotonic()
            podman.podman("stop", f"--time={GRACE_SECONDS}", container.name)
            took = time.monotonic() - began
            exit_code = container.state()["ExitCode"]
            assert (exit_code, took < GRACE_SECONDS / 2) == (0, True), (took, container.logs())
