"""mdops's own processes (the controller, the API), started for tests, benchmarks and the local stack, and
the ServiceAccount they run as in a cluster."""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

import yaml

from devcluster.controlplane import REPO, ControlPlane
from devcluster.processes import Process, free_port

RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding")
SESSIONS = "sessions.json"  # the venue's session table, kept between starts (MDOPS_CALENDAR_CACHE)


def install_rbac(cluster: ControlPlane, namespace: str, workdir: Path) -> str:
    """mdops's ServiceAccount, Role and RoleBinding as ``manifests/`` installs them (its kustomization,
    moved to ``namespace`` by an overlay in ``workdir``), applied in ``namespace``; the account's name."""
    overlay = workdir / f"rbac-{namespace}"
    overlay.mkdir(parents=True, exist_ok=True)
    resources = [os.path.relpath(REPO / "manifests", overlay)]
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": resources, "namespace": namespace})
    )
    built = yaml.safe_load_all(cluster.kubectl("kustomize", str(overlay)).stdout)
    docs = [doc for doc in built if doc and doc["kind"] in RBAC_KINDS]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))
    return next(doc["metadata"]["name"] for doc in docs if doc["kind"] == "ServiceAccount")


class ControllerProcess:
    """``python -m controller`` as a real process, with its own state folder and metrics port.

    ``module`` runs another module instead that runs the controller in its process (``bench.heapdump``)."""

    def __init__(self, kubeconfig: Path, namespace: str, workdir: Path, env: dict[str, str] | None = None,
                 name: str = "controller", logs: Path | None = None, module: str = "controller"):  # fmt: skip
        """Its state folder is ``<workdir>/state``, its log ``<logs or workdir>/<name>.log``."""
        self.metrics_port = free_port()
        self.workdir = workdir
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "MDOPS_KUBECONFIG": str(kubeconfig),
            "MDOPS_NAMESPACE": namespace,
            "MDOPS_STATE_DIR": str(workdir / "state"),
            "MDOPS_CALENDAR_CACHE": str(workdir / SESSIONS),  # what a pod's /tmp keeps across restarts
            "MDOPS_METRICS_HOST": "127.0.0.1",
            "MDOPS_METRICS_PORT": str(self.metrics_port),
            **(env or {}),
        }
        self.process = Process(name, [sys.executable, "-m", module], logs or workdir, env=self.env)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return response.read().decode()

    def stop(self) -> None:
        self.process.stop()
