"""The README's walkthrough on a fresh local stack, command by command in its order, then `make demo` on
the same stack. The walkthrough leaves the feed on the backup source; the demo sets its own starting state,
so each of its steps still has its expected outcome."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import httpx

from devcluster.controlplane import REPO
from devcluster.supervisor import write_env

# The walkthrough's `k ...` lines (k: the project's kubectl with the stack's kubeconfig and namespace).
KUBECTL = [
    "apply -f examples/runbooks/drill.yaml",
    "wait --for=condition=Succeeded rb/drill-2026-11-26",
    "get rb",
    "describe rb drill-2026-11-26",
]
# Its `mdops ...` lines: the installed command line (the venv's), over the REST API.
MDOPS = Path(sys.executable).parent / "mdops"
MDOPS_LINES = [
    "status",
    "run health_check --follow",
    "runs",
    "metrics",
    "chart md_throughput_mps --minutes 15",
]
FAILOVER = '{"command": "failover", "reason": "manual"}'
DEMO_STEPS = ("ready", "on-primary", "check", "drill", "failover", "failback", "gate", "plan")


def walkthrough() -> str:
    """The README's walkthrough: its first shell block after the heading."""
    text = (REPO / "README.md").read_text()
    block = text.index("```sh\n", text.index("## Walkthrough")) + len("```sh\n")
    return text[block : text.index("```\n", block)]


def test_the_readme_walkthrough_then_the_demo(stack, tmp_path):
    readme = walkthrough()
    env = stack.settings()
    k = [env["MDOPS_KUBECTL"], f"--kubeconfig={env['MDOPS_KUBECONFIG']}", "-n", env["MDOPS_NAMESPACE"]]

    def run_k(line: str) -> str:
        assert f"\nk {line}" in readme, f"the README's walkthrough no longer runs `k {line}`"
        done = subprocess.run([*k, *shlex.split(line)], cwd=REPO, capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def sim_source() -> str:
        return httpx.get(f"{stack.sim_url}/admin/status").json()["active_source"]

    # An operator with kubectl: the drill, waited for.
    run_k(KUBECTL[0])
    run_k(KUBECTL[1])
    assert "drill-2026-11-26" in run_k(KUBECTL[2])
    assert "Succeeded" in run_k(KUBECTL[3])
    assert sim_source() == "primary"

    # The command line, with what `. .mdops/stack.env` exports.
    shell = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "MDOPS_API_URL": env["MDOPS_API_URL"],
             "MDOPS_API_TOKEN": env["MDOPS_API_TOKEN"]}  # fmt: skip
    for line in MDOPS_LINES:
        assert f"\nmdops {line} " in readme, f"the README's walkthrough no longer runs `mdops {line}`"
        done = subprocess.run(
            [MDOPS, *shlex.split(line)], env=shell, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        if line.startswith("run "):
            assert done.stdout.splitlines()[-1].endswith(": success (exit code 0)")
    assert sim_source() == "primary"

    # The Ops Console's way: the same requests as the README's curl lines.
    auth = {"Authorization": f"Bearer {env['MDOPS_API_TOKEN']}"}
    for path in ("/api/ops/runbooks/execute", "/api/ops/status", "/api/ops/metrics/summary"):
        assert f'"$MDOPS_API_URL{path}"' in readme, path
    assert f"-d '{FAILOVER}'" in readme
    failover = httpx.post(
        f"{env['MDOPS_API_URL']}/api/ops/runbooks/execute",
        headers={**auth, "Content-Type": "application/json"},
        content=FAILOVER,
        timeout=60,
    )
    assert failover.status_code == 200, failover.text
    assert failover.json()["runbook"]["status"] == "success"
    assert sim_source() == "backup"  # where the walkthrough leaves the feed
    status = httpx.get(f"{env['MDOPS_API_URL']}/api/ops/status", headers=auth, timeout=60)
    assert status.status_code == 200 and status.json()["active_profile"] == "backup"
    assert (
        httpx.get(f"{env['MDOPS_API_URL']}/api/ops/metrics/summary", headers=auth, timeout=60).status_code
        == 200
    )

    # make demo, against this stack's settings file.
    assert "\nmake demo " in readme
    env_file = tmp_path / "stack.env"
    write_env(env_file, env)
    demo = subprocess.run(
        [sys.executable, "-m", "devcluster.demo", str(env_file)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = demo.stdout + demo.stderr
    assert demo.returncode == 0, output
    assert "Known state first: the feed running on primary, no faults (found: running on backup" in output
    rows = {
        line.split()[0]: line
        for line in output.splitlines()
        if line.split()[:1] and line.split()[0] in DEMO_STEPS
    }
    assert set(rows) == set(DEMO_STEPS), output
    assert all(line.rstrip().endswith(" yes") for line in rows.values()), output
    assert f"every step ({len(DEMO_STEPS)}) had its expected outcome" in output
    assert sim_source() == "primary"
    runbooks = json.loads(
        subprocess.run([*k, "get", "rb", "-o", "json"], capture_output=True, text=True).stdout
    )
    demo_runs = [rb for rb in runbooks["items"] if rb["spec"].get("reason", "").startswith("demo:")]
    assert len(demo_runs) == len(DEMO_STEPS)
