"""The local control plane is a real one: CRDs, watches, status, Jobs, pods and garbage collection."""

from __future__ import annotations

import json
import signal
import textwrap

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from devcluster.controlplane import ControlPlane
from devcluster.processes import wait_until
from devcluster.supervisor import Backoff
from runbooks.kube import api_client, persistently

CRD = textwrap.dedent("""
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata: {name: widgets.test.mdops.io}
    spec:
      group: test.mdops.io
      scope: Namespaced
      names: {plural: widgets, singular: widget, kind: Widget}
      versions:
        - name: v1
          served: true
          storage: true
          subresources: {status: {}}
          schema:
            openAPIV3Schema:
              type: object
              properties:
                spec:
                  type: object
                  required: [size]
                  properties:
                    size: {type: integer, minimum: 1, maximum: 10}
                status:
                  type: object
                  properties:
                    phase: {type: string}
""")


@pytest.fixture(scope="module")
def widgets(cluster):
    cluster.kubectl("apply", "-f", "-", input=CRD)
    established = ("--for=condition=Established", "crd/widgets.test.mdops.io", "--timeout=60s")
    cluster.kubectl("wait", *established, timeout=90)
    return client.CustomObjectsApi


def _widget(name: str, size) -> dict:
    return {
        "apiVersion": "test.mdops.io/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": size},
    }


def test_custom_resource_is_served_watched_and_its_status_patched(widgets, api_client, namespace):
    api = widgets(api_client)
    args = ("test.mdops.io", "v1", namespace, "widgets")
    created = api.create_namespaced_custom_object(*args, _widget("w1", 3))

    events = watch.Watch().stream(
        api.list_namespaced_custom_object, *args, resource_version="0", timeout_seconds=20
    )
    seen = next(e for e in events if e["object"]["metadata"]["name"] == "w1")
    assert seen["type"] == "ADDED"
    assert seen["object"]["spec"] == {"size": 3}

    api.patch_namespaced_custom_object_status(*args, "w1", {"status": {"phase": "Ready"}})
    current = api.get_namespaced_custom_object(*args, "w1")
    assert current["status"] == {"phase": "Ready"}
    # The status subresource is separate: patching status did not bump the generation.
    assert current["metadata"]["generation"] == created["metadata"]["generation"]


def test_the_api_server_collects_its_garbage_half_as_often(cluster):
    """Go's collector took a fifth of the API server's CPU in a burst of Jobs: it runs with GOGC=200, as
    the API server itself says (its Go runtime's metrics)."""
    metrics = cluster.kubectl("get", "--raw", "/metrics").stdout.splitlines()
    assert "go_gc_gogc_percent 200" in metrics


def test_the_api_server_gives_its_cpu_profile(cluster):
    """Where the API server's CPU goes, in its own words (Go's pprof format: gzipped)."""
    assert cluster.cpu_profile(1)[:2] == b"\x1f\x8b"


def test_api_server_rejects_an_object_that_violates_the_schema(widgets, cluster, namespace):
    manifest = json.dumps(_widget("too-big", 11))
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest, check=False)
    assert result.returncode != 0
    assert "spec.size" in result.stderr
    assert "should be less than or equal to 10" in result.stderr
    missing = cluster.kubectl("get", "widget", "too-big", "-n", namespace, check=False)
    assert "NotFound" in missing.stderr


def _job(name: str, annotations: dict[str, str], command: list[str] | None = None, env=()) -> dict:
    container = {"name": "main", "image": "example.invalid/job:1", "env": [dict(e) for e in env]}
    if command:
        container["command"] = command
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {"restartPolicy": "Never", "containers": [container]},
            },
        },
    }


def job_condition(batch: client.BatchV1Api, name: str, namespace: str):
    job = batch.read_namespaced_job_status(name, namespace)
    done = [
        c.type for c in job.status.conditions or [] if c.type in ("Complete", "Failed") and c.status == "True"
    ]
    return done[0] if done else None


def _terminated(core: client.CoreV1Api, job: str, namespace: str):
    pods = core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items
    assert len(pods) == 1
    return pods[0].status.container_statuses[0].state.terminated


