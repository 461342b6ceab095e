"""The Job executor: the runner as a ``batch/v1`` Job owned by the Runbook.

The Job's name is derived from the Runbook's uid, so creating it is idempotent: after a controller
restart the existing Job is adopted, never created twice. The runner writes its result JSON to the
container's termination message, which the controller reads from the pod's status.
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
POLL_SECONDS = 0.5
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
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "template": {
                "metadata": {"labels": labels, "annotations": dict(settings.job_pod_annotations)},
                "spec": pod_spec,
            },
        },
    }


class JobRun:
    def __init__(self, kube: KubeApi, namespace: str, name: str):
        self.kube = kube
        self.namespace = namespace
        self.name = name

    async def wait(self, on_logs: LogCallback) -> dict[str, Any]:
        while True:
            job = await self.kube.get_job(self.namespace, self.name)
            if job is None:
                return failure(ExitCode.NOT_EXECUTED, f"Job {self.name} disappeared before it finished")
            done = {c.type: c for c in job.status.conditions or [] if c.status == "True"}
            if "Complete" in done or "Failed" in done:
                return await self._result(done.get("Failed"))
            await asyncio.sleep(POLL_SECONDS)

    async def _result(self, failed) -> dict[str, Any]:
        for pod in await self.kube.job_pods(self.namespace, self.name):
            for container in pod.status.container_statuses or []:
                terminated = container.state.terminated if container.state else None
                if terminated is None:
                    continue
                try:
                    return parse_result(terminated.message or "")
                except ValueError:
                    message = (terminated.message or "").strip()[
                        -500:
                    ] or "no result in the termination message"
                    return failure(
                        terminated.exit_code or ExitCode.NOT_EXECUTED, f"runner gave no result: {message}"
                    )
        if failed is not None and failed.reason == "DeadlineExceeded":
            return failure(ExitCode.TIMEOUT, f"Job {self.name} exceeded its deadline")
        reason = failed.message if failed is not None else "no pod ran"
        return failure(ExitCode.NOT_EXECUTED, f"Job {self.name} could not run: {reason}")

    async def cancel(self) -> None:
        await self.kube.delete_job(self.namespace, self.name)


class JobExecutor:
    kind = "job"

    def __init__(self, settings: ControllerSettings, kube: KubeApi):
        self.settings = settings
        self.kube = kube

    async def start(self, request: RunRequest) -> JobRun:
        body = build_job(request, self.settings)
        await self.kube.create_job(request.namespace, body)
        return JobRun(self.kube, request.namespace, body["metadata"]["name"])
