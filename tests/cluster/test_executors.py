"""The Job executor on simulated pods, and two controller replicas with kopf peering."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from devcluster.processes import answers_200, wait_until
from runbooks.keys import start_claim_name
from runner.request import BASE_ENV, Request, contract_env
from sim.process import run_sim
from tests.runbook_client import (
    AWKWARD_TEXTS,
    HOLD,
    Runbooks,
    ran_in,
    recorded_environ,
    wait_for_one_acting,
    write_script,
)

# Held (see HOLD) only when the test gives the script a $RELEASE file to wait for.
REPORTING = f"""
    echo "INFO: $MDOPS_COMMAND in a Job"
    RELEASE="${{RELEASE:-/}}"
    {HOLD}
    echo '{{"health": {{"coverage_ratio": 0.997}}}}' > "$MDOPS_REPORT_FILE"
    exit "${{EXIT:-0}}"
"""


@pytest.fixture
def rbs(api_client, namespace):
    return Runbooks(api_client, namespace)


def job_settings(cluster, namespace: str, tmp_path, **script_env: str) -> dict[str, str]:
    """Settings of a controller using the Job executor with the test's scripts in a ConfigMap; podsim
    runs the runner the Job describes."""
    folder = tmp_path / "scripts"
    write_script(folder, "health_check", REPORTING)
    write_script(folder, "failover", REPORTING)
    cluster.kubectl("create", "configmap", "test-scripts", "-n", namespace, f"--from-file={folder}")
    return {**image_job_settings(**script_env), "MDOPS_SCRIPTS_CONFIGMAP": "test-scripts"}


def image_job_settings(**script_env: str) -> dict[str, str]:
    """Settings of a controller using the Job executor with the image's scripts (no ConfigMap): podsim
    runs the Job's runner on this checkout, whose examples/scripts/ are what the image holds."""
    return {
        "MDOPS_EXECUTOR": "job",
        "MDOPS_RUNNER_COMMAND": json.dumps([sys.executable, "-m", "runner"]),
        "MDOPS_JOB_POD_ANNOTATIONS": json.dumps({"podsim.mdops.io/run": "exec"}),
        "MDOPS_SCRIPT_ENV": json.dumps(script_env),
    }


def jobs(api_client, namespace: str) -> list[client.V1Job]:
    return client.BatchV1Api(api_client).list_namespaced_job(namespace).items


def test_job_executor_runs_the_runner_in_an_owned_job_and_reads_its_termination_message(
    start_controller, cluster, api_client, namespace, rbs, tmp_path
):
    start_controller(**job_settings(cluster, namespace, tmp_path))
    created = rbs.create("in-a-job", command="health_check", timeoutSeconds=90)
    status = rbs.wait_finished("in-a-job")["status"]
    assert (status["exitCode"], status["result"]) == (0, "success")
    assert status["health"]["coverage_ratio"] == 0.997
    assert any(line["message"] == "health_check in a Job" for line in status["logs"])
    [job] = jobs(api_client, namespace)
    assert status["execution"] == {"executor": "job", "name": job.metadata.name}
    volumes = {volume.name: volume for volume in job.spec.template.spec.volumes}
    assert volumes["scripts"].config_map.name == "test-scripts"
    owner = job.metadata.owner_references[0]
    assert (owner.kind, owner.uid, owner.controller) == ("Runbook", created["metadata"]["uid"], True)
    assert (job.spec.backoff_limit, job.spec.active_deadline_seconds) == (0, 120)
    assert (job.spec.pod_replacement_policy, job.spec.ttl_seconds_after_finished) == ("Failed", 3600)
    # Its pod claimed the run's start before the script ran (runner/claim.py): the claim names the pod.
    [pod] = client.CoreV1Api(api_client).list_namespaced_pod(namespace).items
    claim = client.CoordinationV1Api(api_client).read_namespaced_lease(
        start_claim_name(job.metadata.name), namespace
    )
    assert claim.spec.holder_identity == pod.metadata.name
    assert [(o.kind, o.uid) for o in claim.metadata.owner_references] == [("Job", job.metadata.uid)]


