"""Starting and stopping the control plane leaves no process behind, however it is stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from devcluster.controlplane import REPO
from devcluster.processes import wait_until
from devcluster.supervisor import read_env


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _all_gone(pids: list[int]) -> bool:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except FileNotFoundError:
            continue
        if state != "Z":
            alive.append(pid)
    return not alive


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
    components = _children(supervisor)
    assert len(components) == 4  # etcd, kube-apiserver, kube-controller-manager, podsim

    down = subprocess.run(
        [sys.executable, "-m", "devcluster", "down"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert down.returncode == 0, down.stderr
    wait_until(lambda: _all_gone([supervisor, *components]), 30, "every process to exit")
    assert not (tmp_path / "cluster.env").exists()


def test_components_die_with_a_killed_parent(tmp_path):
    program = textwrap.dedent(f"""
        import json, signal
        from devcluster.controlplane import ControlPlane
        cluster = ControlPlane({str(tmp_path)!r}).start()
        print(json.dumps([p.popen.pid for p in cluster.processes]), flush=True)
        signal.pause()  # until the test kills this parent
    """)
    parent = subprocess.Popen([sys.executable, "-c", program], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(parent.stdout.readline())
        assert len(pids) == 4 and not _all_gone(pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        wait_until(lambda: _all_gone(pids), 30, "the components to die with their parent")
    finally:
        parent.kill()
