"""A simulated kubelet (and scheduler) for the local control plane.

No kubelet runs on the machines mdops is developed on, so this process stands
in for the node: it registers one Ready node, binds every unscheduled pod to
it, and runs each pod's first container to completion, writing the pod status a
kubelet would write (phase, container state, exit code, termination message).
It finalises pod deletion the way a kubelet does (SIGTERM, the grace period, SIGKILL, then the pod's
terminal phase, then its removal), so Jobs, ``activeDeadlineSeconds``, garbage collection and a
namespace's deletion behave as in a cluster.
While the API server is away (restarted, or a lost connection) the pods run on, as on a kubelet: podsim
keeps trying its calls, lists the pods again once it is back, and stops the runs of pods deleted meanwhile.
A pod still ``Running`` when podsim starts ran under an earlier podsim that died
(its process died too): it fails with exit code 137 and reason
``ContainerStatusUnknown``, as a kubelet reports a container it cannot find.

How a pod "runs" is chosen by its annotations: a local process (fast, for the
controller's logic), a podman container of its image (where the image is the
point), or a scripted outcome.

``podsim.mdops.io/run: exec``
    The first container's ``command`` + ``args`` run as a process on this
    machine, with the container's ``env`` (values, and the pod's fields from
    the Downward API) over its ``envFrom`` (a Secret's or a ConfigMap's keys;
    one that is not there leaves the pod waiting, ``CreateContainerConfigError``,
    as a kubelet does) and, as a kubelet adds them, ``KUBERNETES_SERVICE_HOST``
    and ``_PORT`` (the API server at the loopback address podsim reaches it
    at). ConfigMap, emptyDir and projected volumes (a ServiceAccount token
    bound to the pod, made by a TokenRequest; ConfigMaps) are materialised
    in a temporary directory, and every mount path
    (and the container's ``terminationMessagePath``) found in the command, the
    arguments or an env value is rewritten to its local copy. The exit code
    and termination message are the process's own.
    Since paths are matched by name, a volume mounted at a path this machine
    uses itself (``/tmp``) would capture that machine path too: mount
    elsewhere and point to it (``TMPDIR``).
    The command runs with this checkout's Python code, as if the image were
    built from it; the image's own files are this checkout's too: the paths of
    ``IMAGE_FILES`` (where the Dockerfile copies them) are rewritten to their
    folders in the repository, unless a volume is mounted over them, as in a
    container. So a Job pod without a scripts ConfigMap runs the image's
    reference scripts, ``examples/scripts/``.

``podsim.mdops.io/run: container``
    The first container runs in podman (:mod:`devcluster.podman`), from its image (never pulled),
    the way a kubelet runs it: command and args, env (as above), ConfigMap, emptyDir and projected
    volumes (materialised as above and bind-mounted), the security context (user, read-only root
    filesystem, ...) and the memory and CPU limits. A host file is mounted at the
    ``terminationMessagePath``; the exit code and termination message are the container's (the end
    of its output with ``FallbackToLogsOnError``). Deleting the pod removes the container. Its
    network is none, or the host's with ``hostNetwork: true`` or ``podsim.mdops.io/network: host``
    (to reach a service on this machine's loopback, the API server too). A container runs at most
    an hour (``podman --timeout``), so that one left behind by a killed podsim stops by itself.

otherwise (the default)
    ``podsim.mdops.io/exit-code`` (default 0), ``podsim.mdops.io/termination-message``
    and ``podsim.mdops.io/duration-seconds`` (default 0) decide the outcome. A pod that runs for no
    time is reported once, ended, never ``Running``: a kubelet, which looks at its containers once a
    second, sees a container that exits at once only when it has ended, and reports it so (a Job's
    controller then has no ready pod to count and write).

A pod whose container cannot start stays ``Pending`` with the container ``waiting`` and a kubelet's
reason, until it is deleted (then ``Failed``, the container ``ContainerStatusUnknown``): in
``container`` mode when its image is not in podman's storage (nothing is pulled here:
``ErrImageNeverPull`` with ``imagePullPolicy: Never``, else ``ImagePullBackOff``), in any mode with
``podsim.mdops.io/waiting-reason`` (and ``podsim.mdops.io/waiting-message``). A pod with
``podsim.mdops.io/unschedulable`` (the scheduler's message) is never bound: ``PodScheduled`` is
``False``, reason ``Unschedulable``. A deleted pod that was never bound is marked ``Failed``, as the pod
garbage collector of kube-controller-manager does (it does not run here), so that its Job lets it go.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

import urllib3
from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from kubernetes.config import ConfigException

from devcluster import podman
from devcluster.controlplane import REPO
from devcluster.processes import die_with_parent
from runbooks.contract import format_time, now
from runbooks.kube import NotLoopbackError, api_client, persistently, server_away

log = logging.getLogger("podsim")

NODE = "podsim"
PREFIX = "podsim.mdops.io/"
MESSAGE_LIMIT = 4096
# Paths in the image built by the Dockerfile -> what it copies there from the repository.
IMAGE_FILES = {"/etc/mdops/scripts": REPO / "examples" / "scripts"}
LOG_FALLBACK_BYTES = 2048
CONTAINER_TIMEOUT_SECONDS = 3600
KILLED_REPORT_SECONDS = 30  # how long a killed pod's run may take to report its end
LABEL = "io.mdops.podsim"


def image_files(mounts: list[client.V1VolumeMount]) -> dict[str, str]:
    """The image's paths that no volume hides, and their folders in this checkout."""
    hidden = [mount.mount_path.rstrip("/") for mount in mounts]
    return {
        path: str(local)
        for path, local in IMAGE_FILES.items()
        if not any(path == top or path.startswith(top + "/") for top in hidden)
    }


