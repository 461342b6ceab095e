"""The Job executor: the runner as a ``batch/v1`` Job owned by the Runbook.

The Job's name is derived from the Runbook's uid, so creating it is idempotent: after a controller
restart the existing Job is adopted, never created twice. The runner writes its result JSON to the
container's termination message, which the controller reads from the pod's status as soon as the pod
has ended: one watch on the Jobs and pods that mdops manages (the kopf handlers feed
:meth:`JobExecutor.observe`), no polling per run.

A Job is created without ``ttlSecondsAfterFinished``: the TTL controller would delete a finished Job
and its pod (and with it the result) whether or not the controller has read it, for example while the
controller is down. The TTL is set once the result is recorded (:meth:`JobRun.release`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from controller.executors import LogCallback, RunRequest, failure
from controller.kubeapi import KubeApi
from controller.settings import ControllerSettings
from runbooks import keys
from runbooks.contract import ExitCode
from runner.result import parse_result

# Where the image has its reference scripts (the Dockerfile copies examples/scripts/ there), and where a
# ConfigMap of the operator's own scripts (MDOPS_SCRIPTS_CONFIGMAP) is mounted over them.
SCRIPTS_MOUNT = "/etc/mdops/scripts"
TERMINATION_LOG = "/dev/termination-log"
TMP_MOUNT = "/run/mdops/tmp"  # not /tmp: podsim maps mount paths onto this machine by their names
DEADLINE_GRACE_SECONDS = 30


def job_name(request: RunRequest) -> str:
    return f"{request.name[:48].rstrip('-.')}-{request.uid[:8]}"


def build_job(request: RunRequest, settings: ControllerSettings) -> dict[str, Any]:
    """The Job for a run: a pure function of the request and the settings.

    The runner always reads the scripts at ``SCRIPTS_MOUNT``: the image's own, or the ConfigMap named by
    ``settings.scripts_configmap`` mounted there (so that no copy of the reference scripts is needed).
    """
    timeout = int(request.spec.get("timeoutSeconds", 300))
    labels = {
        keys.APP_NAME: keys.RUNNER_NAME,
        keys.MANAGED_BY: keys.MANAGER,
        keys.RUNBOOK_LABEL: request.name,
        keys.COMMAND_LABEL: request.command,
    }
    container = {
        "name": "runner",
        "image": settings.runner_image,
        "command": list(settings.runner_command),
        "args": [
            *request.runner_args(settings),
            "--scripts",
            SCRIPTS_MOUNT,
            "--result-file",
            TERMINATION_LOG,
        ],
        # The root filesystem is read-only; the runner and the scripts get a writable temp dir. The request
        # and the scripts' variables are JSON without a "$", which the kubelet passes on as it is.
        "env": [
            {"name": "TMPDIR", "value": TMP_MOUNT},
            *({"name": k, "value": v} for k, v in request.runner_env(settings).items()),
        ],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "tmp", "mountPath": TMP_MOUNT}],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
    }
    if settings.scripts_configmap:  # the operator's own scripts, over the image's
        container["volumeMounts"].append({"name": "scripts", "mountPath": SCRIPTS_MOUNT, "readOnly": True})
        pod_spec["volumes"].append(
            {"name": "scripts", "configMap": {"name": settings.scripts_configmap, "defaultMode": 0o755}}
        )
    if settings.job_service_account:
        pod_spec["serviceAccountName"] = settings.job_service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(request),
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": keys.API_VERSION,
                    "kind": keys.KIND,
                    "name": request.name,
                    "uid": request.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "backoffLimit": 0,
            "podReplacementPolicy": "Failed",
            "activeDeadlineSeconds": timeout + DEADLINE_GRACE_SECONDS,
            "template": {
                "metadata": {"labels": labels, "annotations": dict(settings.job_pod_annotations)},
                "spec": pod_spec,
            },
        },
    }


def pod_result(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The runner's result from its pod, once the container has ended (None before)."""
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated")
        if terminated is None:
            continue
        message = terminated.get("message") or ""
        try:
            return parse_result(message)
        except ValueError:
            detail = message.strip()[-500:] or "no result in the termination message"
            return failure(
                terminated.get("exitCode") or ExitCode.NOT_EXECUTED, f"runner gave no result: {detail}"
            )
    return None


