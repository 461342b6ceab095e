"""Fixtures of the image tests: the image, built once per session by ``make image``'s script (podman's
layer cache makes that seconds when nothing changed), and containers started from it the way the
manifests run them (:func:`devcluster.podman.container_options`), removed after their tests.

Every test in this folder is marked ``image`` by tests/conftest.py (``-m image`` selects them,
``-m "not image"`` skips them).
Their containers run as root's podman with ``tools/containers.conf``.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from devcluster import podman
from devcluster.controlplane import REPO, ControlPlane
from devcluster.processes import answers_200

UID = 10001  # the image's user (its Dockerfile's USER), the manifests' runAsUser and fsGroup
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # where a pod's token volume is
# The token volume that the ServiceAccount admission plugin adds to a pod whose ServiceAccount
# automounts its token (the manifests' does), mounted read-only in each container at SERVICE_ACCOUNT_DIR.
# The local control plane runs without that plugin (and without a kubelet): :func:`in_pod` adds it, and
# :func:`service_account_volume` makes its files.
KUBE_API_ACCESS = {
    "name": "kube-api-access",
    "projected": {
        "defaultMode": 0o644,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {
                "downwardAPI": {
                    "items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]
                }
            },
        ],
    },
}


@pytest.fixture(scope="session")
def image() -> str:
    """The id of the image built from this checkout by ``make image``'s script (tools/build-image.sh),
    under this checkout's own tag."""
    return podman.build_image()


def deployment() -> dict[str, Any]:
    """The pod spec of the manifests' Deployment (the controller and its API sidecar)."""
    manifest = yaml.safe_load((REPO / "manifests" / "deployment.yaml").read_text())
    return manifest["spec"]["template"]["spec"]


def with_env(container: dict[str, Any], **values: str) -> dict[str, Any]:
    """``container`` with its environment for this machine: the manifest's literal values, then
    ``values``. Every variable the manifest takes from a reference (the namespace, a Secret) must be
    given. ``MDOPS_IN_CLUSTER=true`` stays: what a pod has stands in for the pod, its ServiceAccount's
    token volume (:func:`service_account_volume`, mounted by :func:`in_pod`) and the API server's address
    in ``KUBERNETES_SERVICE_HOST``/``_PORT`` (:func:`in_pod`: the loopback control plane's)."""
    env = {e["name"]: e.get("value") for e in container.get("env") or []}
    missing = [name for name, value in env.items() if value is None and name not in values]
    assert not missing, f"the manifest takes {missing} from a reference: give them"
    merged = {**env, **values}
    changed = copy.deepcopy(container)
    changed["env"] = [{"name": name, "value": value} for name, value in merged.items()]
    return changed


@dataclass
class Container:
    name: str
    volumes: dict[str, Path] = field(default_factory=dict)

    def state(self) -> dict[str, Any]:
        return json.loads(podman.podman("inspect", "--format", "{{json .State}}", self.name).stdout)

    def logs(self, last: int | None = 3000) -> str:
        """Its output, the ``last`` characters of it (all with None)."""
        result = podman.podman("logs", self.name, check=False)
        output = result.stdout + result.stderr
        return output if last is None else output[-last:]

    def exec(self, *argv: str) -> str:
        """Run ``argv`` in the container, as its user, and return its output."""
        return podman.podman("exec", self.name, *argv).stdout

    def answers(self, url: str) -> bool:
        """Whether ``url`` answers 200; fails at once if the container has stopped (for ``wait_until``)."""
        state = self.state()
        if not state["Running"]:
            raise AssertionError(f"{self.name} exited {state['ExitCode']}:\n{self.logs()}")
        return answers_200(url)


class Containers:
    """Long-running containers from ``image`` (``podman run --detach``), each removed by :meth:`remove`.
    Their emptyDir volumes are folders under ``workdir``, writable by any uid as a kubelet makes them."""

    def __init__(self, image: str, workdir: Path):
        self.image = image
        self.workdir = workdir
        self.started: list[Container] = []

    def run(
        self,
        name: str,
        pod_spec: dict[str, Any],
        container: dict[str, Any],
        volumes: dict[str, Path] | None = None,
        network: str = "host",
    ) -> Container:
        folders = dict(volumes or {})
        for volume in pod_spec.get("volumes") or []:
            if "emptyDir" in volume and volume["name"] not in folders:
                folders[volume["name"]] = self.workdir / f"{name}-{volume['name']}"
                folders[volume["name"]].mkdir(mode=0o777)
                folders[volume["name"]].chmod(0o777)
        started = Container(f"mdops-test-{name}-{uuid.uuid4().hex[:8]}", folders)
        options = podman.container_options(pod_spec, {**container, "image": self.image}, folders, network)
        podman.podman("run", "--detach", f"--name={started.name}", "--label=io.mdops.test", *options)
        self.started.append(started)
        return started

    def remove(self) -> None:
        for container in self.started:
            podman.podman("rm", "--force", "--time=0", container.name, check=False)


