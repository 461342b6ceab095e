"""The Job executor end to end, its pods in the real image: the controller (a process here) creates the
Job, kube-controller-manager its pod, and podsim runs that pod's container with podman
(``podsim.mdops.io/run: container``) as a kubelet would, with the Job's security context, mounts and
limits; the runner's result comes back through the container's termination message.

The pods use this machine's network (``podsim.mdops.io/network: host``): the reference scripts call the
simulator, a process on loopback. The probe scripts need none, and get none.
"""

from __future__ import annotations

import json
import shutil

import pytest

from controller.executors.job import TMP_MOUNT
from devcluster.controlplane import REPO
from devcluster.podman import podman
from devcluster.podsim import LABEL
from devcluster.processes import wait_until
from sim.process import run_sim
from tests.image.conftest import UID, WRITABLE_PROBE
from tests.runbook_client import Runbooks, forged_success, write_script

EXAMPLE_SCRIPTS = REPO / "examples" / "scripts"
# What the probe script writes to its log (a witness of the container it ran in): its uid, where it
# can create files (WRITABLE_PROBE) and its cgroup's memory limit (cgroup v2, else v1).
PROBE = f"""
echo "uid $(id -u)"
python3 - <<'PY'
{WRITABLE_PROBE}
PY
for limit in /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes; do
    if [ -r "$limit" ]; then echo "memory $(cat "$limit")"; break; fi
done
"""


@pytest.fixture
def rbs(api_client, namespace):
    return Runbooks(api_client, namespace)


@pytest.fixture
def sim():
    with run_sim(args=["--failover-ms", "300", "--failover-jitter", "0"]) as process:
        yield process


def in_containers(image: str, scripts_configmap: str, network: str, **script_env: str) -> dict[str, str]:
    """Settings of a controller whose Job pods podsim runs in ``image`` with podman."""
    annotations = {"podsim.mdops.io/run": "container", "podsim.mdops.io/network": network}
    return {
        # Without a network no API server is reached, and the runner cannot claim its run's start (a pod of
        # a cluster always has one): the claim, in a container, with the host's.
        **({} if network == "host" else {"MDOPS_JOB_START_CLAIM": "false"}),
        "MDOPS_EXECUTOR": "job",
        "MDOPS_RUNNER_IMAGE": image,
        "MDOPS_SCRIPTS_CONFIGMAP": scripts_configmap,
        "MDOPS_JOB_POD_ANNOTATIONS": json.dumps(annotations),
        "MDOPS_SCRIPT_ENV": json.dumps(script_env),
    }


def scripts_configmap(cluster, namespace: str, folder) -> str:
    cluster.kubectl("create", "configmap", "scripts", "-n", namespace, f"--from-file={folder}")
    return "scripts"


def test_a_job_pod_runs_the_runner_with_the_image_s_own_scripts(start_controller, image, namespace, rbs, sim):
    start_controller(**in_containers(image, "", "host", MDOPS_SIM_URL=sim.url))
    rbs.create("check", command="health_check", timeoutSeconds=60)
    status = rbs.wait_finished("check", timeout=120)["status"]
    assert (status["result"], status["exitCode"]) == ("success", 0), status.get("message")
    assert status["execution"]["executor"] == "job"
    expected = sim.status()
    assert status["health"]["expected_total"] == expected["expected_total"]
    assert status["health"]["matched_total"] == expected["matched_total"]
    assert status["state"]["activeProfile"] == expected["active_source"]


def test_a_configmap_of_scripts_is_mounted_over_the_image_s_own(
    start_controller, cluster, image, namespace, rbs, sim, tmp_path
):
    # The reference scripts but drill: a drill can then only be the image's, hidden by the mount.
    folder = tmp_path / "scripts"
    shutil.copytree(EXAMPLE_SCRIPTS, folder, ignore=shutil.ignore_patterns("drill", "README.md"))
    name = scripts_configmap(cluster, namespace, folder)
    start_controller(**in_containers(image, name, "host", MDOPS_SIM_URL=sim.url))
    rbs.create("fail-over", command="failover", timeoutSeconds=60)
    rbs.create("drill", command="drill", timeoutSeconds=60, dryRun=True)  # takes no lock: runs alongside
    failover = rbs.wait_finished("fail-over", timeout=120)["status"]
    assert (failover["result"], failover["exitCode"]) == ("success", 0), failover.get("message")
    assert sim.status()["active_source"] == "backup", "the ConfigMap's failover switched the simulator"
    drill = rbs.wait_finished("drill", timeout=120)["status"]
    assert drill["exitCode"] == 125 and "script not found" in drill["message"], drill["message"]