def test_job_whose_pod_exits_zero_completes(api_client, namespace):
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    batch.create_namespaced_job(namespace, _job("ok", {"podsim.mdops.io/termination-message": "all good"}))
    assert wait_until(lambda: job_condition(batch, "ok", namespace), 60, "job ok to finish") == "Complete"
    terminated = _terminated(core, "ok", namespace)
    assert (terminated.exit_code, terminated.message) == (0, "all good")


def test_a_pod_that_runs_for_no_time_is_reported_once_ended_never_running(api_client, namespace):
    """As a kubelet, which looks at its containers once a second, reports a container that exited at once:
    ended, never ``Running`` (each report is a write of the pod, and a Job's controller writes the Job
    again for a pod that is ready). A pod that runs for a while is reported ``Running`` first."""
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    version = core.list_namespaced_pod(namespace).metadata.resource_version
    batch.create_namespaced_job(namespace, _job("quick", {}))
    batch.create_namespaced_job(namespace, _job("slow", {"podsim.mdops.io/duration-seconds": "0.5"}))
    phases: dict[str, list[str]] = {"quick": [], "slow": []}
    stream = watch.Watch().stream(
        core.list_namespaced_pod, namespace, resource_version=version, timeout_seconds=60
    )
    for event in stream:
        pod = event["object"]
        seen = phases[pod.metadata.labels["job-name"]]
        if not seen or seen[-1] != pod.status.phase:
            seen.append(pod.status.phase)
        if all(seen and seen[-1] == "Succeeded" for seen in phases.values()):
            break
    assert phases == {"quick": ["Pending", "Succeeded"], "slow": ["Pending", "Running", "Succeeded"]}


def test_job_whose_pod_exits_three_fails_with_its_exit_code_and_message(api_client, namespace):
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    annotations = {"podsim.mdops.io/exit-code": "3", "podsim.mdops.io/termination-message": "gate failed"}
    batch.create_namespaced_job(namespace, _job("bad", annotations))
    assert wait_until(lambda: job_condition(batch, "bad", namespace), 60, "job bad to finish") == "Failed"
    terminated = _terminated(core, "bad", namespace)
    assert (terminated.exit_code, terminated.message) == (3, "gate failed")
    pod = core.list_namespaced_pod(namespace, label_selector="job-name=bad").items[0]
    assert pod.status.phase == "Failed"


def test_exec_pod_runs_its_command_and_reports_the_termination_message(api_client, namespace):
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    # The container finds its termination message path through an env value: podsim rewrites it.
    script = 'echo "ran as $0" > "$MESSAGE"; exit 7'
    env = [{"name": "MESSAGE", "value": "/dev/termination-log"}]
    job = _job("exec", {"podsim.mdops.io/run": "exec"}, ["sh", "-c", script, "podsim-test"], env)
    batch.create_namespaced_job(namespace, job)
    assert wait_until(lambda: job_condition(batch, "exec", namespace), 60, "job exec to finish") == "Failed"
    terminated = _terminated(core, "exec", namespace)
    assert (terminated.exit_code, terminated.message.strip()) == (7, "ran as podsim-test")


def test_deleting_a_job_garbage_collects_its_pod(api_client, namespace):
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    batch.create_namespaced_job(namespace, _job("gc", {"podsim.mdops.io/duration-seconds": "600"}))

    def pod_running():
        pods = core.list_namespaced_pod(namespace, label_selector="job-name=gc").items
        return pods and pods[0].status.phase == "Running" and pods[0]

    pod = wait_until(pod_running, 60, "the job's pod to run")
    assert pod.metadata.owner_references[0].kind == "Job"
    batch.delete_namespaced_job("gc", namespace, propagation_policy="Background")

    def pod_gone():
        try:
            core.read_namespaced_pod(pod.metadata.name, namespace)
        except ApiException as error:
            return error.status == 404
        return False

    wait_until(pod_gone, 60, "the garbage collector to delete the pod")


