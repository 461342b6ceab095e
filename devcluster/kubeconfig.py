"""Writing kubeconfigs of the local control plane: the admin's, real users' and ServiceAccounts'."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from devcluster.pki import Pair
from devcluster.private import write_private


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(path: Path, server: str, ca: Path, credentials: Pair | str, user: str) -> Path:
    """A kubeconfig for ``user``, who logs in with a client certificate (a Pair) or a bearer token."""
    if isinstance(credentials, Pair):
        login = {"client-certificate-data": _b64(credentials.cert), "client-key-data": _b64(credentials.key)}
    else:
        login = {"token": credentials}
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "mdops-local", "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}
        ],
        "users": [{"name": user, "user": login}],
        "contexts": [{"name": "mdops-local", "context": {"cluster": "mdops-local", "user": user}}],
        "current-context": "mdops-local",
    }
    return write_private(path, yaml.safe_dump(kubeconfig, sort_keys=False))
