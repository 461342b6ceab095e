"""Starting and stopping the control plane leaves no process behind, however it is stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

from devcluster.controlplane import REPO
from devcluster.processes import children, wait_until
from devcluster.supervisor import RECORD, read_env
from tests.pids import all_gone


def test_detached_cluster_is_ready_then_down_stops_everything(tmp_path):
    env = {**os.environ, "MDOPS_STATE_DIR": str(tmp_path)}
    up = subprocess.run(
        [sys.executable, "-m", "devcluster", "up", "--cluster-only", "--detach"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    settings = read_env(tmp_path / "cluster.env")
    kubectl = [settings["MDOPS_KUBECTL"], f"--kubeconfig={settings['MDOPS_KUBECONFIG']}"]
    nodes = subprocess.run(
        [*kubectl, "get", "nodes", "-o", "name"], capture_output=True, text=True, check=True
    )
    assert nodes.stdout.strip() == "node/podsim"

    again = subprocess.run(
        [sys.executable, "-m", "devcluster", "up", "--cluster-only", "--detach"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0 and "already running" in again.stdout

    supervisor = int((tmp_path / "cluster.pid").read_text())
    assert len(children(supervisor)) == 4  # etcd, kube-apiserver, kube-controller-manager, podsim

    # A killed component is restarted, and its restart recorded, shown by `devcluster status`.
    record = tmp_path / "cluster" / RECORD
    killed = json.loads(record.read_text())["components"]["podsim"]["pid"]
    os.kill(killed, signal.SIGKILL)

    def restarted():
        entry = json.loads(record.read_text())["components"]["podsim"]
        return entry["restarts"] == 1 and entry["state"] == "running" and entry

    podsim = wait_until(restarted, 30, "podsim to be restarted")
    assert podsim["last_exit"]["exit"] == "-9 (SIGKILL)" and podsim["pid"] in children(supervisor)
    status = subprocess.run(
        [sys.executable, "-m", "devcluster", "status"], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert f"the cluster is running (pid {supervisor})" in status.stdout, status.stdout
    row = next(line for line in status.stdout.splitlines() if line.startswith("podsim "))
    assert row.split()[:4] == ["podsim", str(podsim["pid"]), "running", "1"]
    components = children(supervisor)
    assert len(components) == 4

    down = subprocess.run(
        [sys.executable, "-m", "devcluster", "down"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert down.returncode == 0, down.stderr
    wait_until(lambda: all_gone([supervisor, *components, killed]), 30, "every process to exit")
    assert not (tmp_path / "cluster.env").exists()
    states = {entry["state"] for entry in json.loads(record.read_text())["components"].values()}
    assert states == {"stopped"}


def test_components_die_with_a_killed_parent_those_its_supervisor_restarted_too(tmp_path):
    program = textwrap.dedent(f"""
        import json, signal
        from devcluster.controlplane import ControlPlane
        cluster = ControlPlane({str(tmp_path)!r}, supervise=True).start()
        print(json.dumps([p.popen.pid for p in cluster.processes]), flush=True)
        signal.pause()  # until the test kills this parent
    """)
    parent = subprocess.Popen([sys.executable, "-c", program], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(parent.stdout.readline())
        assert len(pids) == 4 and not all_gone(pids)
        # One restarted by the supervisor's thread: PR_SET_PDEATHSIG follows that thread, which lives on.
        os.kill(pids[-1], signal.SIGKILL)

        def restarted():
            entry = json.loads((tmp_path / RECORD).read_text())["components"]["podsim"]
            return entry["restarts"] == 1 and entry["state"] == "running" and entry["pid"]

        pids.append(wait_until(restarted, 30, "podsim to be restarted"))
        assert not all_gone(pids[-1:])
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        wait_until(lambda: all_gone(pids), 30, "the components to die with their parent")
    finally:
        parent.kill()
