"""Helpers of the packaging tests: paths, the pinned Helm, rendering and applying manifests.

Helm never reaches a cluster but ours: its homes are temporary folders, ``$KUBECONFIG`` points at a
file that does not exist, and every command that talks to a cluster gets ``--kubeconfig`` explicitly,
after the loopback check of :func:`runbooks.kube.loopback_kubeconfig`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

from devcluster.controlplane import ControlPlane
from runbooks.kube import loopback_kubeconfig

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mdops"
MANIFESTS = REPO / "manifests"
SCRIPTS = REPO / "examples" / "scripts"
COMPONENTS = sorted(p for p in (MANIFESTS / "components").iterdir() if p.is_dir())
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
BUILD_HELM = REPO / "tools" / "build-helm.sh"
HELM_VERSION = "v3.19.5"
SERVICEMONITOR_CRD = Path(__file__).parent / "servicemonitor-crd.yaml"
PROMETHEUSRULE_CRD = Path(__file__).parent / "prometheusrule-crd.yaml"

Docs = list[dict[str, Any]]


def load_all(text: str) -> Docs:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(docs: Docs, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


class Helm:
    """The pinned helm binary, with throw-away homes and no implicit kubeconfig."""

    def __init__(self, binary: Path, home: Path):
        self.binary = binary
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            "KUBECONFIG": str(home / "no-such-kubeconfig"),
        }

    def run(
        self, *args: str, kubeconfig: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        cluster_args = [f"--kubeconfig={loopback_kubeconfig(kubeconfig)}"] if kubeconfig else []
        result = subprocess.run(
            [str(self.binary), *args, *cluster_args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
        return result

    def template(self, *args: str, namespace: str = "mdops", release: str = "mdops") -> Docs:
        return load_all(self.run("template", release, str(CHART), "--namespace", namespace, *args).stdout)


def dry_run(
    cluster: ControlPlane, namespace: str, docs: Docs, kubeconfig: Path | None = None
) -> subprocess.CompletedProcess:
    """``kubectl apply --dry-run=server`` of ``docs`` (strict field validation: kubectl's default), as the
    admin or as the user of ``kubeconfig``."""
    return cluster.kubectl(
        "apply",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump_all(docs),
        check=False,
        kubeconfig=kubeconfig,
    )
