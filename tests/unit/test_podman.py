"""How a pod's container runs under podman (podsim's container mode, the image tests): a pure function
of the pod spec, checked on the pods mdops itself makes (the Job executor's, the Deployment's)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from controller.executors import RunRequest
from controller.executors.job import SCRIPTS_MOUNT, TERMINATION_LOG, TMP_MOUNT, build_job
from controller.settings import ControllerSettings
from devcluster.controlplane import REPO
from devcluster.podman import Unsupported, container_options

HOST = Path("/host")
REQUEST = RunRequest("ns", "check", "0123456789abcdef", "req-1", "health_check", "day", {})


def job_pod(**settings) -> dict:
    """A Job pod without the start claim, whose variables from the Downward API podsim resolves before
    podman sees them (the image tests run the claim in a container)."""
    job = build_job(REQUEST, ControllerSettings(in_cluster=True, job_start_claim=False, **settings))
    return job["spec"]["template"]["spec"]


def deployment_pod() -> dict:
    return yaml.safe_load((REPO / "manifests" / "deployment.yaml").read_text())["spec"]["template"]["spec"]


def options_of(pod: dict, network: str = "none") -> list[str]:
    volumes = {v["name"]: HOST / v["name"] for v in pod.get("volumes") or []}
    return container_options(pod, pod["containers"][0], volumes, network)


def test_a_job_pod_runs_as_its_image_user_on_a_read_only_root_with_its_mounts_and_memory_limit():
    pod = job_pod(scripts_configmap="mdops-scripts", runner_image="mdops:test")
    options = options_of(pod)
    container = pod["containers"][0]
    image = options.index("mdops:test")
    assert options[image + 1 :] == container["args"]
    assert "--result-file" in container["args"] and TERMINATION_LOG in container["args"]
    assert set(options[:image]) == {
        "--pull=never",
        "--network=none",
        "--read-only",
        "--read-only-tmpfs=false",  # podman's own tmpfs on /tmp, /var/tmp and /run would be writable
        "--security-opt=no-new-privileges",
        "--cap-drop=ALL",
        f"--memory={256 * 2**20}",
        f"--env=TMPDIR={TMP_MOUNT}",
        '--env=MDOPS_REQUEST={"command":"health_check","requestId":"req-1","window":"day"}',
        f"--volume={HOST / 'tmp'}:{TMP_MOUNT}",
        f"--volume={HOST / 'scripts'}:{SCRIPTS_MOUNT}:ro",
        '--entrypoint=["python", "-m", "runner"]',
    }
    assert not any(o.startswith("--user") for o in options), "the image's USER (10001) applies"


def test_a_job_pod_without_a_scripts_configmap_keeps_the_image_s_scripts():
    options = options_of(job_pod(scripts_configmap=""))
    mounts = [o for o in options if o.startswith("--volume=")]
    assert mounts == [f"--volume={HOST / 'tmp'}:{TMP_MOUNT}"]


def test_the_deployment_s_security_context_becomes_user_group_and_limits():
    pod = deployment_pod()
    controller = copy.deepcopy(pod["containers"][0])
    controller["env"] = [{"name": "MDOPS_EXECUTOR", "value": "local"}]
    controller["resources"]["limits"]["cpu"] = "500m"
    options = container_options(pod, controller, {"tmp": HOST / "tmp"}, "host")
    assert {"--user=10001:10001", "--group-add=10001", "--network=host", "--cpus=0.500"} <= set(options)
    assert f"--memory={512 * 2**20}" in options
    assert f"--volume={HOST / 'tmp'}:/tmp" in options
    # args after the image, and the image's entrypoint (tini) kept: no --entrypoint
    assert options[-4:] == ["mdops:0.1.0", "python", "-m", "controller"]
    assert not [o for o in options if o.startswith("--entrypoint")]


def test_a_projected_volume_is_mounted_read_only_as_a_kubelet_mounts_it():
    pod = {"volumes": [{"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]}
    container = {"image": "i", "volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets/sa"}]}
    options = options_of({**pod, "containers": [container]})
    assert f"--volume={HOST / 'token'}:/var/run/secrets/sa:ro" in options


def test_a_container_s_own_user_wins_over_the_pod_s():
    pod = {"securityContext": {"runAsUser": 10001, "runAsGroup": 10001}, "containers": []}
    container = {"image": "i", "securityContext": {"runAsUser": 20002}}
    assert "--user=20002:10001" in container_options(pod, container, {})


@pytest.mark.parametrize(
    ("pod", "container", "error"),
    [
        ({}, {"image": "i", "env": [{"name": "NS", "valueFrom": {"fieldRef": {}}}]}, "env NS"),
        ({}, {"image": "i", "envFrom": [{"configMapRef": {"name": "c"}}]}, "envFrom"),
        (
            {"volumes": [{"name": "s", "secret": {"secretName": "x"}}]},
            {"image": "i", "volumeMounts": [{"name": "s", "mountPath": "/s"}]},
            "only configMap, emptyDir and projected",
        ),
        ({"securityContext": {"runAsGroup": 5}}, {"image": "i"}, "runAsGroup without runAsUser"),
    ],
)
def test_what_podman_cannot_run_like_a_kubelet_is_refused_with_its_name(pod, container, error):
    with pytest.raises(Unsupported, match=error):
        container_options(pod, container, {})


def test_only_no_network_or_the_host_s():
    with pytest.raises(Unsupported, match="network 'bridge'"):
        container_options({}, {"image": "i"}, {}, "bridge")