def test_job_executor_runs_the_images_reference_scripts_unless_a_configmap_is_named(
    start_controller, api_client, namespace, rbs
):
    with run_sim() as sim:
        start_controller(**image_job_settings(MDOPS_SIM_URL=sim.url))
        rbs.create("reference", command="failover", timeoutSeconds=90)
        status = rbs.wait_finished("reference")["status"]
        assert (status["exitCode"], status["result"]) == (0, "success"), status.get("logs")
        # The witness: the simulator itself was switched by the reference failover script.
        assert sim.status()["active_source"] == "backup"
    assert status["state"]["activeProfile"] == "backup"
    assert any(line["message"].startswith("failover completed in") for line in status["logs"])
    [job] = jobs(api_client, namespace)
    pod = job.spec.template.spec
    assert "scripts" not in [v.name for v in pod.volumes]
    assert "/etc/mdops/scripts" in pod.containers[0].args


def test_a_job_script_gets_the_request_text_verbatim_and_a_minimal_environment(
    start_controller, cluster, namespace, rbs, tmp_path
):
    """In a Job the request is JSON in the runner's environment: a reason that argparse would take for an
    option, or the kubelet for a variable reference, reaches the script as written (its own record)."""
    folder, seen = tmp_path / "scripts", tmp_path / "seen"
    seen.mkdir()
    write_script(folder, "health_check", 'cat /proc/$$/environ > "$SEEN/$MDOPS_REQUEST_ID"\n')
    cluster.kubectl("create", "configmap", "env-scripts", "-n", namespace, f"--from-file={folder}")
    start_controller(**image_job_settings(SEEN=str(seen)), MDOPS_SCRIPTS_CONFIGMAP="env-scripts")
    reasons = {"dash": "--dry-run", "all": " ".join(AWKWARD_TEXTS) + "\ttab\nnewline"}
    for name, reason in reasons.items():
        rbs.create(name, command="health_check", reason=reason, config="-x", timeoutSeconds=90)
    for name, reason in reasons.items():
        status = rbs.wait_finished(name, timeout=90)["status"]
        assert status["result"] == "success", status
        script = recorded_environ(seen / name)
        assert (script["MDOPS_REASON"], script["MDOPS_CONFIG"]) == (reason, "-x")
        contract = set(contract_env(Request("stop", "r", "day"), tmp_path))
        assert set(script) - set(BASE_ENV) == {"SEEN"} | contract  # nothing of the pod's own environment


def test_a_job_script_gets_a_secrets_variables_it_is_passed_and_the_job_names_the_secret_only(
    start_controller, cluster, namespace, rbs, api_client, tmp_path
):
    """MDOPS_JOB_SCRIPT_SECRET: the Secret's keys are the Job pod's variables (envFrom, read by the kubelet),
    and a script gets those MDOPS_SCRIPT_PASS_ENV names (its own record); the Job holds the Secret's name,
    never its value. A Secret that is not there leaves the pod waiting, as a kubelet does, and the run
    fails with its reason."""
    password = "feed-password-never-in-a-job"
    folder, seen = tmp_path / "scripts", tmp_path / "seen"
    seen.mkdir()
    write_script(folder, "health_check", 'cat /proc/$$/environ > "$SEEN/$MDOPS_REQUEST_ID"\n')
    cluster.kubectl("create", "configmap", "env-scripts", "-n", namespace, f"--from-file={folder}")
    secret = {"metadata": {"name": "feed"}, "stringData": {"FEED_PASSWORD": password, "NOT_PASSED": "x"}}
    client.CoreV1Api(api_client).create_namespaced_secret(namespace, secret)
    settings = {
        **image_job_settings(SEEN=str(seen)),
        "MDOPS_SCRIPTS_CONFIGMAP": "env-scripts",
        "MDOPS_SCRIPT_PASS_ENV": json.dumps(["FEED_PASSWORD"]),
        "MDOPS_JOB_START_FAILURE_SECONDS": "2",
    }
    first = start_controller(**settings, MDOPS_JOB_SCRIPT_SECRET="feed")
    rbs.create("with-secret", command="health_check")
    assert rbs.wait_finished("with-secret", timeout=90)["status"]["result"] == "success"
    script = recorded_environ(seen / "with-secret")
    assert script["FEED_PASSWORD"] == password and "NOT_PASSED" not in script
    [job] = jobs(api_client, namespace)
    spec = json.dumps(api_client.sanitize_for_serialization(job))
    assert password not in spec and '"envFrom": [{"secretRef": {"name": "feed"}}]' in spec

    first.stop()
    start_controller("second", **settings, MDOPS_JOB_SCRIPT_SECRET="missing")
    rbs.create("without-secret", command="health_check", timeoutSeconds=600)
    status = rbs.wait_finished("without-secret", timeout=90)["status"]
    assert (status["result"], status.get("exitCode")) == ("failed", 125), status
    assert 'CreateContainerConfigError: secret "missing" not found' in status["message"], status["message"]


