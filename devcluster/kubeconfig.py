"""Kubeconfig files of the local control plane, and the loopback guard.

Every test, script and dev command reaches Kubernetes through a kubeconfig
given by explicit path and checked by :func:`loopback_kubeconfig`: nothing here
reads ``~/.kube/config``, ``$KUBECONFIG`` or in-cluster credentials.
"""

from __future__ import annotations

import base64
import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from devcluster.pki import Pair


class NotLoopbackError(RuntimeError):
    """A kubeconfig points at an API server that is not on this machine's loopback."""


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, ca: Path, client: Pair, user: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "mdops-local", "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(client.cert),
                    "client-key-data": _b64(client.key),
                },
            }
        ],
        "contexts": [{"name": "mdops-local", "context": {"cluster": "mdops-local", "user": user}}],
        "current-context": "mdops-local",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def is_loopback(server: str) -> bool:
    host = urlsplit(server).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_kubeconfig(path: str | Path) -> Path:
    """Return ``path`` if every cluster it names is on loopback; raise otherwise."""
    path = Path(path)
    config = yaml.safe_load(path.read_text()) or {}
    clusters = config.get("clusters") or []
    if not clusters:
        raise NotLoopbackError(f"{path}: names no cluster")
    for entry in clusters:
        server = (entry.get("cluster") or {}).get("server", "")
        if not is_loopback(server):
            raise NotLoopbackError(
                f"{path}: refusing API server {server!r}: "
                "mdops dev tools only talk to a control plane on loopback"
            )
    return path