def container_name(pod: client.V1Pod) -> str:
    return f"podsim-{pod.metadata.uid}"


class MissingSource(Exception):
    """An ``envFrom`` source (Secret, ConfigMap) that is not there: the container cannot start."""


class PodRun(threading.Thread):
    """Runs one pod to completion and reports its status."""

    def __init__(self, sim: PodSim, pod: client.V1Pod):
        super().__init__(name=f"pod-{pod.metadata.namespace}/{pod.metadata.name}", daemon=True)
        self.sim = sim
        self.pod = pod
        self.stopping = threading.Event()  # deleted: it is to end (and podsim reports how it ended)
        self.cancelled = threading.Event()  # its end is reported to no one: the pod is gone, or podsim stops
        self.process: subprocess.Popen | None = None
        self.started = threading.Lock()  # a stop and the process's start: one before the other
        self.container = container_name(pod)
        self.env_from: dict[str, str] = {}  # its envFrom sources' variables, read as it starts

    @property
    def annotations(self) -> dict[str, str]:
        return self.pod.metadata.annotations or {}

    def run(self) -> None:
        started = now()
        waiting = self._cannot_start()
        if waiting is not None:
            self._wait_until_deleted(waiting, started)
            return
        mode = self.annotations.get(PREFIX + "run")
        try:
            if mode in ("exec", "container") or self._duration() > 0:
                self.sim.set_status(self.pod, "Running", {"running": {"startedAt": started}}, started)
            if mode == "exec":
                code, message = self._exec()
            elif mode == "container":
                code, message = self._container()
            else:
                code, message = self._scripted()
        except Exception as error:  # report instead of leaving the pod Running forever
            log.exception("pod %s failed to run", self.name)
            code, message = 128, f"podsim: {error}"[:MESSAGE_LIMIT]
        if self.cancelled.is_set():
            return
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "message": message,
            "startedAt": started,
            "finishedAt": now(),
        }
        self.sim.set_status(
            self.pod, "Succeeded" if code == 0 else "Failed", {"terminated": terminated}, started
        )

    def _cannot_start(self) -> dict[str, str] | None:
        """The container's waiting state when it cannot start, as a kubelet reports it; None if it can."""
        reason = self.annotations.get(PREFIX + "waiting-reason")
        if reason:
            return {"reason": reason, "message": self.annotations.get(PREFIX + "waiting-message", "")}
        container = self.pod.spec.containers[0]
        try:
            self.env_from = self._env_from()
        except MissingSource as missing:
            return {"reason": "CreateContainerConfigError", "message": str(missing)}
        if self.annotations.get(PREFIX + "run") != "container" or podman.image_exists(container.image):
            return None
        if container.image_pull_policy == "Never":
            message = f'Container image "{container.image}" is not present with pull policy of Never'
            return {"reason": "ErrImageNeverPull", "message": message}
        return {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{container.image}"'}

    def _wait_until_deleted(self, waiting: dict[str, str], started: str) -> None:
        self.sim.set_status(self.pod, "Pending", {"waiting": waiting}, started)
        self.stopping.wait()
        if self.cancelled.is_set():
            return
        unknown = {
            "exitCode": 137,
            "reason": "ContainerStatusUnknown",
            "message": "The container could not be located when the pod was terminated",
            "startedAt": started,
            "finishedAt": now(),
        }
        self.sim.set_status(self.pod, "Failed", {"terminated": unknown}, started)

    def _duration(self) -> float:
        return float(self.annotations.get(PREFIX + "duration-seconds", "0"))

    def _scripted(self) -> tuple[int, str]:
        # Deleted meanwhile: it ends on SIGTERM, as a process that handles it would.
        if self.stopping.wait(self._duration()):
            return 128 + signal.SIGTERM, ""
        code = int(self.annotations.get(PREFIX + "exit-code", "0"))
        return code, self.annotations.get(PREFIX + "termination-message", "")

    def _exec(self) -> tuple[int, str]:
        container = self.pod.spec.containers[0]
        argv = [*(container.command or []), *(container.args or [])]
        if not argv:
            return 128, "podsim: exec needs the container's command (images are not run here)"
        root = Path(tempfile.mkdtemp(prefix="podsim-"))
        try:
            volumes = self._materialise(root)
            mounts = container.volume_mounts or []
            rewrites = {
                **image_files(mounts),
                **{m.mount_path.rstrip("/"): str(volumes[m.name]) for m in mounts},
            }
            message_file = self._message_file(root)
            rewrites[container.termination_message_path or "/dev/termination-log"] = str(message_file)

            def rewrite(value: str) -> str:
                for path in sorted(rewrites, key=len, reverse=True):
                    if value == path or value.startswith(path + "/"):
                        return rewrites[path] + value[len(path) :]
                return value

            env = {**os.environ, **{name: rewrite(value) for name, value in self._env().items()}}
            output = root / "output.log"
            with output.open("wb") as out:
                with self.started:
                    self.process = subprocess.Popen(
                        [rewrite(a) for a in argv],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        cwd=root,
                        start_new_session=True,
                        preexec_fn=die_with_parent,
                    )
                    if self.stopping.is_set():  # stopped while it was being started: it gets the stop too
                        self._signal(signal.SIGKILL if self.cancelled.is_set() else signal.SIGTERM)
                code = self.process.wait()
            if code < 0:  # killed by a signal, as a container runtime reports it
                code = 128 - code
            return code, self._message(code, container.termination_message_policy, message_file, output)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _container(self) -> tuple[int, str]:
        pod = self.sim.core.api_client.sanitize_for_serialization(self.pod)
        container = pod["spec"]["containers"][0]
        container["env"] = [{"name": name, "value": value} for name, value in self._env().items()]
        container.pop("envFrom", None)  # in its variables now
        network = self.annotations.get(PREFIX + "network", "none")
        if pod["spec"].get("hostNetwork"):
            network = "host"
        root = Path(tempfile.mkdtemp(prefix="podsim-"))
        try:
            volumes = self._materialise(root)
            message_file = self._message_file(root)
            message_path = container.get("terminationMessagePath") or "/dev/termination-log"
            try:
                options = podman.container_options(pod["spec"], container, volumes, network)
            except podman.Unsupported as error:
                return 128, f"podsim: cannot run this pod in a container: {error}"
            created = podman.podman(
                "create",
                f"--name={self.container}",
                f"--hostname={self.pod.metadata.name}",
                f"--timeout={CONTAINER_TIMEOUT_SECONDS}",
                f"--label={LABEL}={self.pod.metadata.namespace}/{self.pod.metadata.name}",
                f"--volume={message_file}:{message_path}",
                *options,
                check=False,
            )
            if created.returncode != 0:
                reason = created.stderr.strip()[-LOG_FALLBACK_BYTES:]
                return 128, f"podsim: podman could not create the container: {reason}"
            if self.stopping.is_set():  # deleted while being created: nothing was there to stop
                return 137, ""
            output = root / "output.log"
            with output.open("wb") as out:
                subprocess.run(
                    ["podman", "start", "--attach", self.container],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=podman.environment(),
                    cwd=root,  # conmon writes a file "oom" where it runs when the OOM killer kills in it
                    check=False,
                )
            state = podman.podman(
                "inspect", "--format", "{{json .State}}", self.container, check=False
            ).stdout
            if not state:  # removed: the pod was deleted
                return 137, ""
            state = json.loads(state)
            if state["Status"] != "exited" or state.get("Error"):
                detail = state.get("Error") or output.read_text(errors="replace")[-LOG_FALLBACK_BYTES:]
                return 128, f"podsim: podman could not run the container: {detail}"[:MESSAGE_LIMIT]
            # podman 4.3 reports -1 for a container it killed at its --timeout: SIGKILL's code then.
            code = state["ExitCode"] if state["ExitCode"] >= 0 else 137
            policy = container.get("terminationMessagePolicy")
            return code, self._message(code, policy, message_file, output)
        finally:
            podman.podman("rm", "--force", "--time=0", self.container, check=False)
            shutil.rmtree(root, ignore_errors=True)

    @staticmethod
    def _message_file(root: Path) -> Path:
        """The host file behind the termination message path, writable by any uid (a kubelet
        creates it for the container's user)."""
        message_file = root / "termination-log"
        message_file.touch()
        message_file.chmod(0o666)
        return message_file

    @staticmethod
    def _message(code: int, policy: str | None, message_file: Path, output: Path) -> str:
        """The termination message, or with FallbackToLogsOnError the end of the output of a
        container that failed without writing one."""
        message = message_file.read_text(errors="replace")
        if not message and code != 0 and policy == "FallbackToLogsOnError":
            message = output.read_text(errors="replace")[-LOG_FALLBACK_BYTES:]
        return message[:MESSAGE_LIMIT]

    def _materialise(self, root: Path) -> dict[str, Path]:
        """Write the pod's ConfigMap volumes and make its emptyDir volumes (writable by any uid, as a
        kubelet makes them) under ``root``; their folders by volume name."""
        folders: dict[str, Path] = {}
        for volume in self.pod.spec.volumes or []:
            local = root / "volumes" / volume.name
            local.mkdir(parents=True)
            if volume.config_map is not None:
                config_map = persistently(
                    self.sim.core.read_namespaced_config_map,
                    volume.config_map.name,
                    self.pod.metadata.namespace,
                )
                mode = volume.config_map.default_mode or 0o644
                for key, value in (config_map.data or {}).items():
                    (local / key).write_text(value)
                    (local / key).chmod(mode)
            elif volume.empty_dir is not None:
                local.chmod(0o777)
            elif volume.projected is not None:
                self._project(volume.projected.sources or [], local)
            folders[volume.name] = local
        return folders

    def _project(self, sources: list[client.V1VolumeProjection], local: Path) -> None:
        """A projected volume's files, as a kubelet writes them: a service account token bound to the pod
        (a TokenRequest), a ConfigMap's keys; readable by any uid (its default mode)."""
        meta = self.pod.metadata
        for source in sources:
            if source.service_account_token is not None:
                wanted = source.service_account_token
                bound = {"kind": "Pod", "apiVersion": "v1", "name": meta.name, "uid": meta.uid}
                spec = {"boundObjectRef": bound, "expirationSeconds": wanted.expiration_seconds or 3600}
                if wanted.audience:
                    spec["audiences"] = [wanted.audience]
                account = self.pod.spec.service_account_name or "default"
                made = persistently(
                    self.sim.core.create_namespaced_service_account_token,
                    account,
                    meta.namespace,
                    {"spec": spec},
                )
                files = {wanted.path: made.status.token}
            elif source.config_map is not None:
                data = (
                    persistently(
                        self.sim.core.read_namespaced_config_map, source.config_map.name, meta.namespace
                    ).data
                    or {}
                )
                items = source.config_map.items or [client.V1KeyToPath(key=k, path=k) for k in data]
                files = {item.path: data[item.key] for item in items}
            else:
                raise podman.Unsupported("a projected volume of other than a token and ConfigMaps")
            for path, text in files.items():
                (local / path).parent.mkdir(parents=True, exist_ok=True)
                (local / path).write_text(text)
                (local / path).chmod(0o644)

    def _env(self) -> dict[str, str]:
        """The container's variables as a kubelet gives them: its literal ones, those of the Downward API
        (the pod's fields), and the API server's address (the ``kubernetes`` Service's variables; here
        the loopback address podsim reaches it at)."""
        server = urllib3.util.parse_url(self.sim.core.api_client.configuration.host)
        env = {"KUBERNETES_SERVICE_HOST": server.host, "KUBERNETES_SERVICE_PORT": str(server.port or 443)}
        env |= self.env_from  # before its own variables, which win
        for variable in self.pod.spec.containers[0].env or []:
            if variable.value_from is None:
                env[variable.name] = variable.value or ""
            elif variable.value_from.field_ref is not None:
                env[variable.name] = self._field(variable.value_from.field_ref.field_path)
            else:
                raise podman.Unsupported(f"env {variable.name}: only values and the pod's fields")
        return env

    def _env_from(self) -> dict[str, str]:
        """The variables of the container's ``envFrom`` sources, read once as the pod starts (MissingSource:
        one that is not there and not optional)."""
        env: dict[str, str] = {}
        for source in self.pod.spec.containers[0].env_from or []:
            try:
                values = self._env_source(source)
            except ApiException as error:
                if error.status != 404:
                    raise
                kind, name = (
                    ("secret", source.secret_ref.name)
                    if source.secret_ref
                    else ("configmap", source.config_map_ref.name)
                )
                raise MissingSource(f'{kind} "{name}" not found') from None
            env |= {(source.prefix or "") + key: value for key, value in values.items()}
        return env

    def _env_source(self, source: client.V1EnvFromSource) -> dict[str, str]:
        """The variables of an ``envFrom`` source, a Secret's or a ConfigMap's keys (ApiException 404: it
        is not there); none of a missing optional one."""
        namespace = self.pod.metadata.namespace
        reference = source.secret_ref or source.config_map_ref
        try:
            if source.secret_ref is not None:
                data = (
                    persistently(self.sim.core.read_namespaced_secret, reference.name, namespace).data or {}
                )
                return {key: base64.b64decode(value).decode() for key, value in data.items()}
            return (
                persistently(self.sim.core.read_namespaced_config_map, reference.name, namespace).data or {}
            )
        except ApiException as error:
            if error.status == 404 and reference.optional:
                return {}
            raise

    def _field(self, path: str) -> str:
        meta = self.pod.metadata
        fields = {
            "metadata.name": meta.name,
            "metadata.namespace": meta.namespace,
            "metadata.uid": meta.uid,
            "spec.serviceAccountName": self.pod.spec.service_account_name or "default",
            "spec.nodeName": NODE,
        }
        if path in fields:
            return fields[path] or ""
        for kind, values in (("labels", meta.labels), ("annotations", meta.annotations)):
            prefix = f"metadata.{kind}['"
            if path.startswith(prefix) and path.endswith("']"):
                return (values or {}).get(path[len(prefix) : -2], "")
        raise podman.Unsupported(f"the pod's field {path}")

    def stop(self, grace: float) -> None:
        """Stop the deleted pod as a kubelet does: SIGTERM, then (after ``grace`` seconds) SIGKILL; and
        report how it ended, a terminal phase, which a Job's controller waits for before it lets the pod
        go (with ``podReplacementPolicy: Failed``)."""
        with self.started:
            self.stopping.set()
            if self.annotations.get(PREFIX + "run") != "container":
                self._signal(signal.SIGTERM)
        if self.annotations.get(PREFIX + "run") == "container":
            podman.podman("kill", "--signal=TERM", self.container, check=False)
        self.join(grace)
        if self.is_alive():
            self._kill()
            self.join(KILLED_REPORT_SECONDS)

    def cancel(self) -> None:
        """Stop the pod at once, reporting nothing: the pod is gone, or podsim stops."""
        with self.started:
            self.cancelled.set()
            self.stopping.set()
        self._kill()

    def _kill(self) -> None:
        self._signal(signal.SIGKILL)
        if self.annotations.get(PREFIX + "run") == "container":
            podman.podman("rm", "--force", "--time=0", self.container, check=False)

    def _signal(self, number: int) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, number)


