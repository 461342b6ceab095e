"""The Job executor's pure functions: ``build_job`` (where a Job pod finds its scripts, what it holds) and
``start_failure`` (whether a pod cannot start, and why); and what its watch of pods keeps."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os

import pytest

from controller.executors import RunRequest
from controller.executors.job import (
    SCRIPTS_MOUNT,
    JobExecutor,
    build_job,
    job_failure,
    kept_claim,
    kept_for_nothing,
    may_run,
    pod_result,
    ran,
    start_failure,
    stood_by,
)
from controller.kubeapi import ApiError
from controller.ledger import lease_body, lease_name
from controller.settings import ControllerSettings
from runbooks import keys
from runbooks.contract import ExitCode
from tests.runbook_client import forged_success

REQUEST = RunRequest(
    namespace="mdops",
    name="failover-42",
    uid="0123456789abcdef",
    request_id="req-42",
    command="failover",
    window="day",
    spec={"command": "failover", "timeoutSeconds": 60},
)


@pytest.fixture
def settings(monkeypatch):
    """``settings(**values)``: the controller's settings from these values only, not from this
    machine's ``MDOPS_*`` environment."""
    for name in [n for n in os.environ if n.startswith("MDOPS_")]:
        monkeypatch.delenv(name)

    def make(**values) -> ControllerSettings:
        return ControllerSettings(in_cluster=True, executor="job", **values)

    return make


def pod_of(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    ("configmap", "volumes", "mounts"),
    [
        # The default: the image's own reference scripts, no volume for them.
        ("", {"tmp": {"emptyDir": {"sizeLimit": "64Mi"}}}, {"tmp": "/run/mdops/tmp"}),
        # The operator's own scripts: that ConfigMap, executable, read-only, over the image's.
        (
            "platform-scripts",
            {
                "tmp": {"emptyDir": {"sizeLimit": "64Mi"}},
                "scripts": {"configMap": {"name": "platform-scripts", "defaultMode": 0o755}},
            },
            {"tmp": "/run/mdops/tmp", "scripts": SCRIPTS_MOUNT},
        ),
    ],
    ids=["image-scripts", "configmap"],
)
def test_the_scripts_are_the_images_unless_a_configmap_is_named(settings, configmap, volumes, mounts):
    pod = pod_of(build_job(REQUEST, settings(scripts_configmap=configmap, job_start_claim=False)))
    (container,) = pod["containers"]
    assert {v["name"]: {k: x for k, x in v.items() if k != "name"} for v in pod["volumes"]} == volumes
    assert {m["name"]: m["mountPath"] for m in container["volumeMounts"]} == mounts
    assert all(m.get("readOnly") for m in container["volumeMounts"] if m["name"] == "scripts")
    # Either way the runner reads them at the image's path.
    args = container["args"]
    assert args[args.index("--scripts") + 1] == SCRIPTS_MOUNT == "/etc/mdops/scripts"


def test_the_image_scripts_are_the_default(settings):
    assert settings().scripts_configmap == ""
    assert [v["name"] for v in pod_of(build_job(REQUEST, settings()))["volumes"]] == ["tmp", "start-claim"]


AWKWARD = "--dry-run -x -- $(TMPDIR) $$ ${HOME} `id` 'quoted' \"twice\" Ünïcödé\ttab\nnewline"


def test_a_job_passes_the_request_as_data_that_the_kubelet_leaves_as_it_is(settings):
    """Arguments hold fixed tokens only; the request and the scripts' variables are JSON in the
    environment, without a ``$`` that the kubelet would expand (``$(NAME)``) or halve (``$$``)."""
    spec = {"command": "failover", "reason": AWKWARD, "config": "-x", "dryRun": True, "timeoutSeconds": 60}
    request = RunRequest("mdops", "failover-42", "0123456789abcdef", "req-42", "failover", "night", spec)
    values = {"script_env": {"NOTE": "$(HOME) $$"}, "script_pass_env": ["HTTP_PROXY"]}
    (container,) = pod_of(build_job(request, settings(**values)))["containers"]

    assert container["args"] == [
        "--min-coverage", "0.99", "--max-backlog", "10000", "--max-failover-latency-ms", "5000",
        "--scripts", SCRIPTS_MOUNT, "--result-file", "/dev/termination-log",
    ]  # fmt: skip
    env = {item["name"]: item["value"] for item in container["env"] if "valueFrom" not in item}
    assert set(env) == {
        "TMPDIR", "MDOPS_REQUEST", "MDOPS_SCRIPT_ENV", "MDOPS_SCRIPT_PASS_ENV", "MDOPS_START_CLAIM",
        "MDOPS_START_CLAIM_REFUSED_SECONDS",
    }  # fmt: skip
    assert not any("$" in value or not value.isascii() for value in env.values())
    assert json.loads(env["MDOPS_REQUEST"]) == {
        "command": "failover",
        "requestId": "req-42",
        "window": "night",
        "reason": AWKWARD,
        "config": "-x",
        "dryRun": True,
        "timeoutSeconds": 60,
    }
    assert json.loads(env["MDOPS_SCRIPT_ENV"]) == {"NOTE": "$(HOME) $$"}
    assert json.loads(env["MDOPS_SCRIPT_PASS_ENV"]) == ["HTTP_PROXY"]


