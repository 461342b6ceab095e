"""The local stack supervises its components like a kubelet: one that dies is restarted (same ports,
environment, state folder and log), its restart counted in ``components.json``; one that keeps crashing
is restarted less and less often while the rest stays up; stopping the stack leaves no process behind.

The stack here runs a ``drill`` script of the test's (it records its start and end, and is held until the
test releases it) and a quicker backoff than ``make up``'s (0.25 s doubling to 2 s)."""

from __future__ import annotations

import datetime
import itertools
import json
import os
import re
import signal
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from devcluster.processes import answers_200, wait_until
from devcluster.stack import NAMESPACE
from devcluster.supervisor import RECORD, Backoff
from runbooks.kube import api_client as new_api_client
from tests.pids import all_gone
from tests.runbook_client import HOLD, Runbooks, lines, write_script

BACKOFF = Backoff(initial=0.25, cap=2, reset_after=10)
RECORDING = f"""
    echo "$MDOPS_REQUEST_ID start" >> "$RUNS"
    {HOLD}
    echo "$MDOPS_REQUEST_ID end" >> "$RUNS"
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("supervision")
    write_script(folder / "scripts", "drill", RECORDING)
    return folder


@pytest.fixture(scope="module")
def stack_options(files):
    env = {"RUNS": str(files / "runs.log"), "RELEASE": str(files / "go")}
    return {"scripts": files / "scripts", "script_env": env, "backoff": BACKOFF}


@pytest.fixture(scope="module")
def kube(stack):
    api = new_api_client(stack.cluster.kubeconfig)
    yield api
    api.close()


def record(stack) -> dict:
    return json.loads((stack.workdir / RECORD).read_text())["components"]


def kill(stack, name: str) -> dict:
    """SIGKILL the component ``name``; once the supervisor has started it again, its record."""
    before = record(stack)[name]
    os.kill(before["pid"], signal.SIGKILL)

    def restarted():
        entry = record(stack)[name]
        return entry["restarts"] == before["restarts"] + 1 and entry["state"] == "running" and entry

    after = wait_until(restarted, 30, f"{name} to be restarted")
    assert after["pid"] != before["pid"] and Path(f"/proc/{after['pid']}").exists()
    assert after["last_exit"]["exit"] == "-9 (SIGKILL)"
    return after


def test_a_killed_controller_comes_back_and_adopts_the_run_in_progress(stack, kube, files):
    runbooks = Runbooks(kube, NAMESPACE)
    runbooks.create("held", command="drill")
    wait_until(lambda: "held start" in lines(files / "runs.log"), 30, "the drill's script to start")

    entry = kill(stack, "controller")
    # The same metrics port and state folder (MDOPS_STATE_DIR), and the same log, after a marker line.
    wait_until(lambda: answers_200(stack.controller.metrics_url), 30, "the restarted controller")
    before, marker, _ = Path(entry["log"]).read_text().partition("restart 1 by the supervisor")
    assert marker and before.strip()  # appended to what it logged before, after a marker line

    (files / "go").touch()
    status = runbooks.wait_finished("held")["status"]
    assert (status["result"], status["attempts"]) == ("success", 1)
    assert lines(files / "runs.log") == ["held start", "held end"]  # the script ran once


def test_a_killed_api_answers_again_with_the_same_tokens(stack):
    kill(stack, "api")
    wait_until(lambda: answers_200(f"{stack.api_url}/readyz"), 60, "the restarted API to be ready")
    auth = {"Authorization": f"Bearer {stack.admin_token}"}
    assert httpx.get(f"{stack.api_url}/api/ops/status", headers=auth).status_code == 200


def test_a_killed_simulator_comes_back_without_its_state(stack):
    httpx.post(f"{stack.sim_url}/admin/faults", json={"lose_instruments": 200}).raise_for_status()
    kill(stack, "sim")
    wait_until(lambda: answers_200(f"{stack.sim_url}/healthz"), 30, "the restarted simulator")
    # Its state was in its memory only: the restarted one starts as a new one does (the README says so).
    assert httpx.get(f"{stack.sim_url}/admin/status").json()["faults"]["lose_instruments"] == 0


def test_a_killed_podsim_comes_back_and_fails_the_pod_it_was_running(stack, kube, files):
    """The pod's process died with podsim; the restarted podsim reports the pod as a kubelet reports a
    container it cannot find, and runs the next pod."""
    core = client.CoreV1Api(kube)

    def run(name: str, script: str) -> None:
        container = {"name": "main", "image": "example.invalid/pod:1", "command": ["sh", "-c", script]}
        core.create_namespaced_pod(NAMESPACE, {
            "metadata": {"name": name, "annotations": {"podsim.mdops.io/run": "exec"}},
            "spec": {"restartPolicy": "Never", "containers": [container]},
        })  # fmt: skip

    def ended(name: str):
        pod = core.read_namespaced_pod(name, NAMESPACE)
        return pod.status.phase in ("Succeeded", "Failed") and pod

    pid_file = files / "pod-pid"
    run("running-when-podsim-dies", f'echo $$ > "{pid_file}"; exec sleep 600')
    pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 30, "the pod's process"))

    kill(stack, "podsim")
    wait_until(lambda: all_gone([pid]), 30, "the pod's process to die with podsim")
    lost = wait_until(lambda: ended("running-when-podsim-dies"), 30, "the lost pod to be reported")
    terminated = lost.status.container_statuses[0].state.terminated
    assert lost.status.phase == "Failed"
    assert (terminated.exit_code, terminated.reason) == (137, "ContainerStatusUnknown")

    run("after-podsim-restarted", "exit 0")
    assert wait_until(lambda: ended("after-podsim-restarted"), 30, "the next pod").status.phase == "Succeeded"


def test_killed_etcd_and_kube_apiserver_come_back_with_their_data_on_the_same_ports(stack, files, kube):
    (files / "go").touch()  # the drills below are not held
    auth = {"Authorization": f"Bearer {stack.admin_token}"}

    def drill(request_id: str) -> dict:
        done = httpx.post(
            f"{stack.api_url}/api/ops/runbooks/execute",
            headers=auth,
            json={"command": "drill", "request_id": request_id},
            timeout=60,
        )
        assert done.status_code == 200, done.text
        return done.json()["runbook"]

    assert drill("before-the-control-plane-died")["status"] == "success"
    kill(stack, "etcd")
    kill(stack, "kube-apiserver")
    wait_until(
        lambda: stack.cluster.kubectl("get", "--raw", "/readyz", check=False).returncode == 0,
        60,
        "the restarted kube-apiserver",
    )
    # The same kubeconfig reaches it, and etcd kept what it held.
    before = Runbooks(kube, NAMESPACE).get("before-the-control-plane-died")
    assert before is not None and before["status"]["result"] == "success"
    # The controller and the API found it again: a run through the REST API.
    wait_until(lambda: answers_200(f"{stack.api_url}/readyz"), 60, "the API's watch to be back")
    assert drill("after-the-control-plane-died")["status"] == "success"


def test_etcd_killed_while_runs_wait_and_run_leaves_each_request_run_once_one_at_a_time(stack, files, kube):
    """etcd dies while a drill runs and others wait for the lock (two of them a request id again), and again
    as the rest run: the kube-apiserver fails every write meanwhile, and can answer with an error one that
    etcd committed. The scripts' own record is the witness: each request id ran once, one run at a time."""
    (files / "go").unlink(missing_ok=True)  # the first drill is held until the first kill is over
    runbooks = Runbooks(kube, NAMESPACE)
    plan = {
        "etcd-0": "etcd-a",
        "etcd-1": "etcd-b",
        "etcd-2": "etcd-a",
        "etcd-3": "etcd-c",
        "etcd-4": "etcd-b",
    }
    for name, request_id in plan.items():
        runbooks.create(name, command="drill", requestId=request_id)

    def witnessed() -> list[str]:
        return [line for line in lines(files / "runs.log") if line.startswith("etcd-")]

    wait_until(lambda: witnessed(), 60, "the first drill's script to start")
    kill(stack, "etcd")
    (files / "go").touch()
    wait_until(lambda: len(witnessed()) >= 3, 60, "the second drill's script to start")
    kill(stack, "etcd")

    reasons = {}
    for name in plan:
        status = runbooks.wait_finished(name, timeout=120)["status"]
        assert status["result"] == "success", status
        reasons[name] = next(c["reason"] for c in status["conditions"] if c["type"] == "Succeeded")
    started = [line.split()[0] for line in witnessed() if line.endswith(" start")]
    assert sorted(started) == ["etcd-a", "etcd-b", "etcd-c"], witnessed()  # each once
    assert witnessed() == [f"{rid} {mark}" for rid in started for mark in ("start", "end")]  # one at a time
    for request_id in set(plan.values()):
        named = [reasons[name] for name, rid in plan.items() if rid == request_id]
        assert sorted(named, key="Succeeded".__ne__) == ["Succeeded", *["Duplicate"] * (len(named) - 1)], (
            reasons
        )