def job_failure(job: dict[str, Any]) -> dict[str, Any] | None:
    """The result of a Job that ended without a pod's result (None while it has not ended)."""
    name = job["metadata"]["name"]
    ended = {
        c["type"]: c
        for c in (job.get("status") or {}).get("conditions") or []
        if c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
    }
    if not ended:
        return None
    failed = ended.get("Failed")
    if failed is not None and failed.get("reason") == "DeadlineExceeded":
        return failure(ExitCode.TIMEOUT, f"Job {name} exceeded its deadline")
    reason = (failed or {}).get("message") or "no pod ran"
    return failure(ExitCode.NOT_EXECUTED, f"Job {name} could not run: {reason}")


class JobRun:
    def __init__(self, executor: JobExecutor, namespace: str, name: str):
        self.executor = executor
        self.namespace = namespace
        self.name = name

    async def wait(self, on_logs: LogCallback) -> dict[str, Any]:
        """The result, from the watch (the pod's termination message). Log lines come with it."""
        return await self.executor.outcome(self.namespace, self.name)

    def logs(self) -> list[dict[str, Any]]:
        return []

    async def cancel(self) -> None:
        await self.executor.kube.delete_job(self.namespace, self.name)

    async def release(self) -> None:
        """The result is recorded: the Job may now go after its TTL."""
        ttl = {"spec": {"ttlSecondsAfterFinished": self.executor.settings.job_ttl_seconds}}
        await self.executor.kube.patch_job(self.namespace, self.name, ttl)


class JobExecutor:
    kind = "job"

    def __init__(self, settings: ControllerSettings, kube: KubeApi):
        self.settings = settings
        self.kube = kube
        self.results: dict[tuple[str, str], dict[str, Any]] = {}  # ended Jobs' results, until taken
        self.waiters: dict[tuple[str, str], asyncio.Future] = {}
        self.checks: set[asyncio.Task] = set()

    def handle(self, request: RunRequest) -> JobRun:
        return JobRun(self, request.namespace, job_name(request))

    async def start(self, request: RunRequest) -> JobRun:
        body = build_job(request, self.settings)
        await self.kube.create_job(request.namespace, body)
        return self.handle(request)

    async def outcome(self, namespace: str, name: str) -> dict[str, Any]:
        key = (namespace, name)
        if key in self.results:
            return self.results.pop(key)
        future = self.waiters[key] = asyncio.get_running_loop().create_future()
        try:
            return await future
        finally:
            if self.waiters.get(key) is future:
                del self.waiters[key]

    def _ended(self, key: tuple[str, str], result: dict[str, Any]) -> None:
        future = self.waiters.pop(key, None)
        if future is not None and not future.done():
            future.set_result(result)
        elif future is None:
            self.results[key] = result

    # -- the watch ------------------------------------------------------------------------------
    def observe_pod(self, kind: str | None, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        job = (meta.get("labels") or {}).get(keys.JOB_NAME_LABEL)
        if not job:
            return
        key = (meta["namespace"], job)
        if kind == "DELETED":
            self.results.pop(key, None)
            return
        result = pod_result(pod)
        if result is not None and (key in self.waiters or not meta.get("deletionTimestamp")):
            self._ended(key, result)

    def observe_job(self, kind: str | None, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        key = (meta["namespace"], meta["name"])
        if kind == "DELETED":
            self.results.pop(key, None)
            if key in self.waiters:
                self._ended(
                    key, failure(ExitCode.NOT_EXECUTED, f"Job {key[1]} disappeared before it finished")
                )
        elif key in self.waiters and job_failure(job) is not None:
            # Ended without a pod's result in the watch yet: the pod says why, if there is one.
            task = asyncio.ensure_future(self._from_pods(key, job))
            self.checks.add(task)
            task.add_done_callback(self.checks.discard)

    async def _from_pods(self, key: tuple[str, str], job: dict[str, Any]) -> None:
        for pod in await self.kube.job_pods(*key):
            result = pod_result(pod)
            if result is not None:
                self._ended(key, result)
                return
        self._ended(key, job_failure(job))
