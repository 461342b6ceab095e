"""podman, as podsim's container mode and the image tests run it.

Every command gets ``$CONTAINERS_CONF`` = ``tools/containers.conf`` (runc, ulimits that fit this
machine's limits) unless the caller's environment names another. :func:`container_options` says how
a container of a pod runs under podman, the way a kubelet would run it: a pure function of the pod
manifest (as the API server serves it) and the host folders of its volumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from kubernetes.utils import parse_quantity

REPO = Path(__file__).resolve().parent.parent
CONTAINERS_CONF = REPO / "tools" / "containers.conf"
BUILD_IMAGE = REPO / "tools" / "build-image.sh"
# podman's container networks: none (the default here), or the host's, which is how a container
# reaches the loopback services of this machine (the control plane, the simulator).
NETWORKS = ("none", "host")


class Unsupported(ValueError):
    """A part of a pod spec that podman cannot run as a kubelet would."""


def environment() -> dict[str, str]:
    return {"CONTAINERS_CONF": str(CONTAINERS_CONF), **os.environ}


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``podman args...``; its output is captured (text)."""
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, env=environment()
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def image_exists(image: str) -> bool:
    return podman("image", "exists", image, check=False).returncode == 0


def build_image() -> str:
    """Build the image (``make image``'s script: cached, seconds when nothing changed); its id. It is
    tagged for this checkout alone (podman's storage is the machine's), so that a build from another
    checkout neither moves the tag nor removes the image a test session uses."""
    checkout = hashlib.sha256(str(REPO).encode()).hexdigest()[:12]
    env = {**environment(), "MDOPS_IMAGE": f"localhost/mdops:checkout-{checkout}"}
    result = subprocess.run([str(BUILD_IMAGE)], capture_output=True, text=True, timeout=1800, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{BUILD_IMAGE} exited {result.returncode}:\n{result.stderr[-4000:]}")
    tag = result.stdout.strip().splitlines()[-1]
    return podman("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()


def _security(pod_spec: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """The container's security context over the pod's, as the kubelet merges them."""
    keys = ("runAsUser", "runAsGroup")
    pod = {k: v for k, v in (pod_spec.get("securityContext") or {}).items() if k in keys}
    return {**pod, **(container.get("securityContext") or {})}


def container_options(
    pod_spec: dict[str, Any], container: dict[str, Any], volumes: dict[str, Path], network: str = "none"
) -> list[str]:
    """The arguments of ``podman create`` (options, image, arguments) that run ``container`` of a pod
    with ``pod_spec`` (camelCase keys, as in a manifest), its volumes mounted from ``volumes`` (name
    -> host folder, whose files the caller made). What a kubelet does and podman can: command and args
    (ENTRYPOINT and CMD), env, volume mounts of ConfigMap, emptyDir and projected volumes (read-only
    where declared, and a ConfigMap or projected one always), runAsUser/runAsGroup, fsGroup as a
    supplementary group, readOnlyRootFilesystem (and no tmpfs that podman would add, so that only the
    declared mounts are writable), allowPrivilegeEscalation, capabilities, memory and CPU limits.
    Never pulled: the image must be in podman's storage. Raises :class:`Unsupported` for what podman
    cannot run like a kubelet (env from a reference that podsim did not resolve, other volume kinds)."""
    if network not in NETWORKS:
        raise Unsupported(f"network {network!r}: one of {', '.join(NETWORKS)}")
    options = ["--pull=never", f"--network={network}"]
    security = _security(pod_spec, container)
    if "runAsUser" in security:
        group = security.get("runAsGroup")
        options.append(f"--user={security['runAsUser']}" + (f":{group}" if group is not None else ""))
    elif "runAsGroup" in security:
        raise Unsupported("runAsGroup without runAsUser")
    fs_group = (pod_spec.get("securityContext") or {}).get("fsGroup")
    if fs_group is not None:
        options.append(f"--group-add={fs_group}")
    if security.get("readOnlyRootFilesystem"):
        options += ["--read-only", "--read-only-tmpfs=false"]
    if security.get("allowPrivilegeEscalation") is False:
        options.append("--security-opt=no-new-privileges")
    capabilities = security.get("capabilities") or {}
    options += [f"--cap-drop={c}" for c in capabilities.get("drop") or []]
    options += [f"--cap-add={c}" for c in capabilities.get("add") or []]

    limits = (container.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        options.append(f"--memory={int(parse_quantity(limits['memory']))}")
    if "cpu" in limits:
        options.append(f"--cpus={parse_quantity(limits['cpu'])}")

    if container.get("envFrom"):
        raise Unsupported("envFrom")
    for variable in container.get("env") or []:
        if "valueFrom" in variable:
            raise Unsupported(f"env {variable['name']} from a reference (valueFrom)")
        options.append(f"--env={variable['name']}={variable.get('value', '')}")

    declared = {v["name"]: v for v in pod_spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        volume = declared.get(mount["name"], {})
        if not ("configMap" in volume or "emptyDir" in volume or "projected" in volume):
            raise Unsupported(f"volume {mount['name']}: only configMap, emptyDir and projected volumes")
        source = volumes[mount["name"]] / mount.get("subPath", "")
        read_only = mount.get("readOnly") or "configMap" in volume or "projected" in volume
        options.append(f"--volume={source}:{mount['mountPath']}" + (":ro" if read_only else ""))

    if container.get("workingDir"):
        options.append(f"--workdir={container['workingDir']}")
    if container.get("command"):
        options.append(f"--entrypoint={json.dumps(container['command'])}")
    return [*options, container["image"], *(container.get("args") or [])]
