"""A Job run's start claim (runner/claim.py) on the real API server: two runners of the same Job, each with
its own pod's token, and only one runs the script; and what the admission policy mdops-start-claims
(manifests/identities.yaml) lets whom make.

The runners run here as processes, as podsim runs a Job's pods, with what a kubelet gives them: a token
bound to a real pod (a TokenRequest), the cluster's CA and the API server's address."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client

from devcluster.processes import wait_until
from runbooks.contract import ExitCode
from runbooks.keys import start_claim_name
from runbooks.kube import api_client as new_api_client
from runner.claim import CLAIM_ENV, FIELD_ENV, REFUSED_ENV, claimed_by
from tests.runbook_client import HOLD, lines, write_script

JOB = "failover-7-0123abcd"
SCRIPT = f"""
    echo "$MDOPS_REQUEST_ID start $$" >> "$RUNS"
    {HOLD}
"""


@pytest.fixture
def job(cluster, api_client, namespace) -> client.V1Job:
    """The runners' Job, suspended (no pod of its own), the owner of its start claim; and the Job pods'
    ServiceAccount with its Role, and the policy, as the manifests install them."""
    cluster.install_runner(namespace)
    body = {
        "metadata": {"name": JOB},
        "spec": {
            "suspend": True,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "none"}]}},
        },
    }
    return client.BatchV1Api(api_client).create_namespaced_job(namespace, body)


def runner_pod(api_client, namespace: str, name: str, account: str = "mdops-runner") -> tuple[str, str]:
    """A pod named ``name`` (podsim keeps it running, its container doing nothing): its name and uid."""
    pod = client.CoreV1Api(api_client).create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": name, "annotations": {"podsim.mdops.io/duration-seconds": "600"}},
            "spec": {"serviceAccountName": account, "containers": [{"name": "c", "image": "none"}]},
        },
    )
    return name, pod.metadata.uid


def pod_token(cluster, api_client, namespace: str, name: str, account: str = "mdops-runner") -> str:
    """A token bound to a new pod ``name``, as the kubelet makes one for a projected volume."""
    return cluster.service_account_token(
        namespace, account, pod=runner_pod(api_client, namespace, name, account)
    )


def credentials(cluster, folder: Path, token: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "token").write_text(token)
    (folder / "ca.crt").write_bytes(Path(cluster.ca.cert_path).read_bytes())
    return folder


class Runner:
    """``python -m runner`` as a Job pod's runner: its request, the claim's variables, a result file."""

    def __init__(
        self,
        cluster,
        namespace: str,
        job: client.V1Job,
        pod: str,
        folder: Path,
        work: Path,
        server: str = "",
        refused_seconds: str = "1",  # a refusal asked again for a second (the controller's default: 60)
    ):
        self.result_file, self.stderr = work / f"{pod}.result", work / f"{pod}.stderr"
        host, port = (server or cluster.server).removeprefix("https://").rsplit(":", 1)
        fields = {"pod": pod, "namespace": namespace, "job": job.metadata.name, "job_uid": job.metadata.uid}
        env = {
            "PATH": os.environ["PATH"],
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
            CLAIM_ENV: str(folder),
            REFUSED_ENV: refused_seconds,
            **{FIELD_ENV[field][0]: value for field, value in fields.items()},
            "MDOPS_REQUEST": json.dumps({"command": "failover", "requestId": "req-7", "window": "day"}),
            "MDOPS_SCRIPT_ENV": json.dumps({"RUNS": str(work / "runs.log"), "RELEASE": str(work / "go")}),
        }
        argv = [sys.executable, "-m", "runner", "--scripts", str(work / "scripts")]
        with self.stderr.open("a") as stderr:
            self.process = subprocess.Popen(
                [*argv, "--result-file", str(self.result_file)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=Path(__file__).resolve().parents[2],
            )

    def said(self) -> str:
        return self.result_file.read_text() if self.result_file.exists() else ""

    def result(self) -> dict:
        return json.loads(self.said())

    def end(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)


@pytest.fixture
def work(tmp_path) -> Path:
    write_script(tmp_path / "scripts", "failover", SCRIPT)
    yield tmp_path
    (tmp_path / "go").touch()


@pytest.fixture
def start_runner(cluster, namespace, job, work):
    """``start_runner(pod, folder, **options)``: a :class:`Runner` of the test's Job, killed after the test
    if it still runs (one whose API server has gone asks again until it is stopped, as in a pod)."""
    started: list[Runner] = []

    def start(pod: str, folder: Path, **options: str) -> Runner:
        started.append(Runner(cluster, namespace, job, pod, folder, work, **options))
        return started[-1]

    yield start
    for made in started:
        made.process.kill()
        made.process.wait()


def started(work: Path) -> list[str]:
    return [line for line in lines(work / "runs.log") if " start " in line]


def test_of_two_pods_of_a_job_only_the_one_that_claims_the_start_runs_the_script(
    cluster, api_client, namespace, job, work, start_runner
):
    runners = {}
    for pod in (f"{JOB}-first", f"{JOB}-again"):
        folder = credentials(cluster, work / pod, pod_token(cluster, api_client, namespace, pod))
        runners[pod] = start_runner(pod, folder)
    wait_until(lambda: started(work), 30, "a runner to start the script")
    wait_until(lambda: any(r.said() for r in runners.values()), 30, "the other runner to stand by")
    [(idle, stand_by)] = [(pod, r) for pod, r in runners.items() if r.said()]
    [(holder, running)] = [(pod, r) for pod, r in runners.items() if pod != idle]
    assert claimed_by(stand_by.said()) == holder
    lease = client.CoordinationV1Api(api_client).read_namespaced_lease(start_claim_name(JOB), namespace)
    assert lease.spec.holder_identity == holder
    [owner] = lease.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("Job", JOB, job.metadata.uid)

    (work / "go").touch()
    assert running.end() == ExitCode.SUCCESS and running.result()["exitCode"] == 0
    assert stand_by.process.poll() is None, "a pod that stood by ends with its Job, not before"
    stand_by.process.send_signal(signal.SIGTERM)  # its Job ended: the Job controller deletes it
    assert stand_by.end() == ExitCode.CANCELLED
    assert claimed_by(stand_by.said()) == holder  # still what its termination message says
    assert len(started(work)) == 1


def test_a_pod_whose_claim_was_made_but_its_answer_lost_runs_the_script(
    cluster, api_client, namespace, work, start_runner
):
    """The claim found made, by this very pod: the API server made it, and its answer was lost."""
    pod = f"{JOB}-lost1"
    folder = credentials(cluster, work / pod, pod_token(cluster, api_client, namespace, pod))
    (work / "go").touch()
    assert start_runner(pod, folder).end() == ExitCode.SUCCESS
    again = start_runner(pod, folder)
    assert again.end() == ExitCode.SUCCESS and again.result()["exitCode"] == 0
    assert len(started(work)) == 2


def test_a_runner_without_the_right_to_claim_asks_again_then_does_not_run_and_says_why(
    cluster, api_client, namespace, work, start_runner
):
    """A refusal may lift (an API server just restarted refuses until it has read the roles: a soak saw
    it), so it is asked again, for as long as the controller asks again for a refused Job; then not run."""
    pod = f"{JOB}-norbc"
    folder = credentials(
        cluster, work / pod, pod_token(cluster, api_client, namespace, pod, account="default")
    )
    runner = start_runner(pod, folder)
    assert runner.end() == ExitCode.NOT_EXECUTED
    message = runner.result()["message"]
    assert "not run: the API server refused the run's start claim (403" in message, message
    assert "the run's start claim is asked again: 403" in runner.stderr.read_text()
    assert not started(work)


def test_a_refusal_that_lifts_while_it_is_asked_again_lets_the_script_run_once(
    cluster, api_client, namespace, work, start_runner
):
    """As after an API server's restart, before it has read the roles: the right comes while the runner
    asks again, and the run goes on."""
    pod = f"{JOB}-later"
    folder = credentials(
        cluster, work / pod, pod_token(cluster, api_client, namespace, pod, account="default")
    )
    (work / "go").touch()
    runner = start_runner(pod, folder, refused_seconds="60")
    wait_until(lambda: "asked again: 403" in runner.stderr.read_text(), 30, "the claim to be refused")
    cluster.kubectl(
        "create",
        "rolebinding",
        "late",
        "-n",
        namespace,
        "--role=mdops-runner",
        f"--serviceaccount={namespace}:default",
    )
    assert runner.end() == ExitCode.SUCCESS, runner.said()
    assert len(started(work)) == 1


def test_a_runner_that_cannot_reach_the_api_server_does_not_run_and_ends_when_stopped(
    cluster, api_client, namespace, work, start_runner
):
    pod = f"{JOB}-away1"
    folder = credentials(cluster, work / pod, pod_token(cluster, api_client, namespace, pod))
    runner = start_runner(pod, folder, server="https://127.0.0.1:9")  # no server
    wait_until(lambda: "ConnectionRefusedError" in runner.stderr.read_text(), 30, "a refused connection")
    assert runner.process.poll() is None, "it asks again"
    runner.process.send_signal(signal.SIGTERM)  # its Job's deadline
    assert runner.end() == ExitCode.CANCELLED
    message = runner.result()["message"]
    assert "cancelled, not run: stopped (SIGTERM) before the run's start was claimed" in message, message
    assert not started(work)


def lease(name: str, holder: str | None = None) -> dict:
    return {"metadata": {"name": name}, "spec": {"holderIdentity": holder} if holder else {}}


@pytest.mark.parametrize(
    ("name", "holder", "refusal"),
    [
        (start_claim_name("another-job-0123abcd"), "{pod}", "may make only mdops-start-failover-7-0123abcd"),
        (start_claim_name(JOB), "someone-else", "naming itself its holder"),
        ("mdops-req-0123", "{pod}", "makes only start claims"),  # the ledger's, say
    ],
    ids=["another-job-s-claim", "another-holder", "not-a-claim"],
)
def test_a_job_pod_makes_only_its_own_job_s_claim_in_its_own_name(
    cluster, api_client, namespace, job, tmp_path, name, holder, refusal
):
    pod = f"{JOB}-polcy"
    bound = runner_pod(api_client, namespace, pod)
    kubeconfig = cluster.service_account_kubeconfig(namespace, "mdops-runner", tmp_path / "as-pod", pod=bound)
    with new_api_client(kubeconfig) as as_pod:
        leases = client.CoordinationV1Api(as_pod)
        with pytest.raises(client.ApiException) as refused:
            leases.create_namespaced_lease(namespace, lease(name, holder.format(pod=pod)))
        assert refused.value.status == 403 and refusal in refused.value.body, refused.value.body
        made = leases.create_namespaced_lease(namespace, lease(start_claim_name(JOB), pod))
        assert made.spec.holder_identity == pod


def test_nobody_but_a_job_s_pod_makes_its_claim(cluster, namespace, job):
    # system:masters: RBAC lets it do anything
    with new_api_client(cluster.kubeconfig) as admin, pytest.raises(client.ApiException) as refused:
        client.CoordinationV1Api(admin).create_namespaced_lease(namespace, lease(start_claim_name(JOB), "x"))
    assert refused.value.status == 403 and "this request comes from no pod" in refused.value.body