def test_job_executor_reports_a_failing_script(start_controller, cluster, namespace, rbs, tmp_path):
    start_controller(**job_settings(cluster, namespace, tmp_path, EXIT="1"))
    rbs.create("fails", command="failover")
    status = rbs.wait_finished("fails")["status"]
    assert (status["exitCode"], status["result"]) == (1, "failed")


PULL_FAILURE = 'Back-off pulling image "registry.invalid/mdops:1"'


@pytest.fixture
def unstartable(start_controller, cluster, namespace, tmp_path):
    """``unstartable(limit, annotations=None)``: a controller with the Job executor and
    MDOPS_JOB_START_FAILURE_SECONDS ``limit``, whose pods podsim keeps waiting, by default as a kubelet keeps
    a pod whose image cannot be pulled."""

    def start(limit: str, annotations: dict[str, str] | None = None) -> None:
        annotations = annotations or {
            "podsim.mdops.io/waiting-reason": "ImagePullBackOff",
            "podsim.mdops.io/waiting-message": PULL_FAILURE,
        }
        settings = {
            **job_settings(cluster, namespace, tmp_path),
            "MDOPS_JOB_POD_ANNOTATIONS": json.dumps(annotations),
            "MDOPS_JOB_START_FAILURE_SECONDS": limit,
        }
        start_controller(**settings)

    return start


def said_why(rbs: Runbooks, name: str) -> list[dict]:
    logs = ((rbs.get(name) or {}).get("status") or {}).get("logs") or []
    return [line for line in logs if "cannot start: ImagePullBackOff: " in line["message"]]


def test_a_job_whose_pod_cannot_start_fails_with_the_kubelets_reason_once_its_job_is_gone(
    unstartable, api_client, namespace, rbs
):
    unstartable("2")
    rbs.create("no-start", command="failover", timeoutSeconds=600)
    status = rbs.wait_finished("no-start")["status"]
    assert (status["result"], status.get("exitCode")) == ("failed", 125), status
    expected = f"did not start within 2 s (ImagePullBackOff: {PULL_FAILURE}); its Job was deleted"
    assert expected in status["message"], status["message"]
    assert rbs.condition("no-start", "Succeeded")["reason"] == "ExecutionError"
    assert [line["level"] for line in status["logs"]] == ["WARNING", "ERROR"], status["logs"]
    assert said_why(rbs, "no-start")
    assert not jobs(api_client, namespace)  # gone before the result said the run never started


def test_a_pod_that_cannot_start_is_shown_and_waited_for_when_the_start_failure_limit_is_off(
    unstartable, api_client, namespace, rbs
):
    unstartable("0")
    rbs.create("waits", command="failover", timeoutSeconds=600)
    (line,) = wait_until(lambda: said_why(rbs, "waits"), 30, "the run's log to say why its pod cannot start")
    assert line["level"] == "WARNING" and line["message"].endswith(PULL_FAILURE), line
    assert rbs.condition("waits", "Running")["status"] == "True"
    assert len(jobs(api_client, namespace)) == 1
    rbs.delete("waits")
    wait_until(lambda: rbs.gone("waits"), 30, "the deleted Runbook to go")
    wait_until(lambda: not jobs(api_client, namespace), 30, "its Job to go")


def test_a_pod_waiting_for_a_node_is_said_and_waited_for_past_the_start_failure_limit(
    unstartable, api_client, namespace, rbs
):
    """No node has room for it: that may change (other pods end, a node is added), so the run waits, as
    its Job does, and says why."""
    unstartable("1", {"podsim.mdops.io/unschedulable": "0/3 nodes are available: 3 Insufficient cpu."})
    rbs.create("no-room", command="failover", timeoutSeconds=600)

    def said() -> list[dict]:
        logs = ((rbs.get("no-room") or {}).get("status") or {}).get("logs") or []
        return [line for line in logs if "cannot start: Unschedulable: 0/3 nodes" in line["message"]]

    (line,) = wait_until(said, 30, "the run's log to say its pod has no node")
    assert "the run fails" not in line["message"], line
    seen = time.monotonic()

    def still_waiting() -> bool:  # watched for four times the limit: it never gives up
        assert rbs.condition("no-room", "Running")["status"] == "True"
        assert len(jobs(api_client, namespace)) == 1
        return time.monotonic() - seen > 4

    wait_until(still_waiting, 30, "four seconds of the run waiting for a node", interval=0.25)
    rbs.delete("no-room")  # its unscheduled pod is let go as the pod garbage collector would
    wait_until(lambda: rbs.gone("no-room"), 30, "the deleted Runbook to go")
    wait_until(lambda: not jobs(api_client, namespace), 30, "its Job to go")