def test_a_job_pod_holds_only_its_own_token_for_the_start_claim_and_its_runner_is_pid_1(settings):
    """What the README promises for scripts run as Jobs: no ServiceAccount token but the one the runner
    claims the run's start with (bound to the pod, of the account mdops-runner, whose only right that
    is), none without the claim; and the runner as the container's first process (its death ends every
    process of the container: no process namespace shared with another container)."""
    pod = pod_of(build_job(REQUEST, settings()))
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == "mdops-runner"
    assert "shareProcessNamespace" not in pod
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-m", "runner"]  # no init or shell in front of it
    volumes = {v["name"]: v for v in pod["volumes"]}
    tokens = [n for n, v in volumes.items() if "serviceAccountToken" in json.dumps(v)]
    assert tokens == ["start-claim"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["start-claim"] == {"name": "start-claim", "mountPath": "/run/mdops/claim", "readOnly": True}
    env = {item["name"]: item for item in container["env"]}
    assert env["MDOPS_START_CLAIM"]["value"] == "/run/mdops/claim"
    assert env["MDOPS_START_CLAIM_REFUSED_SECONDS"]["value"] == "60"  # as long as a refused Job asks again
    assert {
        name: item["valueFrom"]["fieldRef"]["fieldPath"] for name, item in env.items() if "valueFrom" in item
    } == {
        "MDOPS_POD_NAME": "metadata.name",
        "MDOPS_POD_NAMESPACE": "metadata.namespace",
        "MDOPS_JOB_NAME": "metadata.labels['batch.kubernetes.io/job-name']",
        "MDOPS_JOB_UID": "metadata.labels['batch.kubernetes.io/controller-uid']",
    }
    unclaimed = pod_of(build_job(REQUEST, settings(job_start_claim=False, job_service_account="")))
    assert "serviceAccountToken" not in json.dumps(unclaimed) and "serviceAccountName" not in unclaimed
    assert not [
        e for e in unclaimed["containers"][0]["env"] if e["name"].startswith(("MDOPS_START", "MDOPS_POD"))
    ]


def pod(phase: str, state: dict | None = None, scheduled: dict | None = None) -> dict:
    status: dict = {
        "phase": phase,
        "conditions": [{"type": "PodScheduled", "status": "True", **(scheduled or {})}],
    }
    if state is not None:
        status["containerStatuses"] = [{"name": "runner", "state": state}]
    return {"metadata": {"name": "p"}, "status": status}


@pytest.mark.parametrize(
    ("given", "why"),
    [
        (
            pod(
                "Pending",
                {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x"'}},
            ),
            ('ImagePullBackOff: Back-off pulling image "x"', True),
        ),
        (pod("Pending", {"waiting": {"reason": "ErrImageNeverPull"}}), ("ErrImageNeverPull", True)),
        (
            pod(
                "Pending",
                {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "s" not found'}},
            ),
            ('CreateContainerConfigError: secret "s" not found', True),
        ),
        (
            pod("Pending", scheduled={"status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}),
            ("Unschedulable: 0/3 nodes", False),  # said, and waited for: a node may have room later
        ),
        # What goes on by itself: being scheduled, pulling, creating; running; ended.
        (pod("Pending"), None),
        (pod("Pending", scheduled={"status": "False", "reason": "SchedulingGated"}), None),
        (pod("Pending", {"waiting": {"reason": "ContainerCreating"}}), None),
        (pod("Running", {"running": {"startedAt": "2026-12-03T08:00:00Z"}}), None),
        (pod("Failed", {"waiting": {"reason": "ImagePullBackOff"}}), None),
        ({"metadata": {"name": "p"}}, None),
    ],
)
def test_why_a_pod_cannot_start_and_whether_that_lasts_until_a_person_mends_it(given, why):
    assert start_failure(given) == why


@pytest.mark.parametrize(
    ("given", "started"),
    [
        (pod("Pending"), False),  # not scheduled yet, or never: it will end with no container
        (pod("Pending", {"waiting": {"reason": "ImagePullBackOff"}}), False),
        (pod("Running", {"running": {"startedAt": "t"}}), True),
        (pod("Succeeded", {"terminated": {"exitCode": 0}}), True),
    ],
)
def test_only_a_pod_that_started_is_kept_for_its_end_when_its_run_is_stopped(given, started):
    assert ran(given) is started


def ended(code: int, message: str, reason: str = "Error") -> dict:
    terminated = {"exitCode": code, "message": message, "reason": reason}
    return {"status": {"containerStatuses": [{"state": {"terminated": terminated}}]}}


@pytest.mark.parametrize(
    ("code", "message", "reason", "said"),
    [
        (137, '{"time": "t", "level": "INFO", "message": "start"}', "Error", "(exit 137: killed by SIGKILL)"),
        (143, "", "Error", "(exit 143: killed by SIGTERM)"),
        (1, "Traceback ...", "Error", "the runner exited with code 1 without writing a result: Traceback"),
        # A kubelet on cgroup v2 kills the whole container (memory.oom.group): the runner with its script.
        (137, "", "OOMKilled", "(exit 137: OOMKilled, its container went over its memory limit)"),
    ],
)
def test_a_runner_that_wrote_no_result_is_125_whatever_its_container_exited_with(code, message, reason, said):
    """The README's 125: the runner died without its result (killed, the OOM killer); the container's own
    code is said in words, never recorded as the run's exit code."""
    result = pod_result(ended(code, message, reason))
    assert result["exitCode"] == ExitCode.NOT_EXECUTED and result["result"] == "failed"
    assert said in result["message"]


def test_a_result_that_the_container_s_exit_code_belies_is_not_the_runner_s():
    """A script can write the termination log (it runs in the runner's container): a success it wrote
    there, its container then killed (a deadline, a drain, the OOM killer), is no success."""
    forged = forged_success()
    assert pod_result(ended(0, forged))["exitCode"] == 0, "the runner's own result, as it exited"
    result = pod_result(ended(137, forged))
    assert (result["exitCode"], result["result"]) == (ExitCode.NOT_EXECUTED, "failed")
    assert "killed by SIGKILL" in result["message"] and "claims exit code 0" in result["message"]


def job_pod(job: str, phase: str, state: dict) -> dict:
    """A pod of Job ``job`` in namespace mdops, as the watch shows it."""
    labels = {"batch.kubernetes.io/job-name": job}
    status = {"phase": phase, "containerStatuses": [{"name": "runner", "state": state}]}
    return {"metadata": {"name": f"{job}-x", "namespace": "mdops", "labels": labels}, "status": status}


def test_the_pods_of_runs_that_are_not_this_controllers_cost_it_nothing(settings):
    """Finished runs' Jobs stay for their TTL (an hour by default) with their pods, and a restarted
    controller's watch lists them all: only the pods of runs it started or adopted are kept track of."""
    executor = JobExecutor(settings(), kube=None)
    done = {"terminated": {"exitCode": 137, "message": ""}}  # a result: the runner was killed
    stuck = {"waiting": {"reason": "ImagePullBackOff", "message": "back-off"}}
    for index in range(100):
        executor.observe_pod("ADDED", job_pod(f"old-{index}", "Succeeded", done))
        executor.observe_pod("ADDED", job_pod(f"broken-{index}", "Pending", stuck))
    assert (executor.results, executor.stuck, executor.podless) == ({}, {}, {})

    executor.expected.add(("mdops", "mine"))  # what start() and adopt() do
    executor.observe_pod("MODIFIED", job_pod("mine", "Succeeded", done))
    assert executor.results[("mdops", "mine")]["exitCode"] == ExitCode.NOT_EXECUTED  # until its run waits
    executor.forget(("mdops", "mine"))  # its result is recorded (release)
    assert (executor.results, executor.expected) == ({}, set())


def test_a_job_is_owned_by_its_runbook_and_by_its_request_ids_claim_while_it_has_one(settings):
    """The claim keeps the Job (and the runner's result in its pod) when the Runbook is deleted by force: the
    garbage collector deletes a Job only once every owner is gone. The Runbook stays the first owner, the one
    that controls it, which the patch that lets the Job run tests."""
    runbook = {
        "apiVersion": keys.API_VERSION,
        "kind": keys.KIND,
        "name": "failover-42",
        "uid": "0123456789abcdef",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert build_job(REQUEST, settings())["metadata"]["ownerReferences"] == [runbook]
    claimed = dataclasses.replace(REQUEST, claim_uid="lease-uid")
    claim = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "name": lease_name("req-42"),
        "uid": "lease-uid",
    }
    assert build_job(claimed, settings())["metadata"]["ownerReferences"] == [runbook, claim]


def test_a_jobs_pods_name_their_runs_claim(settings):
    """What a kept pod whose Runbook went is matched with its run's end by (:func:`kept_for_nothing`)."""
    job = build_job(REQUEST, settings())
    assert job["spec"]["template"]["metadata"]["labels"][keys.CLAIM_LABEL] == lease_name("req-42")


# A pod of REQUEST's run, kept for its end (JobRun.cancel) and deleted since.
KEPT = {
    "metadata": {
        "uid": "pod-uid",
        "name": "failover-42-01234567-x",
        "namespace": "mdops",
        "labels": {
            keys.JOB_NAME_LABEL: "failover-42-01234567",
            keys.RUNBOOK_LABEL: "failover-42",
            keys.CLAIM_LABEL: lease_name("req-42"),
        },
        "finalizers": [keys.RESULT_FINALIZER],
        "deletionTimestamp": "2026-12-07T10:00:00Z",
    }
}


def with_meta(pod: dict, **changes) -> dict:
    return {**pod, "metadata": {**pod["metadata"], **changes}}


@pytest.mark.parametrize(
    ("given", "claim"),
    [
        (KEPT, lease_name("req-42")),
        (with_meta(KEPT, deletionTimestamp=None), None),  # kept while its Job is deleted: not yet let go
        (with_meta(KEPT, finalizers=[]), None),  # let go already, or never kept
        (
            with_meta(KEPT, labels={keys.JOB_NAME_LABEL: "failover-42-01234567"}),
            None,
        ),  # from before the label
    ],
)
def test_only_a_pod_kept_for_its_end_and_deleted_since_has_its_claim_read(given, claim):
    assert kept_claim(given) == claim


def claim(holder: str, **annotations: str) -> dict:
    return lease_body(lease_name("req-42"), holder, {keys.REQUEST_ID: "req-42", **annotations})


@pytest.mark.parametrize(
    ("lease", "for_nothing"),
    [
        (claim("0123456789abcdef"), False),  # its end not recorded: an orphan's, whose end the pod gives
        (claim("0123456789abcdef", **{keys.RESULT: '{"exitCode": 130}'}), True),  # recorded
        (None, True),  # the claim trimmed once finished
        (claim("fedcba9876543210"), True),  # the request id claimed again by another Runbook's run
    ],
)
def test_a_kept_pod_goes_once_its_runs_end_is_recorded_or_its_claim_is_gone(lease, for_nothing):
    assert kept_for_nothing(KEPT, lease) is for_nothing


def test_a_claim_that_cannot_be_read_leaves_the_other_kept_pods_looked_at(settings):
    """One look at the kept pods: a claim read that fails (the API server restarting) leaves that pod for the
    next look and goes on with the others; it used to end the look, and the look came only at the start."""
    unreadable = with_meta(
        KEPT, name="unreadable", labels={**KEPT["metadata"]["labels"], keys.CLAIM_LABEL: "x"}
    )

    class Kube:
        def __init__(self) -> None:
            self.let_go: list[str] = []

        async def kept_pods(self, namespace: str) -> list[dict]:
            return [unreadable, KEPT]

        async def get_lease(self, namespace: str, name: str) -> dict | None:
            if name == "x":
                raise ApiError(503, "GET", name, "the API server is restarting")
            return None  # trimmed once finished: kept for nothing

        async def let_pod_go(self, namespace: str, name: str) -> None:
            self.let_go.append(name)

    kube = Kube()
    asyncio.run(JobExecutor(settings(), kube=kube)._let_go_kept("mdops"))
    assert kube.let_go == [KEPT["metadata"]["name"]]


def test_why_a_pod_cannot_start_is_shown_also_when_it_was_said_before_the_run_was_waited_for(settings):
    """The pod is found unschedulable before the run's status says Running (its wait begins after that
    patch): the reason, said once, is shown when the wait begins, not lost."""
    executor = JobExecutor(settings(), kube=None)
    executor.expected.add(("mdops", "mine"))
    unschedulable = {"status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}
    pending = job_pod("mine", "Pending", {"waiting": {"reason": "ContainerCreating"}})
    pending["status"]["conditions"] = [{"type": "PodScheduled", **unschedulable}]
    executor.observe_pod("MODIFIED", pending)
    assert executor.stuck[("mdops", "mine")].lines  # said, with nobody to show it to yet

    async def wait() -> int:
        shown = []
        waiting = asyncio.ensure_future(executor.outcome("mdops", "mine", lambda: shown.append(True)))
        await asyncio.sleep(0)
        waiting.cancel()
        return len(shown)

    assert asyncio.run(wait()) == 1


def test_a_job_suspended_after_it_started_has_ended_once_its_pods_are_stopped():
    """Suspended, a Job never finishes: one a person suspended after it started has ended once no pod of it
    is active or terminating; one never let run (no start time) has not, nor one whose pod still stops."""
    job = {
        "metadata": {"name": "paused"},
        "spec": {"suspend": True},
        "status": {"startTime": "2026-12-05T22:00:00Z"},
    }
    ended = job_failure(job)
    assert ended is not None and ended["exitCode"] == ExitCode.CANCELLED, ended
    assert "Job paused was suspended" in ended["message"]
    assert job_failure({**job, "status": {**job["status"], "terminating": 1}}) is None
    assert job_failure({**job, "status": {}}) is None
    assert job_failure({**job, "spec": {"suspend": False}}) is None


def test_what_a_runs_job_says_before_its_wait_begins_is_kept_for_it(settings):
    """Between a run's start (or adoption) and its wait (after the Running patch), its Job may end or go:
    that is kept for the wait, the pod's own result first, instead of being seen by nobody."""
    executor = JobExecutor(settings(), kube=None)
    timed_out, deleted = ("mdops", "slow"), ("mdops", "gone")
    executor.expected |= {timed_out, deleted}
    deadline = {"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}
    executor.observe_job("MODIFIED", {"metadata": {"namespace": "mdops", "name": "slow"}, "status": {
        "conditions": [deadline]}})  # fmt: skip
    assert executor.results[timed_out]["exitCode"] == ExitCode.TIMEOUT
    killed = {"terminated": {"exitCode": 137, "message": ""}}
    executor.observe_pod("MODIFIED", job_pod("slow", "Failed", killed))
    assert "killed by SIGKILL" in executor.results[timed_out]["message"]  # the pod's own word wins

    executor.observe_pod("MODIFIED", job_pod("gone", "Succeeded", killed))
    executor.observe_job("DELETED", {"metadata": {"namespace": "mdops", "name": "gone"}})
    assert deleted in executor.jobless  # its wait looks for its pods
    assert asyncio.run(executor.outcome(*deleted))["message"].startswith("the runner died (exit 137")
    executor.forget(deleted)
    assert (executor.jobless, deleted in executor.results) == (set(), False)


def test_a_second_pod_of_the_job_that_stood_by_neither_ends_the_run_nor_drops_its_result(settings):
    """A pod that found the run's start claimed by another (runner/claim.py) ends with its Job, stopped:
    its end is not the run's, and its deletion loses nothing of the holder's result."""
    executor = JobExecutor(settings(), kube=None)
    key = ("mdops", "twice")
    executor.expected.add(key)
    idle = {"terminated": {"exitCode": 130, "message": '{"startClaimedBy": "twice-first"}'}}
    assert stood_by(job_pod("twice", "Failed", idle)) == "twice-first"
    executor.observe_pod("MODIFIED", job_pod("twice", "Failed", idle))
    assert key not in executor.results
    ran = forged_success()
    executor.observe_pod(
        "MODIFIED", job_pod("twice", "Succeeded", {"terminated": {"exitCode": 0, "message": ran}})
    )
    executor.observe_pod("DELETED", job_pod("twice", "Failed", idle))
    assert executor.results[key]["exitCode"] == 0
    assert stood_by(job_pod("twice", "Succeeded", {"terminated": {"exitCode": 0, "message": ran}})) is None


def test_a_pod_may_run_its_script_until_it_has_ended():
    """What keeps a gone Runbook's lock taken (:meth:`JobExecutor.may_run`), and a run whose Job was
    deleted unended."""
    phases = ("Pending", "Running", "Succeeded", "Failed")
    assert [may_run({"status": {"phase": p}}) for p in phases] == [True, True, False, False]
    assert may_run({})  # no status yet: pending