def test_a_component_that_keeps_crashing_is_restarted_less_and_less_often(stack):
    """A broken Prometheus configuration: every restart exits at once, until it is mended."""
    config = stack.prometheus.config_path
    good = config.read_text()
    config.write_text("scrape_configs: [not a config\n")
    try:
        os.kill(record(stack)["prometheus"]["pid"], signal.SIGKILL)
        crashing = wait_until(
            lambda: (entry := record(stack)["prometheus"])["crashes_in_a_row"] >= 5 and entry,
            60,
            "Prometheus to crash five times",
        )
        # Meanwhile everything else runs, and answers.
        others = {name: entry["state"] for name, entry in record(stack).items() if name != "prometheus"}
        assert set(others.values()) == {"running"}, others
        assert answers_200(f"{stack.api_url}/readyz")
    finally:
        config.write_text(good)

    exits = crashing["exits"][-crashing["crashes_in_a_row"] :]
    waits = [e["restart_in_seconds"] for e in exits][:5]
    assert waits == [0.25, 0.5, 1, 2, 2]  # doubling up to the cap
    assert re.search(r"it keeps crashing \(\d+ times in a row", crashing["message"])
    # The witness: Prometheus's own log, an "Error loading config" at each start (the first after the first
    # wait). Each start came at least its wait after the one before: a start's own time (seconds on a loaded
    # machine) comes on top, so the gaps themselves need not grow.
    log = Path(crashing["log"]).read_text()
    starts = re.findall(r"^ts=(\S+) .*Error loading config", log, re.MULTILINE)
    times = [datetime.datetime.fromisoformat(start).timestamp() for start in starts]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(gaps) >= 3 and all(gap >= wait for gap, wait in zip(gaps, waits[1:], strict=False)), gaps

    wait_until(lambda: answers_200(f"{stack.prometheus.url}/-/ready"), 30, "Prometheus to be back")
    assert record(stack)["prometheus"]["state"] == "running"


def test_stopping_the_stack_leaves_none_of_its_processes(stack):
    """After the kills above, the restarted processes and the first ones alike."""
    pids = [component.process.popen.pid for component in stack.supervisor.components]
    assert len(pids) == 8 and not all_gone(pids)
    stack.stop()
    assert all_gone(pids)
    assert {entry["state"] for entry in record(stack).values()} == {"stopped"}
