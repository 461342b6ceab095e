"""The Job executor: the runner as a ``batch/v1`` Job owned by the Runbook and by its request id's claim
(:func:`owners`).

The Job's name is derived from the Runbook's uid, so creating it is idempotent: after a controller
restart the existing Job is adopted, never created twice. It is created suspended, before the run's
claim says that the run may have started, and let run after that (:meth:`JobExecutor.prepare`): a Job still
suspended proves that nothing of its run ran. The runner writes its result JSON to the
container's termination message, which the controller reads from the pod's status as soon as the pod
has ended: one watch on the Jobs and pods that mdops manages (the kopf handlers feed
:meth:`JobExecutor.observe`), no polling per run.

A Job is created without ``ttlSecondsAfterFinished``: the TTL controller would delete a finished Job
and its pod (and with it the result) whether or not the controller has read it, for example while the
controller is down. The TTL is set once the result is recorded (:meth:`JobRun.release`). For the same
reason a stopped run's pods are kept once deleted (the finalizer ``ops.mdops.io/result``) until then: a run
that ended as it was stopped is recorded as it ended, also by a controller that comes after one that died
while it stopped the run (:meth:`JobRun.cancel`).

A pod that cannot start (:func:`start_failure`: an image that cannot be pulled, a container that cannot
be created, no node for it) would keep its run ``Running`` until the Job's deadline, with nothing to say
why. The run's log says why as soon as the pod does. If the cause lasts until a person mends it (the image,
the container's configuration) and the pod has not started ``MDOPS_JOB_START_FAILURE_SECONDS`` after it
was first seen, its Job is deleted (and with it the pod, before anything of it can run) and the run fails
with exit code 125: its script never ran. A pod that waits for a node with room waits on, as Jobs do.
So does a Job whose pod the API server refuses to create (an admission policy, a quota): the Job
controller says so only in its ``FailedCreate`` Events, which are read for the runs that have had no pod
for a while (one list per namespace every :data:`CREATE_CHECK_SECONDS`, only while there are such runs).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from controller.executors import LogCallback, RunbookGone, RunRequest, failure, lost
from controller.kubeapi import CORE, JOBS, ApiError, Disowned, KubeApi
from controller.ledger import lease_name
from controller.settings import ControllerSettings
from runbooks import keys
from runbooks.contract import ExitCode, now
from runner.claim import CLAIM_ENV, FIELD_ENV, REFUSED_ENV, claimed_by
from runner.execute import signal_name
from runner.result import parse_result

# Where the image has its reference scripts (the Dockerfile copies examples/scripts/ there), and where a
# ConfigMap of the operator's own scripts (MDOPS_SCRIPTS_CONFIGMAP) is mounted over them.
SCRIPTS_MOUNT = "/etc/mdops/scripts"
TERMINATION_LOG = "/dev/termination-log"
CLAIM_MOUNT = "/run/mdops/claim"  # the pod's token and the cluster's CA, for the start claim
TMP_MOUNT = "/run/mdops/tmp"  # not /tmp: podsim maps mount paths onto this machine by their names
log = logging.getLogger(__name__)

DEADLINE_GRACE_SECONDS = 30
GIVE_UP_RETRY_SECONDS = 5.0
# How long a run may have no pod before its Job's FailedCreate Events are read, and how often then: under
# a burst the Job controller takes seconds to create each Job's pod, and no pod yet is no failure.
CREATE_CHECK_SECONDS = 10.0
# How often the active replica looks for pods kept for nothing (:func:`kept_for_nothing`) besides its start.
KEPT_LOOK_SECONDS = 20.0
# A container's waiting reasons that the kubelet keeps giving until a person mends the cause (the image,
# the registry's credentials, the container's configuration): a pod with one does not start by waiting.
CANNOT_START = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


def job_name(request: RunRequest) -> str:
    return runbook_job(request.name, request.uid)


def runbook_job(name: str, uid: str) -> str:
    """The name of the Job of the Runbook ``name`` (``uid``)."""
    return f"{name[:48].rstrip('-.')}-{uid[:8]}"


def build_job(request: RunRequest, settings: ControllerSettings, suspended: bool = False) -> dict[str, Any]:
    """The Job for a run: a pure function of the request and the settings; ``suspended``, it has no pod
    until it is let run (:meth:`JobExecutor.prepare`).

    The runner always reads the scripts at ``SCRIPTS_MOUNT``: the image's own, or the ConfigMap named by
    ``settings.scripts_configmap`` mounted there (so that no copy of the reference scripts is needed).
    """
    timeout = int(request.spec.get("timeoutSeconds", 300))
    labels = {
        keys.APP_NAME: keys.RUNNER_NAME,
        keys.MANAGED_BY: keys.MANAGER,
        keys.RUNBOOK_LABEL: request.name,
        keys.COMMAND_LABEL: request.command,
        keys.CLAIM_LABEL: lease_name(request.request_id),
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
    if settings.job_script_secret:  # its name only: the kubelet reads it, as the pod starts
        container["envFrom"] = [{"secretRef": {"name": settings.job_script_secret}}]
    if settings.job_service_account:
        pod_spec["serviceAccountName"] = settings.job_service_account
    if settings.job_start_claim:
        _claim_start(settings, container, pod_spec)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(request),
            "labels": labels,
            "ownerReferences": owners(request),
        },
        "spec": {
            "suspend": suspended,
            "backoffLimit": 0,
            "podReplacementPolicy": "Failed",
            "activeDeadlineSeconds": timeout + DEADLINE_GRACE_SECONDS,
            "template": {
                "metadata": {"labels": labels, "annotations": dict(settings.job_pod_annotations)},
                "spec": pod_spec,
            },
        },
    }


def owners(request: RunRequest) -> list[dict[str, Any]]:
    """The Job's owners: its Runbook, which controls it, and its request id's claim (the ledger's Lease). The
    garbage collector deletes a Job only once all its owners are gone: a Runbook deleted by force (its
    finalizer taken off) while no controller runs leaves its Job and its pods, with the end the runner
    wrote, for the controller that finds the claim and records that end (then the Job goes after its TTL,
    as every finished run's). With the Runbook as its only owner, the Job and a pod that had ended went with
    it, and that controller recorded a run whose script had ended by itself as stopped by the deletion. A
    claim is deleted only when its run never started (its Job goes with it) or, finished, by the ledger's
    bound."""
    runbook = {
        "apiVersion": keys.API_VERSION,
        "kind": keys.KIND,
        "name": request.name,
        "uid": request.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    if not request.claim_uid:
        return [runbook]
    lease = lease_name(request.request_id)
    return [
        runbook,
        {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "name": lease, "uid": request.claim_uid},
    ]


def _claim_start(settings: ControllerSettings, container: dict[str, Any], pod_spec: dict[str, Any]) -> None:
    """What the runner needs to claim the run's start (:mod:`runner.claim`): the pod's own token, bound to
    the pod, and the cluster's CA; the names of its pod and Job, and the Job's uid. The Job controller
    names the pods ``<job>-<5 characters>`` (a Job name is at most 57 characters: never cut), which is how
    the admission policy ties a claim to its pod's Job. A refusal is asked again for as long as a refused
    Job is (``job_start_failure_seconds``): an API server just restarted refuses until it has read the
    roles."""
    container["env"] += [
        {"name": CLAIM_ENV, "value": CLAIM_MOUNT},
        {"name": REFUSED_ENV, "value": f"{settings.job_start_failure_seconds:g}"},
        *(
            {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
            for name, path in FIELD_ENV.values()
        ),
    ]
    container["volumeMounts"].append({"name": "start-claim", "mountPath": CLAIM_MOUNT, "readOnly": True})
    token = {"path": "token", "expirationSeconds": 3600}
    ca = {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    pod_spec["volumes"].append(
        {"name": "start-claim", "projected": {"sources": [{"serviceAccountToken": token}, {"configMap": ca}]}}
    )


def suspended(job: dict[str, Any] | None) -> bool:
    """Whether a Job is one made suspended that was never let run (:meth:`JobExecutor.prepare`): the Job
    controller never started it. One suspended by a person after it started keeps its start time."""
    return (
        job is not None
        and bool(job["spec"].get("suspend"))
        and not (job.get("status") or {}).get("startTime")
    )


def pod_result(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The runner's result from its pod, once the container has ended (None before)."""
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated")
        if terminated is None:
            continue
        message = terminated.get("message") or ""
        try:
            result = parse_result(message)
        except ValueError:  # the runner died (killed: the OOM killer; the node lost it) before its result
            said = message.strip()[-500:] or "no result in the termination message"
        else:
            # The runner exits with its result's code: a result its container's code belies is no runner's
            # last word (a script wrote it into the termination log, then the container was killed).
            if result["exitCode"] == terminated.get("exitCode"):
                return result
            said = f"the termination message claims exit code {result['exitCode']}, not the runner's"
        how = died(terminated.get("exitCode"), terminated.get("reason"))
        return failure(ExitCode.NOT_EXECUTED, f"{how}: {said}")
    return None


def stood_by(pod: dict[str, Any]) -> str | None:
    """The pod that claimed the run's start, if ``pod`` is a second pod of its Job that found the start
    claimed and never ran the script (:func:`runner.claim.claimed_by`)."""
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated") or {}
        if holder := claimed_by(terminated.get("message") or ""):
            return holder
    return None


def died(code: int | None, reason: str | None) -> str:
    """How a runner's container that wrote no result ended, in words (137 is 128 + SIGKILL; the kubelet's
    reason says whether that was the OOM killer)."""
    if reason == "OOMKilled":
        over = "OOMKilled, its container went over its memory limit"
        return f"the runner died (exit {code}: {over}) without writing a result"
    if code is not None and 128 < code < 160:
        return f"the runner died (exit {code}: killed by {signal_name(code - 128)}) without writing a result"
    return f"the runner exited with code {code} without writing a result"


def job_failure(job: dict[str, Any]) -> dict[str, Any] | None:
    """The result of a Job that ended without a pod's result (None while it has not ended). A Job that a
    person suspended after it started has ended once its pods are stopped: suspended, it never finishes
    (its deadline does not run), and resumed it would run the script again."""
    name = job["metadata"]["name"]
    status = job.get("status") or {}
    if (
        (job.get("spec") or {}).get("suspend")
        and status.get("startTime")
        and not (status.get("active") or status.get("terminating"))
    ):
        return failure(ExitCode.CANCELLED, f"cancelled: Job {name} was suspended, and its pod stopped")
    ended = {
        c["type"]: c
        for c in status.get("conditions") or []
        if c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
    }
    if not ended:
        return None
    failed = ended.get("Failed")
    if failed is not None and failed.get("reason") == "DeadlineExceeded":
        return failure(ExitCode.TIMEOUT, f"Job {name} exceeded its deadline")
    reason = (failed or {}).get("message") or "no pod ran"
    return failure(ExitCode.NOT_EXECUTED, f"Job {name} could not run: {reason}")


def start_failure(pod: dict[str, Any]) -> tuple[str, bool] | None:
    """Why a pending pod cannot start its container, in the kubelet's or the scheduler's words
    (``ImagePullBackOff: Back-off pulling image "x"``), and whether that lasts until a person mends it
    (:data:`CANNOT_START`) rather than until the cluster has room for it (``Unschedulable``); None while it
    may start (being scheduled, its image being pulled) and once it has started."""
    status = pod.get("status") or {}
    if phase(pod) != "Pending":
        return None
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in CANNOT_START:
            return ": ".join(filter(None, (waiting["reason"], waiting.get("message")))), True
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
            return ": ".join(filter(None, ("Unschedulable", condition.get("message")))), False
    return None


def ran(pod: dict[str, Any]) -> bool:
    """Whether a pod's container has started: it runs, or has ended."""
    return any(
        {"running", "terminated"} & (container.get("state") or {}).keys()
        for container in (pod.get("status") or {}).get("containerStatuses") or []
    )


def kept_claim(pod: dict[str, Any]) -> str | None:
    """The claim (the ledger Lease's name, from its label) of a pod kept for its run's end
    (:meth:`JobRun.cancel`) and deleted since; None for any other pod, and for one from before pods named
    their claim."""
    meta = pod["metadata"]
    if keys.RESULT_FINALIZER not in (meta.get("finalizers") or []) or not meta.get("deletionTimestamp"):
        return None
    return (meta.get("labels") or {}).get(keys.CLAIM_LABEL)


def kept_for_nothing(pod: dict[str, Any], claim: dict[str, Any] | None) -> bool:
    """Whether a kept pod (:func:`kept_claim`) is kept for nothing: its run's end is recorded in its
    claim (``claim``, the Lease as read), or that claim is gone (trimmed once finished) or is another
    run's (its request id claimed again since). Such a pod stayed for ever when the controller that
    recorded its run's end died before it let the pod go and the Runbook was deleted by force meanwhile:
    nothing waited for that run any more. A claim without the end is an orphan's
    (:meth:`controller.dispatcher.Dispatcher.take_orphan`), whose end is read from the pod."""
    if claim is None:
        return True
    labels = pod["metadata"].get("labels") or {}
    holder = (claim.get("spec") or {}).get("holderIdentity") or ""
    if runbook_job(labels.get(keys.RUNBOOK_LABEL, ""), holder) != labels.get(keys.JOB_NAME_LABEL):
        return True
    return keys.RESULT in ((claim.get("metadata") or {}).get("annotations") or {})


def phase(pod: dict[str, Any]) -> str:
    return (pod.get("status") or {}).get("phase") or "Pending"


def may_run(pod: dict[str, Any]) -> bool:
    """Whether a pod may still run its script (also one being deleted, in its grace period)."""
    return phase(pod) in ("Pending", "Running")


def event_time(event: dict[str, Any]) -> str:
    """When a core/v1 Event last happened (RFC 3339 in UTC, so the strings sort as the times do)."""
    return event.get("lastTimestamp") or event.get("eventTime") or event["metadata"]["creationTimestamp"]


@dataclass
class Stuck:
    """A run's pod that cannot start (``what``: "pod NAME", or "the pod of Job NAME" when it cannot even be
    created): why, since when for a lasting cause (the event loop's time), what the log says."""

    what: str
    why: str
    since: float | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)
    said: set[str] = field(default_factory=set)  # the reasons the lines give
    timer: asyncio.TimerHandle | None = None


class JobRun:
    def __init__(self, executor: JobExecutor, namespace: str, name: str):
        self.executor = executor
        self.namespace = namespace
        self.name = name

    async def wait(self, on_logs: LogCallback) -> dict[str, Any]:
        """The result, from the watch (the pod's termination message). Log lines come with it; before it,
        only why the pod cannot start, if it cannot."""
        return await self.executor.outcome(self.namespace, self.name, on_logs)

    def logs(self) -> list[dict[str, Any]]:
        stuck = self.executor.stuck.get((self.namespace, self.name))
        return list(stuck.lines) if stuck is not None else []

    async def cancel(self) -> None:
        """Stop the run: its pods that ran are kept once deleted (:meth:`KubeApi.keep_pod`; one that never
        started has no end of its own, and may never get one: unscheduled, it ends with no container), then
        its Job is deleted (in the foreground: its pods first, each once it has stopped). A pod's end is then
        read from the pod, which stays until the run's result is recorded (:meth:`release`), also by a
        controller that comes after this one dies: a run that ended before its stop is recorded as it ended.
        The run's result (a pod's end, or its Job gone with no pod) comes once no pod of it runs: only then
        may its lock go."""
        for pod in await self.executor.kube.job_pods(self.namespace, self.name):
            if ran(pod):
                await self.executor.kube.keep_pod(self.namespace, pod["metadata"]["name"])
        await self.executor.kube.delete_job(self.namespace, self.name)

    async def release(self) -> None:
        """The result is recorded: the Job may now go after its TTL, and its pod's events are not the
        controller's concern any more. A stopped run's pods (:meth:`cancel`) may go now, and its Job with
        them. A Job never let run (:meth:`JobExecutor.prepare`) never finishes, so no TTL would take it: it
        goes now."""
        self.executor.forget((self.namespace, self.name))
        kube = self.executor.kube
        ttl = {"spec": {"ttlSecondsAfterFinished": self.executor.settings.job_ttl_seconds}}
        job = await kube.patch_job(self.namespace, self.name, ttl)
        if job is None or job["metadata"].get("deletionTimestamp"):  # stopped: its pods kept (cancel)
            for pod in await kube.job_pods(self.namespace, self.name):
                if keys.RESULT_FINALIZER in (pod["metadata"].get("finalizers") or []):
                    await kube.let_pod_go(self.namespace, pod["metadata"]["name"])
        else:
            await self.executor.delete_suspended(
                self.namespace, self.name, job, lambda job: job["spec"].get("suspend")
            )


class JobExecutor:
    kind = "job"

    def __init__(self, settings: ControllerSettings, kube: KubeApi):
        self.settings = settings
        self.kube = kube
        # The runs this controller started, adopted or found, until their result is recorded: only their
        # pods' events count. The others' (finished runs whose Jobs stay for their TTL, an hour by default;
        # another replica's) cost nothing but their place in the watch.
        self.expected: set[tuple[str, str]] = set()
        # Set once the watches of Jobs and pods have their starting versions: a run started, or read as it
        # is, before that could end unseen between its read and the watches' start.
        self.watching = asyncio.Event()
        self.results: dict[tuple[str, str], dict[str, Any]] = {}  # expected runs' results, until taken
        self.waiters: dict[tuple[str, str], asyncio.Future] = {}
        self.checks: set[asyncio.Task] = set()
        self.deletions: dict[tuple[str, str], asyncio.Future] = {}  # Jobs being deleted, until gone
        self.stuck: dict[tuple[str, str], Stuck] = {}  # runs whose pod cannot start
        self.log_callbacks: dict[tuple[str, str], LogCallback] = {}  # runs being waited for
        self.podless: dict[tuple[str, str], float] = {}  # runs waited for with no pod seen: since when
        self.podless_check: asyncio.Task | None = None
        # Runs failing because their pod could not start, while their Job is deleted: the runner's own
        # report of its stop, if it did start meanwhile.
        self.giving_up: dict[tuple[str, str], dict[str, Any] | None] = {}
        # Runs whose Job was deleted before their result was seen: they end once their pod has (its own
        # result), or is gone (lost), never while it may still run the script.
        self.jobless: set[tuple[str, str]] = set()

    def handle(self, request: RunRequest) -> JobRun:
        return JobRun(self, request.namespace, job_name(request))

    async def may_run(self, namespace: str, name: str, uid: str) -> bool:
        """Whether a pod of its Job may still run: a gone Runbook's Job stays (its request id's claim owns it
        too) until a controller stops its run, and its pods stop within their grace period."""
        return any(map(may_run, await self.kube.job_pods(namespace, runbook_job(name, uid))))

    # -- the watches ----------------------------------------------------------------------------
    async def follow(self) -> None:
        """Watch the namespace's Jobs and pods (mdops's label) from now on, for ever. Not their present
        state: the finished runs' Jobs and pods stay for their TTL (an hour by default), and listing them
        at every start would cost the controller each of them; the runs it adopts it reads itself."""
        namespace = self.settings.namespace
        selector = f"{keys.MANAGED_BY}={keys.MANAGER}"
        started: set[str] = set()

        def on_start(kind: str) -> Callable[[], None]:
            def start() -> None:
                if kind in started:  # started again from the present: changes may have been missed
                    log.info(
                        "the watch of %s started again from the present: reading its %d runs again",
                        kind,
                        len(self.expected),
                    )
                    self.resync()
                started.add(kind)
                if len(started) == 2:
                    self.watching.set()

            return start

        await asyncio.gather(
            self.kube.watch(
                f"{JOBS}/namespaces/{namespace}/jobs", selector, self.observe_job, on_start("jobs")
            ),
            self.kube.watch(
                f"{CORE}/namespaces/{namespace}/pods", selector, self.observe_pod, on_start("pods")
            ),
        )

    async def let_go_kept_for_nothing(self, active: Callable[[], bool]) -> None:
        """Let go the kept pods (:meth:`KubeApi.kept_pods`) that are kept for nothing
        (:func:`kept_for_nothing`), for ever: as the controller starts, then every :data:`KEPT_LOOK_SECONDS`
        while ``active()`` (this replica is the active one). A pod becomes kept for nothing while a
        controller runs too: the replica that takes over from one that died after recording the run's end
        was already running, and a claim that could not be read is read at the next look. Each look is one
        list of the kept pods (few: those of stopped runs, until their ends are recorded) and one read of the
        claim of each deleted one."""
        namespace = self.settings.namespace
        while True:
            try:
                await self._let_go_kept(namespace)
            except ApiError as error:  # looked for again at the next look
                log.warning("could not list the kept pods to let go those kept for nothing: %s", error)
            except Exception:  # a failed look must not end the looking, as the run folders' sweep's
                log.exception("looking for the pods kept for nothing failed")
            await asyncio.sleep(KEPT_LOOK_SECONDS)
            while not active():
                await asyncio.sleep(KEPT_LOOK_SECONDS)

    async def _let_go_kept(self, namespace: str) -> None:
        for pod in await self.kube.kept_pods(namespace):
            claim = kept_claim(pod)
            if not claim:
                continue
            name = pod["metadata"]["name"]
            try:
                if kept_for_nothing(pod, await self.kube.get_lease(namespace, claim)):
                    log.info(
                        "%s/%s: kept for its run's end, which is recorded (or its claim gone): it goes",
                        namespace,
                        name,
                    )
                    await self.kube.let_pod_go(namespace, name)
            except ApiError as error:  # the others are looked at all the same; this one at the next look
                log.warning(
                    "%s/%s: could not tell whether it is kept for nothing: %s", namespace, name, error
                )

    def resync(self) -> None:
        """Read every expected run's Job and pods again, as the watch would have shown them."""
        for key in list(self.expected):
            self._spawn(self._read(key))

    async def _read(self, key: tuple[str, str]) -> None:
        while key in self.expected:  # until read: its end may be in no event to come
            try:
                await self._observe_now(key)
                return
            except ApiError as error:
                log.warning("could not read Job %s/%s again after its watch broke: %s", *key, error)
                await asyncio.sleep(GIVE_UP_RETRY_SECONDS)

    async def _observe_now(self, key: tuple[str, str]) -> dict[str, Any] | None:
        """Observe the run's Job, then its pods, as they are now, as the watch would have shown them (after
        a 410, or on adoption). Its Job (None: gone)."""
        job = await self.kube.get_job(*key)
        pods = await self.kube.job_pods(*key)
        if job is None:
            self.observe_job("DELETED", {"metadata": {"namespace": key[0], "name": key[1]}})
        else:
            self.observe_job("MODIFIED", job)
        for pod in pods:
            self.observe_pod(None, pod)
        return job

    async def start(self, request: RunRequest) -> JobRun:
        """Let the prepared Job run (idempotent: one running already runs on); one gone since it was
        prepared (it never ran) is made afresh. Not for a Runbook that is gone (deleted by force: the garbage
        collector takes it off its suspended Job's owners, and the patch that lets the Job run tests that
        owner), whose pod would run the script for a request nobody can see, nor for one deleted or cancelled
        (another replica found its Job suspended and deleted it, and ends the run as never started:
        :meth:`adopt`; a Job let run as it is deleted gets no pod): :class:`RunbookGone`. One that started
        before (let run by a person) is read as it is: its pod's events came while the run was not this
        controller's to watch."""
        await self.watching.wait()
        run = self.handle(request)
        key = (request.namespace, run.name)
        self.expected.add(key)  # before the write: its pod's first events may come before the answer
        try:
            try:
                job = await self.kube.let_job_run(request.namespace, run.name, request.uid)
                disowned = False
            except Disowned:
                job, disowned = None, True
            started = bool(((job or {}).get("status") or {}).get("startTime"))
            if job is None or (job["metadata"].get("deletionTimestamp") and not started):  # no pod comes
                runbook = await self.kube.get_runbook(request.namespace, request.name)
                if runbook is None or runbook["metadata"]["uid"] != request.uid:
                    raise RunbookGone(f"{request.namespace}/{request.name}")
                if runbook["metadata"].get("deletionTimestamp") or runbook["spec"].get("cancel"):
                    raise RunbookGone(f"{request.namespace}/{request.name}", stopped=True)
                if disowned:  # its owners edited by a person: it runs all the same
                    await self.kube.patch_job(request.namespace, run.name, {"spec": {"suspend": False}})
                else:
                    await self.kube.create_job(request.namespace, build_job(request, self.settings))
            elif started:
                await self._observe_now(key)
        except BaseException:
            self.forget(key)
            raise
        return run

    async def adopt(self, request: RunRequest) -> JobRun | dict[str, Any]:
        """The run of a Job started before; one whose Job was deleted while no controller watched it (by a
        person, a TTL or a drain) is waited for as one deleted under a running controller is: it ends once
        no pod of it may still run its script (:meth:`_without_job`). A Job still suspended was never let
        run (a controller stopped between :meth:`prepare` and :meth:`start`): it is deleted as it was read,
        which proves that its run never starts (another replica may be letting it run: then the deletion
        fails, and the Job is read again)."""
        run = self.handle(request)
        key = (request.namespace, run.name)
        if await self.delete_suspended(*key, await self._expect(*key), suspended):
            self.forget(key)
            return failure(
                ExitCode.NOT_EXECUTED,
                "never started: a controller stopped between making its Job suspended and letting it run",
            )
        return run

    async def delete_suspended(
        self, namespace: str, name: str, job: dict[str, Any] | None, still: Callable[[dict[str, Any]], bool]
    ) -> bool:
        """Delete the Job while it is ``still`` suspended, as it was read: True once deleted, False if it is
        gone or was let run meanwhile (another replica started its run). A write of the Job controller's
        since it was read (its status) changes nothing: it is read again."""
        while job is not None and still(job):
            if await self.kube.delete_job(namespace, name, job["metadata"]["resourceVersion"]):
                return True
            job = await self.kube.get_job(namespace, name)
        return False

    async def prepare(self, request: RunRequest) -> None:
        """The run's Job, suspended: the Job controller makes no pod for it until :meth:`start` lets it
        run. Made before the claim's mark comes off, it is what proves, after a controller died between
        the two, that nothing ran. The API server may refuse it (a quota, an admission policy): the run
        then has not started, and its mark is still on."""
        await self.kube.create_job(request.namespace, build_job(request, self.settings, suspended=True))

    async def resume(self, request: RunRequest) -> JobRun | dict[str, Any]:
        """A Job still suspended never ran: it is let run (:meth:`start`). Any other is adopted, and one
        gone, made before the claim's mark came off, may have run and been deleted: the run ends lost
        (:meth:`adopt`)."""
        if suspended(await self.kube.get_job(request.namespace, job_name(request))):
            return await self.start(request)
        return await self.adopt(request)

    async def find(self, request: RunRequest) -> JobRun | None:
        """The run of a Job that was let run; None if there is no Job, or only a suspended one."""
        run = self.handle(request)
        if (job := await self._expect(request.namespace, run.name)) is None or suspended(job):
            self.forget((request.namespace, run.name))
            return None
        return run

    async def _expect(self, namespace: str, name: str) -> dict[str, Any] | None:
        """Count a run started before (by another process) as this controller's from now on: its Job and
        pods, read once the watches run, are observed as they are. Its Job (None: gone)."""
        await self.watching.wait()
        key = (namespace, name)
        self.expected.add(key)
        return await self._observe_now(key)

    def forget(self, key: tuple[str, str]) -> None:
        self.expected.discard(key)
        self.results.pop(key, None)
        self.jobless.discard(key)

    async def delete(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        gone = self.deletions.get(key) or asyncio.get_running_loop().create_future()
        self.deletions[key] = gone
        try:
            await self.kube.delete_job(namespace, name)
            if await self.kube.get_job(namespace, name) is None:
                return
            await gone
        finally:
            if self.deletions.get(key) is gone:
                del self.deletions[key]

    async def outcome(self, namespace: str, name: str, on_logs: LogCallback = lambda: None) -> dict[str, Any]:
        key = (namespace, name)
        if key in self.results:
            return self.results.pop(key)
        loop = asyncio.get_running_loop()
        future = self.waiters[key] = loop.create_future()
        self.log_callbacks[key] = on_logs
        stuck = self.stuck.get(key)
        if stuck is not None:  # it could not start while nobody waited for it
            if stuck.timer is None:
                self._arm(key, stuck)
            on_logs()  # what was said of it then is shown now: a reason is said once only
        if key in self.jobless:  # adopted without its Job: its pods tell, or their end in the watch
            self._spawn(self._without_job(key))
        elif key not in self.stuck:  # its pod may have been seen before the wait: the check asks for it
            self.podless.setdefault(key, loop.time())
            if self.podless_check is None:
                self.podless_check = asyncio.ensure_future(self._check_podless())
        try:
            return await future
        finally:
            if self.waiters.get(key) is future:
                del self.waiters[key]
                self.podless.pop(key, None)
                self.jobless.discard(key)
            if self.log_callbacks.get(key) is on_logs:
                del self.log_callbacks[key]

    def _ended(self, key: tuple[str, str], result: dict[str, Any]) -> None:
        if key in self.giving_up:  # the run's result is that its pod did not start (:meth:`_give_up`)
            return
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
        if key not in self.expected:  # a finished run's pod, or another replica's
            return
        if holder := stood_by(pod):  # its end is not the run's
            log.info("%s/%s: pod %s did not run the script: %s claimed its start", *key, meta["name"], holder)
            return
        self.podless.pop(key, None)
        if kind == "DELETED":
            self.results.pop(key, None)
            self._started(key)
            if key in self.jobless and key in self.waiters:
                self._ended(key, lost(f"its Job {key[1]} was deleted before it finished, then its pod"))
            return
        result = pod_result(pod)
        if key in self.giving_up:
            if result is not None and result.get("exitCode") == ExitCode.CANCELLED:
                self.giving_up[key] = result  # its runner did start after all, and was stopped
            return
        failure = start_failure(pod)
        if failure is None:
            self._started(key)
        else:
            self._cannot_start(key, f"pod {meta['name']}", *failure)
        if result is not None:
            self._ended(key, result)

    def _cannot_start(self, key: tuple[str, str], what: str, why: str, lasting: bool) -> None:
        limit = self.settings.job_start_failure_seconds
        stuck = self.stuck.setdefault(key, Stuck(what, why))
        stuck.what = what
        stuck.why = why
        if lasting and stuck.since is None:
            stuck.since = asyncio.get_running_loop().time()
            self._arm(key, stuck)
        reason = why.split(":", 1)[0]
        # The kubelet goes back and forth between ErrImagePull and ImagePullBackOff; each FailedCreate names
        # another pod.
        if reason in stuck.said:
            return
        stuck.said.add(reason)
        then = ""
        if lasting and limit:
            then = f"; the run fails if it has not started {limit:g} s after the first of these"
        line = {"time": now(), "level": "WARNING", "message": f"{what} cannot start: {why}{then}"}
        stuck.lines.append(line)
        self.log_callbacks.get(key, lambda: None)()

    def _started(self, key: tuple[str, str]) -> None:
        stuck = self.stuck.pop(key, None)
        if stuck is not None and stuck.timer is not None:
            stuck.timer.cancel()

    def _arm(self, key: tuple[str, str], stuck: Stuck, delay: float | None = None) -> None:
        """Give up on the run ``delay`` seconds from now (by default, when the limit is reached)."""
        limit = self.settings.job_start_failure_seconds
        if limit and stuck.since is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, stuck.since + limit - loop.time()) if delay is None else delay
            stuck.timer = loop.call_later(delay, self._give_up_soon, key, stuck)

    def _give_up_soon(self, key: tuple[str, str], stuck: Stuck) -> None:
        stuck.timer = None
        if self.stuck.get(key) is not stuck:  # it started, or went
            return
        if key not in self.waiters:  # nobody waits for the run now (a pause): armed again by the next
            return
        task = asyncio.ensure_future(self._give_up(key, stuck))
        self.checks.add(task)
        task.add_done_callback(self.checks.discard)

    async def _give_up(self, key: tuple[str, str], stuck: Stuck) -> None:
        """Fail the run of a pod that has not started: its Job is deleted first, and with it the pod, so that
        nothing of the run can start once its result says it never ran."""
        self.giving_up[key] = None
        try:
            await self.delete(*key)
            result = self.giving_up[key]
        except ApiError as error:  # tried again soon: until then, the run waits as it did
            log.warning("could not delete Job %s/%s, whose pod cannot start: %s", *key, error)
            self._arm(key, stuck, GIVE_UP_RETRY_SECONDS)
            return
        finally:
            del self.giving_up[key]
        if result is None:
            limit = self.settings.job_start_failure_seconds
            result = failure(
                ExitCode.NOT_EXECUTED,
                f"could not start: {stuck.what} did not start within {limit:g} s ({stuck.why}); "
                "its Job was deleted",
            )
            result["logs"] = [*stuck.lines, *result["logs"]]
        self._started(key)
        self._ended(key, result)

    async def _check_podless(self) -> None:
        """While runs are waited for with no pod, every :data:`CREATE_CHECK_SECONDS`: those without one for
        that long whose Job the Job controller failed to create a pod for cannot start, in its words (the
        latest ``FailedCreate`` Event's message); the first pod of theirs seen ends it."""
        loop = asyncio.get_running_loop()
        try:
            while self.podless:
                await asyncio.sleep(CREATE_CHECK_SECONDS)
                due: dict[str, set[str]] = {}
                for (namespace, job), since in self.podless.items():
                    if loop.time() - since >= CREATE_CHECK_SECONDS:
                        due.setdefault(namespace, set()).add(job)
                for namespace, jobs in due.items():
                    await self._podless_in(namespace, jobs)
        finally:
            self.podless_check = None

    async def _podless_in(self, namespace: str, jobs: set[str]) -> None:
        try:
            events = await self.kube.pod_create_failures(namespace)
        except ApiError as error:  # read again at the next check
            log.warning("could not read the FailedCreate Events in %s: %s", namespace, error)
            return
        latest = {}
        for event in sorted(events, key=event_time):
            job = event["involvedObject"].get("name")
            if job in jobs:
                latest[job] = event.get("message") or ""
        for job, message in latest.items():
            key = (namespace, job)
            if key not in self.podless:
                continue
            try:  # the pod may have been created (and seen) before the run was waited for
                created = await self.kube.job_pods(namespace, job)
            except ApiError as error:
                log.warning("could not list the pods of Job %s/%s: %s", namespace, job, error)
                continue
            if created:
                self.podless.pop(key, None)
            elif key in self.podless:
                self._cannot_start(key, f"the pod of Job {job}", f"FailedCreate: {message}", True)

    def observe_job(self, kind: str | None, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        key = (meta["namespace"], meta["name"])
        if kind == "DELETED":
            gone = self.deletions.get(key)
            if gone is not None and not gone.done():
                gone.set_result(None)
            if key in self.waiters:
                self.jobless.add(key)
                self._spawn(self._without_job(key))
            elif key in self.expected:  # not waited for yet: its wait looks for its pods (outcome)
                self.jobless.add(key)
            return
        failed = job_failure(job) if key in self.expected else None
        if failed is None:
            return
        if key in self.waiters:  # ended without a pod's result in the watch yet: its pod says why, if any
            self._spawn(self._from_pods(key, job))
        elif key not in self.results:  # ended before its wait (its deadline): the Job says why, unless its
            self.results[key] = failed  # pod's result comes (observe_pod)

    def _spawn(self, step: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(step)
        self.checks.add(task)
        task.add_done_callback(self.checks.discard)

    async def _without_job(self, key: tuple[str, str]) -> None:
        """The run's Job was deleted before its result was seen (by a person, with its pod orphaned or
        left to the garbage collector): the run, and its lock, end only once no pod of it may still run
        its script; with the pod's own result if it wrote one."""
        while key in self.waiters:
            try:
                pods = await self.kube.job_pods(*key)
            except ApiError as error:  # asked again: ending now could free the lock under a running pod
                log.warning("could not list the pods of deleted Job %s/%s: %s", *key, error)
                await asyncio.sleep(GIVE_UP_RETRY_SECONDS)
                continue
            if key not in self.waiters:
                break
            ended = [result for pod in pods if (result := pod_result(pod)) is not None]
            if ended:
                self._ended(key, ended[0])
            elif not any(map(may_run, pods)):
                self._ended(key, lost(f"its Job {key[1]} was deleted before it finished"))
            break  # else: its pod's end, or its deletion, comes in the watch (observe_pod)

    async def _from_pods(self, key: tuple[str, str], job: dict[str, Any]) -> None:
        for pod in await self.kube.job_pods(*key):
            result = pod_result(pod)
            if result is not None:
                self._ended(key, result)
                return
        self._ended(key, job_failure(job))