def test_a_job_pod_runs_as_uid_10001_within_its_memory_limit_writing_only_to_its_temp_dir(
    start_controller, cluster, image, namespace, rbs, tmp_path
):
    folder = write_script(tmp_path / "scripts", "health_check", PROBE).parent
    start_controller(**in_containers(image, scripts_configmap(cluster, namespace, folder), "none"))
    rbs.create("probe", command="health_check", timeoutSeconds=60)
    status = rbs.wait_finished("probe", timeout=120)["status"]
    assert status["exitCode"] == 0, status.get("message")
    said = dict(line["message"].partition(" ")[::2] for line in status["logs"] if line["level"] == "INFO")
    assert said["uid"] == str(UID)
    assert said["/"] == "EROFS", "the root filesystem is read-only"
    assert said["/etc/mdops/scripts"] == "EROFS", "the ConfigMap is mounted read-only"
    assert {place for place, outcome in said.items() if outcome == "ok"} == {TMP_MOUNT}
    assert said["memory"] == str(256 * 2**20), "the Job's memory limit is the container's"


def test_a_script_over_the_job_s_memory_limit_fails_saying_it_was_oomkilled(
    start_controller, cluster, image, namespace, rbs, tmp_path
):
    """The OOM killer kills the script (the largest process), not the runner: the shell running it exits
    137, which says nothing of memory; the container's memory cgroup counted the kill."""
    grow = "python3 -c 'chunks = [bytearray(16 * 2**20) for _ in range(64)]'\n"
    folder = write_script(tmp_path / "scripts", "health_check", grow).parent
    start_controller(**in_containers(image, scripts_configmap(cluster, namespace, folder), "none"))
    rbs.create("grows", command="health_check", timeoutSeconds=60)
    status = rbs.wait_finished("grows", timeout=120)["status"]
    assert (status["result"], status["exitCode"]) == ("failed", 1), status.get("message")
    assert "OOMKilled" in status["message"], status["message"]
    # conmon's file of the kill stays in the pod's own folder, not where podsim runs (this checkout).
    assert not (REPO / "oom").exists()


def test_a_container_killed_mid_run_fails_the_run_whatever_its_script_wrote_to_the_termination_log(
    start_controller, cluster, image, namespace, rbs, tmp_path
):
    """As a node kills a container (a drain, the OOM killer of a whole container): no result of the runner,
    so the run failed, once; never the success that the script itself wrote where the runner's goes."""
    script = f"echo '{forged_success()}' > /dev/termination-log\necho started\nsleep 120\n"
    folder = write_script(tmp_path / "scripts", "failover", script).parent
    start_controller(**in_containers(image, scripts_configmap(cluster, namespace, folder), "none"))
    rbs.create("killed", command="failover", timeoutSeconds=300)
    [container] = wait_until(lambda: pod_containers(namespace), 120, "the Job pod's container")
    wait_until(lambda: "started" in podman("logs", container, check=False).stdout, 60, "the script")
    podman("kill", "--signal=KILL", container)
    status = rbs.wait_finished("killed", timeout=120)["status"]
    assert (status["result"], status["exitCode"]) == ("failed", 125), status["message"]
    assert "the runner died (exit 137: killed by SIGKILL)" in status["message"], status["message"]
    assert status["attempts"] == 1


def pod_containers(namespace: str) -> list[str]:
    """The names of the containers podsim runs for the pods of ``namespace``."""
    listed = podman("ps", "--all", f"--filter=label={LABEL}", "--format={{.Names}} {{json .Labels}}").stdout
    named = [line.split(" ", 1) for line in listed.splitlines()]
    return [name for name, labels in named if json.loads(labels)[LABEL].startswith(f"{namespace}/")]


def test_deleting_a_running_runbook_removes_its_container(
    start_controller, cluster, image, namespace, rbs, tmp_path
):
    folder = write_script(tmp_path / "scripts", "failover", "sleep 120\n").parent
    start_controller(**in_containers(image, scripts_configmap(cluster, namespace, folder), "none"))

    def containers() -> list[str]:
        listed = podman("ps", "--all", f"--filter=label={LABEL}", "--format={{json .Labels}}").stdout
        pods = [json.loads(labels)[LABEL] for labels in listed.splitlines()]
        return [pod for pod in pods if pod.startswith(f"{namespace}/")]

    rbs.create("held", command="failover", timeoutSeconds=300)
    rbs.wait_for("held", "Running", "True", timeout=120)
    wait_until(containers, 60, "the Job pod's container")
    rbs.delete("held")
    wait_until(lambda: not containers(), 60, "the container to be removed")


def test_a_job_pod_whose_image_is_missing_fails_soon_saying_so(start_controller, namespace, rbs):
    """As on a node that cannot pull the image: the pod waits (ImagePullBackOff), the run fails after
    MDOPS_JOB_START_FAILURE_SECONDS, not at its timeout."""
    start_controller(
        **in_containers("localhost/mdops:no-such-tag", "", "none"), MDOPS_JOB_START_FAILURE_SECONDS="3"
    )
    rbs.create("no-image", command="health_check", timeoutSeconds=600)
    status = rbs.wait_finished("no-image", timeout=120)["status"]
    assert (status["result"], status.get("exitCode")) == ("failed", 125), status
    expected = (
        'did not start within 3 s (ImagePullBackOff: Back-off pulling image "localhost/mdops:no-such-tag")'
    )
    assert expected in status["message"], status["message"]
