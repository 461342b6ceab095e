"""Fixtures of the image tests: the image, built once per session by ``make image``'s script (podman's
layer cache makes that seconds when nothing changed), and containers started from it the way the
manifests run them (:func:`devcluster.podman.container_options`), removed after their tests.

Every test in this folder is marked ``image`` by tests/conftest.py (``-m image`` selects them,
``-m "not image"`` skips them).
Their containers run as root's podman with ``tools/containers.conf``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster import podman
from devcluster.controlplane import REPO
from devcluster.processes import answers_200

UID = 10001  # the image's user (its Dockerfile's USER), the manifests' runAsUser
KUBECONFIG_DIR = "/etc/mdops/kube"  # where a test mounts the control plane's kubeconfig, read-only


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
    given, and ``MDOPS_IN_CLUSTER`` is dropped: the test's kubeconfig stands in for the pod's
    ServiceAccount."""
    env = {e["name"]: e.get("value") for e in container.get("env") or [] if e["name"] != "MDOPS_IN_CLUSTER"}
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

    def logs(self) -> str:
        result = podman.podman("logs", self.name, check=False)
        return (result.stdout + result.stderr)[-3000:]

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


def kubeconfig_volume(kubeconfig: Path, workdir: Path) -> Path:
    """A folder holding a copy of ``kubeconfig`` that only the image's user can read, to mount
    read-only at :data:`KUBECONFIG_DIR` (in a cluster, the ServiceAccount's token is mounted instead)."""
    folder = workdir / "kubeconfig"
    folder.mkdir()
    shutil.copy(kubeconfig, folder / "kubeconfig")
    os.chown(folder / "kubeconfig", UID, UID)
    (folder / "kubeconfig").chmod(0o600)
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