@contextlib.contextmanager
def refusing(
    cluster,
    namespace: str,
    group: str,
    resource: str,
    probe: tuple[str, ...],
    reason: str = "Forbidden",
    operation: str = "CREATE",
    allowed: str = "false",
) -> Iterator[str]:
    """An admission policy that refuses to create any ``resource`` of ``group`` in the test's namespace (403,
    as a policy engine or a quota would; 422 with ``reason`` Invalid, a policy's default), in force once this
    is entered (``probe``, a server-side dry run, is refused) and gone once it is left; the message it refuses
    them with. Another ``operation`` may be refused instead, and only where the CEL expression ``allowed``
    is false."""
    name = f"no-{resource}-{namespace}"
    message = f"no {resource} in {namespace}: the test's policy"
    manifest = f"""
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {name}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {{apiGroups: ["{group}"], apiVersions: [v1], operations: [{operation}], resources: [{resource}]}}
  validations: [{{expression: "{allowed}", message: "{message}", reason: {reason}}}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {name}}}
spec:
  policyName: {name}
  validationActions: [Deny]
  matchResources: {{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {namespace}}}}}}}
"""
    cluster.kubectl("apply", "-f", "-", input=manifest)
    probe = (*probe, "-n", namespace, "--dry-run=server")
    wait_until(
        lambda: message in cluster.kubectl(*probe, check=False).stderr, 30, f"the policy on {resource}"
    )
    try:
        yield message
    finally:
        cluster.kubectl("delete", "-f", "-", "--wait=false", input=manifest, check=False)


@pytest.fixture
def pods_refused(cluster, namespace):
    with refusing(cluster, namespace, "", "pods", ("run", "probe", "--image=none", "--restart=Never")) as why:
        yield why


def test_a_job_whose_pod_is_refused_fails_with_the_api_servers_words_once_its_job_is_gone(
    start_controller, cluster, api_client, namespace, rbs, tmp_path, pods_refused
):
    """The Job controller cannot create the pod: only its FailedCreate Events say so, read for a run that has
    had no pod for a while."""
    start_controller(**job_settings(cluster, namespace, tmp_path), MDOPS_JOB_START_FAILURE_SECONDS="2")
    rbs.create("refused", command="failover", timeoutSeconds=600)
    status = rbs.wait_finished("refused", timeout=60)["status"]
    assert (status["result"], status.get("exitCode")) == ("failed", 125), status
    assert "did not start within 2 s (FailedCreate: " in status["message"], status["message"]
    assert pods_refused in status["message"], status["message"]
    said = [line for line in status["logs"] if "cannot start: FailedCreate: " in line["message"]]
    assert [line["level"] for line in said] == ["WARNING"], status["logs"]
    assert "the pod of Job " in said[0]["message"], said
    assert not jobs(api_client, namespace)  # gone before the result said the run never started


JOB_PROBE = ("create", "job", "probe", "--image=none")


@pytest.mark.parametrize("reason", ["Forbidden", "Invalid"])
def test_a_run_whose_job_is_refused_asks_again_and_runs_once_the_refusal_lifts(
    start_controller, cluster, api_client, namespace, rbs, tmp_path, reason
):
    """A quota on Jobs, or a policy (403; 422 when it denies as Invalid, a policy's default), refuses the
    run's Job: that may lift (other Jobs end, the policy is mended), so the run waits, saying why, and runs
    once it does, once."""
    start_controller(**job_settings(cluster, namespace, tmp_path), MDOPS_JOB_START_FAILURE_SECONDS="600")
    with refusing(cluster, namespace, "batch", "jobs", JOB_PROBE, reason) as why:
        rbs.create("refused", command="failover", timeoutSeconds=600)

        def says_why() -> dict | None:
            succeeded = rbs.condition("refused", "Succeeded") or {}
            return (
                succeeded if "cannot start yet, its Job is refused" in succeeded.get("message", "") else None
            )

        succeeded = wait_until(says_why, 30, "the run's status to say its Job is refused")
        assert (succeeded["status"], succeeded["reason"]) == ("Unknown", "Pending")
        assert why in succeeded["message"]
        assert not jobs(api_client, namespace)
    status = rbs.wait_finished("refused", timeout=60)["status"]
    assert (status["result"], status["exitCode"]) == ("success", 0), status
    assert any(line["message"] == "failover in a Job" for line in status["logs"])
    assert len(jobs(api_client, namespace)) == 1