def in_pod(pod: dict[str, Any], container: dict[str, Any], cluster: ControlPlane) -> tuple[dict, dict]:
    """``pod`` and ``container`` as the API server and a kubelet complete them for a pod whose
    ServiceAccount automounts its token: the :data:`KUBE_API_ACCESS` volume, mounted read-only at
    :data:`SERVICE_ACCOUNT_DIR`, and ``KUBERNETES_SERVICE_HOST``/``_PORT``, here the address of
    ``cluster``'s API server on loopback (the containers use the host's network), never another."""
    server = urlsplit(cluster.server)
    assert server.hostname == "127.0.0.1", f"{cluster.server}: not the loopback control plane's"
    mount = {"name": KUBE_API_ACCESS["name"], "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True}
    service = {"KUBERNETES_SERVICE_HOST": server.hostname, "KUBERNETES_SERVICE_PORT": str(server.port)}
    container = {
        **container,
        "env": [*(container.get("env") or []), *({"name": k, "value": v} for k, v in service.items())],
        "volumeMounts": [*(container.get("volumeMounts") or []), mount],
    }
    return {**pod, "volumes": [*(pod.get("volumes") or []), KUBE_API_ACCESS]}, container


def service_account_volume(
    cluster: ControlPlane, namespace: str, service_account: str, workdir: Path
) -> Path:
    """A folder with the files of :data:`KUBE_API_ACCESS` as a kubelet makes them for a pod of
    ``service_account`` in ``namespace`` whose containers all run as the image's user, with it as
    fsGroup: ``token`` (from the TokenRequest API), ``ca.crt`` (the control plane's CA) and
    ``namespace``, in a timestamped folder that ``..data`` links to, each file a link through it (the
    kubelet's atomic writer). The token is the user's, 0600 and readable by the fsGroup (0640); the
    others, and the folders (set-group-ID), root's in the fsGroup, 0644."""
    folder = workdir / "kube-api-access"
    stamp = datetime.datetime.now(datetime.UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
    data = folder / stamp
    data.mkdir(parents=True)
    files = {
        "token": cluster.service_account_token(namespace, service_account),
        "ca.crt": cluster.ca.cert_path.read_text(),
        "namespace": namespace,
    }
    for name, text in files.items():
        (data / name).write_text(text)
        os.chown(data / name, UID if name == "token" else 0, UID)
        (data / name).chmod(0o640 if name == "token" else 0o644)
        (folder / name).symlink_to(Path("..data") / name)
    (folder / "..data").symlink_to(stamp)
    for place, mode in ((folder, 0o3777), (data, 0o2755)):  # the volume's own root is a tmpfs's, 1777
        os.chown(place, 0, UID)
        place.chmod(mode)
    return folder


# Run in a container as its user: for "/", every mount point that is a folder (but /proc, /sys, /dev:
# the kernel's) and a few folders where a runtime might put a tmpfs, whether a file can be created
# there ("ok") or the error's name.
WRITABLE_PROBE = r"""
import errno, os, tempfile
places = {"/", "/tmp", "/var/tmp", "/run"}
places |= {line.split()[1] for line in open("/proc/self/mounts")}
for place in sorted(places):
    if not os.path.isdir(place) or place.startswith(("/proc", "/sys", "/dev")):
        continue
    try:
        descriptor, path = tempfile.mkstemp(dir=place)
        os.close(descriptor)
        os.unlink(path)
        print(place, "ok")
    except OSError as error:
        print(place, errno.errorcode[error.errno])
"""


def writable_places(container: Container) -> dict[str, str]:
    """Where ``container``'s user can create files: the probe's answers, by folder."""
    output = container.exec("python", "-c", WRITABLE_PROBE)
    return dict(line.split(" ", 1) for line in output.splitlines())


def uid_of_pid_1(container: Container) -> set[int]:
    """The real, effective, saved and filesystem uids of the container's main process."""
    status = container.exec("cat", "/proc/1/status")
    [line] = [line for line in status.splitlines() if line.startswith("Uid:")]
    return {int(uid) for uid in line.split()[1:]}


@pytest.fixture
def containers(image, tmp_path):
    started = Containers(image, tmp_path)
    yield started
    started.remove()
