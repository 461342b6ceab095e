"""``python -m devcluster {up,down,status}``: the local stack (make up) or the control plane (make cluster),
and what their supervisor recorded of each component (make status)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from devcluster.controlplane import REPO, ControlPlane, binaries
from devcluster.prometheus import binary as prometheus_binary
from devcluster.stack import Stack
from devcluster.supervisor import (
    RECORD,
    AlreadyRunning,
    detach,
    down,
    foreground,
    running_pid,
    status_table,
)

STATE = Path(os.environ.get("MDOPS_STATE_DIR", REPO / ".mdops"))
NAMES = ("stack", "cluster")


def _fresh(name: str) -> Path:
    workdir = STATE / name
    shutil.rmtree(workdir, ignore_errors=True)
    return workdir


def _cluster() -> ControlPlane:
    print("[mdops] building or finding the control plane binaries ...", flush=True)
    bin_dir = binaries()
    print("[mdops] starting etcd, kube-apiserver, kube-controller-manager and podsim ...", flush=True)
    return ControlPlane(_fresh("cluster"), bin_dir, supervise=True)


def _cluster_banner(cluster: ControlPlane) -> str:
    return (
        f"control plane ready in {cluster.started_in:.1f}s at {cluster.server}\n"
        f"  logs:     {cluster.logs}\n"
        f"  try:      {cluster.kubectl_path} --kubeconfig={cluster.kubeconfig} get nodes\n"
        f"  settings: {STATE / 'cluster.env'}\n"
        f"  a component that exits is restarted; `make status` shows each one's restarts"
    )


def _cluster_env(cluster: ControlPlane) -> dict[str, str]:
    return {"MDOPS_KUBECONFIG": str(cluster.kubeconfig), "MDOPS_KUBECTL": str(cluster.kubectl_path)}


def _stack() -> Stack:
    print("[mdops] building or finding the control plane binaries ...", flush=True)
    bin_dir = binaries()
    print("[mdops] installing or finding Prometheus ...", flush=True)
    prometheus_binary()
    return Stack(_fresh("stack"), bin_dir)


def _stack_banner(stack: Stack) -> str:
    env = STATE / "stack.env"
    kubectl = "$MDOPS_KUBECTL --kubeconfig=$MDOPS_KUBECONFIG -n $MDOPS_NAMESPACE"
    auth = '-H "Authorization: Bearer $MDOPS_API_TOKEN"'
    return f"""
mdops is up.
  Ops Console  {stack.console_url}   (sign in with a token below)
  REST API     {stack.api_url}   (OpenAPI: {stack.api_url}/openapi.json, with the token)
  token        {stack.admin_token}
  viewer token {stack.viewer_token}   (may read, not execute)
  Prometheus   {stack.prometheus.url}   (mdops's alerts: {stack.prometheus.url}/alerts)
  simulator    {stack.sim_url}/admin/status
  logs         {stack.logs}/ and {stack.cluster.logs}/
  settings     {env}
  restarts     a component that exits is restarted (a line here says so; `make status` counts them)

Try (in another shell):
  . {env}
  .venv/bin/mdops status && .venv/bin/mdops run health_check --follow      (mdops --help)
  curl -s {auth} -H 'Content-Type: application/json' -X POST $MDOPS_API_URL/api/ops/runbooks/execute \\
       -d '{{"command": "health_check"}}'
  {kubectl} apply -f examples/runbooks/drill.yaml
  {kubectl} wait --for=condition=Succeeded rb/drill-2026-11-26
  curl -s {auth} $MDOPS_API_URL/api/ops/metrics/summary

Ctrl-C (or `make down`, when started with DETACH=1) stops everything."""


def _status() -> int:
    records = [(name, STATE / name / RECORD) for name in NAMES if (STATE / name / RECORD).exists()]
    if not records:
        print("nothing has run here yet: `make up` or `make cluster` starts it")
    for name, record in records:
        pid = running_pid(STATE / f"{name}.pid")
        print(f"the {name} is running (pid {pid})" if pid else f"the {name} is not running; as it was left:")
        print(status_table(json.loads(record.read_text())))
        print(f"({record})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="start the local stack (foreground; Ctrl-C stops it)")
    up.add_argument("--cluster-only", action="store_true", help="only the control plane (make cluster)")
    up.add_argument("--detach", action="store_true", help="return once it is ready")
    sub.add_parser("down", help="stop what `up --detach` started")
    sub.add_parser("status", help="each component's pid, state, restarts and last exit")
    args = parser.parse_args(argv)
    if args.action == "status":
        try:
            code = _status()
            sys.stdout.flush()  # here, where a closed pipe is caught, not as Python exits
            return code
        except BrokenPipeError:  # `make status | head`: what read it has gone; a shell says 141 (SIGPIPE)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor an error as Python exits
            return 141
    if args.action == "down":
        running = [name for name in NAMES if running_pid(STATE / f"{name}.pid")]
        if not running:
            print("nothing is running")
        return max((down(name, STATE) for name in running), default=0)
    name = "cluster" if args.cluster_only else "stack"
    other = NAMES[1 - NAMES.index(name)]
    if running_pid(STATE / f"{other}.pid"):
        print(f"the {other} is running; `make down` stops it first", file=sys.stderr)
        return 1
    if args.detach:
        argv = [sys.executable, "-m", "devcluster", "up", *(["--cluster-only"] if args.cluster_only else [])]
        return detach(name, STATE, argv, timeout=3600)
    start, describe, banner = (
        (_cluster, _cluster_env, _cluster_banner)
        if args.cluster_only
        else (_stack, Stack.settings, _stack_banner)
    )
    try:
        return foreground(name, STATE, start, describe, banner)
    except AlreadyRunning as error:
        print(error, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