def test_a_run_whose_job_stays_refused_fails_not_run_after_the_start_failure_limit(
    start_controller, cluster, api_client, namespace, rbs, tmp_path
):
    start_controller(**job_settings(cluster, namespace, tmp_path), MDOPS_JOB_START_FAILURE_SECONDS="2")
    with refusing(cluster, namespace, "batch", "jobs", JOB_PROBE) as why:
        rbs.create("refused", command="failover", timeoutSeconds=600)
        status = rbs.wait_finished("refused", timeout=60)["status"]
    assert (status["result"], status["exitCode"]) == ("failed", 125), status
    assert "could not start: its Job was refused for " in status["message"], status["message"]
    assert why in status["message"], status["message"]
    assert rbs.condition("refused", "Succeeded")["reason"] == "ExecutionError"
    assert not jobs(api_client, namespace)


def test_deleting_a_runbook_deletes_its_job_and_pod(
    start_controller, cluster, api_client, namespace, rbs, tmp_path
):
    start_controller(**job_settings(cluster, namespace, tmp_path, RELEASE=str(tmp_path / "never")))
    rbs.create("doomed", command="failover")
    rbs.wait_for("doomed", "Running", "True")
    rbs.delete("doomed")
    core = client.CoreV1Api(api_client)
    wait_until(lambda: not jobs(api_client, namespace), 30, "the Job to be deleted")
    wait_until(lambda: not core.list_namespaced_pod(namespace).items, 30, "the pod to be deleted")


def test_deleting_the_namespace_of_a_running_job_is_not_held_by_its_finalizer(
    start_controller, cluster, namespace, rbs, tmp_path
):
    start_controller(**job_settings(cluster, namespace, tmp_path, RELEASE=str(tmp_path / "never")))
    rbs.create("in-a-dying-namespace", command="failover")
    rbs.wait_for("in-a-dying-namespace", "Running", "True")
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    wait_until(
        lambda: cluster.kubectl("get", "namespace", namespace, check=False).returncode != 0,
        60,
        "the namespace to be gone",
    )


def test_restarted_controller_adopts_the_job_instead_of_creating_another(
    start_controller, cluster, api_client, namespace, rbs, tmp_path
):
    settings = job_settings(cluster, namespace, tmp_path, RELEASE=str(tmp_path / "go"))
    first = start_controller("first", **settings)
    rbs.create("adopt-job", command="failover")
    rbs.wait_for("adopt-job", "Running", "True")
    os.kill(first.process.popen.pid, signal.SIGKILL)
    second = start_controller("second", **settings)
    wait_until(lambda: answers_200(second.metrics_url), 30, "the second controller", [second.process])
    (tmp_path / "go").touch()  # the Job, still running, ends now
    status = rbs.wait_finished("adopt-job")["status"]
    assert (status["result"], status["attempts"]) == ("success", 1)
    assert len(jobs(api_client, namespace)) == 1


def test_two_replicas_with_peering_only_one_acts_and_the_other_takes_over(
    start_controller, peering, namespace, rbs, tmp_path
):
    scripts = tmp_path / "scripts"
    write_script(scripts, "health_check", "echo ok")
    common = {**peering, "MDOPS_SCRIPTS_DIR": str(scripts)}
    low = start_controller("low", MDOPS_PRIORITY="10", **common)
    high = start_controller("high", MDOPS_PRIORITY="20", **common)

    # Wait until the low-priority replica has seen the high one and paused: a run then goes to "high" only.
    made = wait_for_one_acting(rbs, high, low)
    for later in range(made, made + 3):
        uid = rbs.create(f"check-{later}", command="health_check")["metadata"]["uid"]
        rbs.wait_finished(f"check-{later}")
        assert uid in ran_in(high, namespace) and uid not in ran_in(low, namespace)

    os.kill(high.process.popen.pid, signal.SIGKILL)
    uid = rbs.create("after-failover", command="health_check")["metadata"]["uid"]
    rbs.wait_finished("after-failover", timeout=60)
    assert uid in ran_in(low, namespace)
