"""``python -m devcluster {up,down}``: the local control plane alone (``make cluster``)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from devcluster.controlplane import REPO, ControlPlane, binaries
from devcluster.supervisor import AlreadyRunning, detach, down, foreground

STATE = Path(os.environ.get("MDOPS_STATE_DIR", REPO / ".mdops"))
NAME = "cluster"


def _start() -> ControlPlane:
    workdir = STATE / NAME
    shutil.rmtree(workdir, ignore_errors=True)
    print("building or finding the control plane binaries ...", flush=True)
    bin_dir = binaries()
    print("starting etcd, kube-apiserver, kube-controller-manager and podsim ...", flush=True)
    return ControlPlane(workdir, bin_dir)


def _describe(cluster: ControlPlane) -> dict[str, str]:
    return {"MDOPS_KUBECONFIG": str(cluster.kubeconfig), "MDOPS_KUBECTL": str(cluster.kubectl_path)}


def _banner(cluster: ControlPlane) -> str:
    return (
        f"control plane ready in {cluster.started_in:.1f}s at {cluster.server}\n"
        f"  logs:       {cluster.logs}\n"
        f"  try:        {cluster.kubectl_path} --kubeconfig={cluster.kubeconfig} get nodes\n"
        f"  settings:   {STATE / (NAME + '.env')}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="start the control plane (foreground; Ctrl-C stops it)")
    up.add_argument("--detach", action="store_true", help="return once it is ready")
    sub.add_parser("down", help="stop a detached control plane")
    args = parser.parse_args(argv)
    if args.action == "down":
        return down(NAME, STATE)
    if args.detach:
        return detach(NAME, STATE, [sys.executable, "-m", "devcluster", "up"], timeout=3600)
    try:
        return foreground(NAME, STATE, _start, _describe, _banner)
    except AlreadyRunning as error:
        print(error, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
