"""A simulated kubelet (and scheduler) for the local control plane.

There is no container runtime on the machines mdops is developed on, so this
process stands in for the node: it registers one Ready node, binds every
unscheduled pod to it, and runs each pod's containers to completion, writing
the pod status a kubelet would write (phase, container state, exit code,
termination message). It finalises pod deletion the way a kubelet does, so
Jobs, ``activeDeadlineSeconds`` and garbage collection behave as in a cluster.

How a pod "runs" is chosen by its annotations:

``podsim.mdops.io/run: exec``
    The first container's ``command`` + ``args`` run as a process on this
    machine, with the container's literal ``env``. ConfigMap and emptyDir
    volumes are materialised in a temporary directory, and every mount path
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

otherwise (the default)
    ``podsim.mdops.io/exit-code`` (default 0), ``podsim.mdops.io/termination-message``
    and ``podsim.mdops.io/duration-seconds`` (default 0) decide the outcome.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from devcluster.controlplane import REPO
from devcluster.processes import die_with_parent
from runbooks.contract import now
from runbooks.kube import api_client

log = logging.getLogger("podsim")

NODE = "podsim"
PREFIX = "podsim.mdops.io/"
MESSAGE_LIMIT = 4096
# Paths in the image built by the Dockerfile -> what it copies there from the repository.
IMAGE_FILES = {"/etc/mdops/scripts": REPO / "examples" / "scripts"}


def image_files(mounts: list[client.V1VolumeMount]) -> dict[str, str]:
    """The image's paths that no volume hides, and their folders in this checkout."""
    hidden = [mount.mount_path.rstrip("/") for mount in mounts]
    return {
        path: str(local)
        for path, local in IMAGE_FILES.items()
        if not any(path == top or path.startswith(top + "/") for top in hidden)
    }


class PodRun(threading.Thread):
    """Runs one pod to completion and reports its status."""

    def __init__(self, sim: PodSim, pod: client.V1Pod):
        super().__init__(name=f"pod-{pod.metadata.namespace}/{pod.metadata.name}", daemon=True)
        self.sim = sim
        self.pod = pod
        self.cancelled = threading.Event()
        self.process: subprocess.Popen | None = None

    @property
    def annotations(self) -> dict[str, str]:
        return self.pod.metadata.annotations or {}

    def run(self) -> None:
        started = now()
        self.sim.set_status(self.pod, "Running", {"running": {"startedAt": started}}, started)
        try:
            if self.annotations.get(PREFIX + "run") == "exec":
                code, message = self._exec()
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

    def _scripted(self) -> tuple[int, str]:
        duration = float(self.annotations.get(PREFIX + "duration-seconds", "0"))
        self.cancelled.wait(duration)
        code = int(self.annotations.get(PREFIX + "exit-code", "0"))
        return code, self.annotations.get(PREFIX + "termination-message", "")

    def _exec(self) -> tuple[int, str]:
        container = self.pod.spec.containers[0]
        argv = [*(container.command or []), *(container.args or [])]
        if not argv:
            return 128, "podsim: exec needs the container's command (images are not run here)"
        root = Path(tempfile.mkdtemp(prefix="podsim-"))
        try:
            rewrites = {**image_files(container.volume_mounts or []), **self._materialise(container, root)}
            message_file = root / "termination-log"
            message_file.touch()
            rewrites[container.termination_message_path or "/dev/termination-log"] = str(message_file)

            def rewrite(value: str) -> str:
                for path in sorted(rewrites, key=len, reverse=True):
                    if value == path or value.startswith(path + "/"):
                        return rewrites[path] + value[len(path) :]
                return value

            env = {**os.environ, **{e.name: rewrite(e.value or "") for e in container.env or []}}
            output = root / "output.log"
            with output.open("wb") as out:
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
                code = self.process.wait()
            if code < 0:  # killed by a signal, as a container runtime reports it
                code = 128 - code
            message = message_file.read_text(errors="replace")
            if not message and code != 0 and container.termination_message_policy == "FallbackToLogsOnError":
                message = output.read_text(errors="replace")[-2048:]
            return code, message[:MESSAGE_LIMIT]
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _materialise(self, container: client.V1Container, root: Path) -> dict[str, str]:
        """Write ConfigMap and emptyDir volumes under ``root``; map mount paths to them."""
        volumes = {v.name: v for v in self.pod.spec.volumes or []}
        rewrites: dict[str, str] = {}
        for mount in container.volume_mounts or []:
            volume = volumes.get(mount.name)
            local = root / "volumes" / mount.name
            local.mkdir(parents=True, exist_ok=True)
            if volume is not None and volume.config_map is not None:
                config_map = self.sim.core.read_namespaced_config_map(
                    volume.config_map.name, self.pod.metadata.namespace
                )
                mode = volume.config_map.default_mode or 0o644
                for key, value in (config_map.data or {}).items():
                    (local / key).write_text(value)
                    (local / key).chmod(mode)
            rewrites[mount.mount_path.rstrip("/")] = str(local)
        return rewrites

    def cancel(self) -> None:
        self.cancelled.set()
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)