@pytest.mark.parametrize(
    "annotations, command",
    [
        ({"podsim.mdops.io/duration-seconds": "600"}, None),
        # Ignores SIGTERM: killed when the grace period is over.
        ({"podsim.mdops.io/run": "exec"}, ["sh", "-c", "trap '' TERM; sleep 600"]),
    ],
    ids=["scripted", "exec-ignoring-sigterm"],
)
def test_a_deleted_pod_ends_failed_so_that_its_job_lets_it_go(api_client, namespace, annotations, command):
    """A kubelet reports a deleted pod's terminal phase before it goes. A Job that replaces only failed pods
    (as mdops's are) waits for that phase to count the pod and take away its tracking finalizer: without it
    the pod, and the namespace it is in, would stay for ever."""
    batch, core = client.BatchV1Api(api_client), client.CoreV1Api(api_client)
    job = _job("stopped", annotations, command)
    job["spec"]["podReplacementPolicy"] = "Failed"
    batch.create_namespaced_job(namespace, job)

    def pod_running():
        pods = core.list_namespaced_pod(namespace, label_selector="job-name=stopped").items
        return pods and pods[0].status.phase == "Running" and pods[0]

    pod = wait_until(pod_running, 60, "the job's pod to run")
    core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=2)
    assert wait_until(lambda: job_condition(batch, "stopped", namespace), 60, "the job to end") == "Failed"
    assert batch.read_namespaced_job_status("stopped", namespace).status.failed == 1
    wait_until(lambda: not core.list_namespaced_pod(namespace).items, 30, "the pod to be gone")


def test_a_pod_that_has_ended_is_removed_by_the_api_server_alone(tmp_path):
    """A pod that has ended is deleted with no grace period, and the API server removes it itself: the node
    sends no DELETE of its own, which would only find it gone (404). Its own control plane: the API server
    counts every client's requests, and no other test's may be among them."""
    with ControlPlane(tmp_path / "cluster") as plane:
        kube = api_client(plane.kubeconfig)
        batch, core = client.BatchV1Api(kube), client.CoreV1Api(kube)
        batch.create_namespaced_job("default", _job("ended", {}))
        ended = wait_until(lambda: job_condition(batch, "ended", "default"), 60, "the Job to end")
        assert ended == "Complete"
        pod = core.list_namespaced_pod("default", label_selector="job-name=ended").items[0]
        before = plane.request_counts()
        core.delete_namespaced_pod(pod.metadata.name, "default")
        # podsim handles the events in order: once it has run the next pod, it has seen the deletion.
        batch.create_namespaced_job("default", _job("next", {}))
        wait_until(lambda: job_condition(batch, "next", "default"), 60, "the next Job to end")
        calls = plane.request_counts() - before
        assert {key: n for key, n in calls.items() if key.startswith("DELETE ")} == {"DELETE pods": 1}


def test_a_pod_runs_on_while_the_api_server_is_away_and_its_end_is_reported_when_it_is_back(tmp_path):
    """podsim, as a kubelet, outlives the API server: the pod's process runs on, its end (while the server is
    away) is reported once it is back, and podsim itself is not restarted (which would lose the pod)."""
    release = tmp_path / "release"
    backoff = Backoff(initial=0.25, cap=1.0)
    with ControlPlane(tmp_path / "cluster", supervise=True, backoff=backoff) as plane:
        kube = api_client(plane.kubeconfig)
        batch, core = client.BatchV1Api(kube), client.CoreV1Api(kube)
        script = f'while [ ! -e "{release}" ]; do sleep 0.05; done'
        batch.create_namespaced_job(
            "default", _job("outlives", {"podsim.mdops.io/run": "exec"}, ["sh", "-c", script])
        )

        def pod_running():
            pods = core.list_namespaced_pod("default", label_selector="job-name=outlives").items
            return pods and pods[0].status.phase == "Running"

        wait_until(pod_running, 60, "the job's pod to run")
        processes = {process.name: process for process in plane.processes}
        podsim = processes["podsim"].popen.pid
        processes["kube-apiserver"].popen.send_signal(signal.SIGKILL)
        processes["kube-apiserver"].popen.wait()
        release.touch()  # the pod's process ends while the API server is away
        ended = wait_until(
            lambda: persistently(job_condition, batch, "outlives", "default", within=60),
            90,
            "the job to end",
        )
        assert ended == "Complete"
        assert processes["podsim"].popen.pid == podsim and processes["podsim"].alive()