class PodSim:
    def __init__(self, api: client.ApiClient):
        self.core = client.CoreV1Api(api)
        self.runs: dict[str, PodRun] = {}
        self.terminating: set[str] = set()  # pods being stopped after their deletion

    def register_node(self) -> None:
        capacity = {"cpu": "32", "memory": "64Gi", "pods": "500"}
        node = {
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE, "type": "podsim"}},
            "status": {"capacity": capacity, "allocatable": capacity},
        }
        try:
            persistently(self.core.create_node, node)
        except ApiException as error:
            if error.status != 409:
                raise
        status = {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "PodSimReady",
                        "message": "simulated kubelet",
                        "lastHeartbeatTime": now(),
                        "lastTransitionTime": now(),
                    }
                ]
            }
        }
        persistently(self.core.patch_node_status, NODE, status)

    def set_status(self, pod: client.V1Pod, phase: str, state: dict, started: str) -> None:
        container = pod.spec.containers[0].name
        ready = "True" if phase == "Running" else "False"
        status = {
            "status": {
                "phase": phase,
                "startTime": started,
                "hostIP": "127.0.0.1",
                "podIP": "127.0.0.1",
                "conditions": [
                    {"type": t, "status": s, "lastTransitionTime": now()}
                    for t, s in (
                        ("PodScheduled", "True"),
                        ("Initialized", "True"),
                        ("ContainersReady", ready),
                        ("Ready", ready),
                    )
                ],
                "containerStatuses": [
                    {
                        "name": container,
                        "image": pod.spec.containers[0].image,
                        "imageID": "",
                        "ready": ready == "True",
                        "restartCount": 0,
                        "started": phase == "Running",
                        "state": state,
                    }
                ],
            }
        }
        self._patch_status(pod, status)

    def _patch_status(self, pod: client.V1Pod, body: dict) -> None:
        """Patch the pod's status; a pod gone meanwhile has none to patch."""
        try:
            persistently(
                self.core.patch_namespaced_pod_status, pod.metadata.name, pod.metadata.namespace, body
            )
        except ApiException as error:
            if error.status != 404:
                raise

    def handle(self, pod: client.V1Pod) -> None:
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        if pod.metadata.deletion_timestamp is not None:
            self._finalise_deletion(key, pod)
        elif not pod.spec.node_name:
            self._bind(pod)
        elif pod.spec.node_name == NODE and key not in self.runs:
            phase = pod.status.phase or "Pending"
            if phase == "Pending":
                run = PodRun(self, pod)
                self.runs[key] = run
                run.start()
            elif phase == "Running":
                self._lost(pod)

    def _lost(self, pod: client.V1Pod) -> None:
        """A pod this node ran that no run of this process holds: it was running when an earlier podsim
        died (its process died with it; a container is removed now). A kubelet that finds a container
        gone reports it the same way, and the Job controller may then start another pod."""
        log.info(
            "pod %s/%s was running before podsim restarted: lost", pod.metadata.namespace, pod.metadata.name
        )
        if (pod.metadata.annotations or {}).get(PREFIX + "run") == "container":
            podman.podman("rm", "--force", "--time=0", container_name(pod), check=False)
        started = format_time(pod.status.start_time) if pod.status.start_time else now()
        terminated = {
            "exitCode": 137,
            "reason": "ContainerStatusUnknown",
            "message": "The container could not be located when the pod was terminated",
            "startedAt": started,
            "finishedAt": now(),
        }
        self.set_status(pod, "Failed", {"terminated": terminated}, started)

    def forget(self, pod: client.V1Pod) -> None:
        run = self.runs.pop(f"{pod.metadata.namespace}/{pod.metadata.name}", None)
        if run is not None:
            run.cancel()

    def _bind(self, pod: client.V1Pod) -> None:
        unschedulable = (pod.metadata.annotations or {}).get(PREFIX + "unschedulable")
        if unschedulable is not None:
            self._set_scheduled(pod, "False", "Unschedulable", unschedulable)
            return
        body = client.V1Binding(
            metadata=client.V1ObjectMeta(name=pod.metadata.name),
            target=client.V1ObjectReference(kind="Node", name=NODE),
        )
        try:
            # The generated client cannot decode the Binding it gets back: skip decoding.
            persistently(
                self.core.create_namespaced_pod_binding,
                pod.metadata.name,
                pod.metadata.namespace,
                body,
                _preload_content=False,
            )
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    def _set_scheduled(self, pod: client.V1Pod, status: str, reason: str, message: str) -> None:
        """The scheduler's condition on a pod it does not bind (written once: its change is an event too)."""
        for condition in pod.status.conditions or []:
            if (condition.type, condition.status, condition.reason) == ("PodScheduled", status, reason):
                return
        scheduled = {"type": "PodScheduled", "status": status, "reason": reason, "message": message}
        body = {"status": {"conditions": [{**scheduled, "lastTransitionTime": now()}]}}
        self._patch_status(pod, body)

    def _fail_unscheduled(self, pod: client.V1Pod) -> None:
        """As the pod garbage collector marks a deleted pod that no node ran: ``Failed``."""
        body = {"status": {"phase": "Failed"}}
        self._patch_status(pod, body)

    def _finalise_deletion(self, key: str, pod: client.V1Pod) -> None:
        """A deleted pod's processes get its grace period to stop (in a thread of their own); the pod is
        removed once they are gone, as a kubelet does."""
        if key in self.terminating:
            return
        run = self.runs.pop(key, None)
        if run is not None and run.is_alive():
            self.terminating.add(key)
            grace = pod.metadata.deletion_grace_period_seconds or 0
            threading.Thread(target=self._terminate, args=(key, run, pod, grace), daemon=True).start()
            return
        if run is not None:
            run.cancel()
        elif pod.status.phase in ("Succeeded", "Failed"):
            pass
        elif pod.spec.node_name == NODE:
            self._lost(pod)  # it ran under an earlier podsim: its end is reported before it goes
        elif not pod.spec.node_name:
            self._fail_unscheduled(pod)
        self._remove(pod)

    def _terminate(self, key: str, run: PodRun, pod: client.V1Pod, grace: float) -> None:
        try:
            run.stop(grace)
            self._remove(pod)
        finally:
            self.terminating.discard(key)

    def _remove(self, pod: client.V1Pod) -> None:
        """Remove the pod once it has stopped, as a kubelet does after a graceful deletion. One deleted with
        no grace period (as every pod that has ended is) the API server removes itself, at once or once
        its finalizers are gone: a DELETE would only find it gone."""
        if pod.spec.node_name == NODE and pod.metadata.deletion_grace_period_seconds != 0:
            try:
                persistently(
                    self.core.delete_namespaced_pod,
                    pod.metadata.name,
                    pod.metadata.namespace,
                    grace_period_seconds=0,
                )
            except ApiException as error:
                if error.status != 404:
                    raise

    def serve(self) -> None:
        self.register_node()
        while True:
            pods = persistently(self.core.list_pod_for_all_namespaces)
            listed = {f"{pod.metadata.namespace}/{pod.metadata.name}" for pod in pods.items}
            for key in self.runs.keys() - listed:  # deleted while the API server was away
                self.runs.pop(key).cancel()
            for pod in pods.items:
                self.handle(pod)
            stream = watch.Watch().stream(
                self.core.list_pod_for_all_namespaces,
                resource_version=pods.metadata.resource_version,
                timeout_seconds=300,
            )
            try:
                for event in stream:
                    pod = event["object"]
                    if event["type"] == "DELETED":
                        self.forget(pod)
                    else:
                        self.handle(pod)
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:
                if getattr(error, "status", None) == 410:
                    log.info("watch expired; listing again")
                elif server_away(error):
                    log.info(
                        "the watch ended: the API server is away (%s); listing again", type(error).__name__
                    )
                else:
                    raise


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devcluster.podsim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", required=True, help="kubeconfig of the local control plane")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        api = api_client(args.kubeconfig)
    except (ConfigException, NotLoopbackError, OSError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: cannot log in to the API server: {error}\n")
    sim = PodSim(api)

    def stop(*_):
        for run in list(sim.runs.values()):
            run.cancel()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    sim.serve()


if __name__ == "__main__":
    main()