class PodSim:
    def __init__(self, api: client.ApiClient):
        self.core = client.CoreV1Api(api)
        self.runs: dict[str, PodRun] = {}

    def register_node(self) -> None:
        capacity = {"cpu": "32", "memory": "64Gi", "pods": "500"}
        node = {
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE, "type": "podsim"}},
            "status": {"capacity": capacity, "allocatable": capacity},
        }
        try:
            self.core.create_node(node)
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
        self.core.patch_node_status(NODE, status)

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
        try:
            self.core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, status)
        except ApiException as error:
            if error.status != 404:
                raise

    def handle(self, pod: client.V1Pod) -> None:
        key = f"{pod.metadata.namespace}/{pod.metadata.name}"
        if pod.metadata.deletion_timestamp is not None:
            self._finalise_deletion(key, pod)
        elif not pod.spec.node_name:
            self._bind(pod)
        elif (
            pod.spec.node_name == NODE
            and key not in self.runs
            and (pod.status.phase or "Pending") == "Pending"
        ):
            run = PodRun(self, pod)
            self.runs[key] = run
            run.start()

    def forget(self, pod: client.V1Pod) -> None:
        run = self.runs.pop(f"{pod.metadata.namespace}/{pod.metadata.name}", None)
        if run is not None:
            run.cancel()

    def _bind(self, pod: client.V1Pod) -> None:
        body = client.V1Binding(
            metadata=client.V1ObjectMeta(name=pod.metadata.name),
            target=client.V1ObjectReference(kind="Node", name=NODE),
        )
        try:
            # The generated client cannot decode the Binding it gets back: skip decoding.
            self.core.create_namespaced_pod_binding(
                pod.metadata.name, pod.metadata.namespace, body, _preload_content=False
            )
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    def _finalise_deletion(self, key: str, pod: client.V1Pod) -> None:
        run = self.runs.pop(key, None)
        if run is not None:
            run.cancel()
        if pod.spec.node_name == NODE:
            try:
                self.core.delete_namespaced_pod(
                    pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0
                )
            except ApiException as error:
                if error.status != 404:
                    raise

    def serve(self) -> None:
        self.register_node()
        while True:
            pods = self.core.list_pod_for_all_namespaces()
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
            except ApiException as error:
                if error.status != 410:  # a stale resourceVersion: list again
                    raise
                log.info("watch expired; listing again")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", required=True, help="kubeconfig of the local control plane")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    api = api_client(args.kubeconfig)
    sim = PodSim(api)

    def stop(*_):
        for run in list(sim.runs.values()):
            run.cancel()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    sim.serve()


if __name__ == "__main__":
    main()
