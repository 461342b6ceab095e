"""The controller's credentials, for kopf's watches and for its own client (:mod:`controller.kubeapi`).

A ``kopf.ConnectionInfo`` read from the loopback kubeconfig given by path or, when the deployment asks for
it, from the pod's service account (:func:`runbooks.kube.chosen_kubeconfig` chooses, never both), the way
the official client reads them but without importing it: that import alone is ~0.9 s of every start, and
every failover waits for a restarting controller.

A client certificate or a token: a kubeconfig user that logs in through a plugin (``exec``,
``auth-provider``) is refused by name, not half-supported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf

from controller.settings import ControllerSettings
from runbooks import kube
from runbooks.yamlfile import load_yaml

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
PLUGINS = ("exec", "auth-provider")


def login(settings: ControllerSettings, *, trust_env: bool = False) -> kopf.ConnectionInfo:
    """Read afresh at every call: kopf and :class:`~controller.kubeapi.KubeApi` log in again when the API
    server refuses a token (the kubelet rotates a service account's)."""
    path = kube.chosen_kubeconfig(settings.kubeconfig, settings.in_cluster)
    if path is None:
        return from_service_account(SERVICE_ACCOUNT, os.environ, trust_env=trust_env)
    return from_kubeconfig(path, trust_env=trust_env)


def from_kubeconfig(path: Path, *, trust_env: bool = False) -> kopf.ConnectionInfo:
    """The kubeconfig's current context; the files it names are relative to the kubeconfig's folder."""
    config = load_yaml(path) or {}
    current = config.get("current-context")
    if not current:
        raise kopf.LoginError(f"{path}: no current-context")
    context = _entry(config, "context", current, path)
    cluster = _entry(config, "cluster", context.get("cluster"), path)
    user = _entry(config, "user", context.get("user"), path)
    plugin = next((name for name in PLUGINS if name in user), None)
    if plugin:
        raise kopf.LoginError(
            f"{path}: user {context.get('user')!r} logs in through an {plugin} plugin; "
            "the controller takes a client certificate or a token"
        )

    def file(entry: dict[str, Any], key: str) -> str | None:
        return str(path.parent / entry[key]) if entry.get(key) else None

    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = (path.parent / user["tokenFile"]).read_text().strip()
    return kopf.ConnectionInfo(
        server=cluster.get("server", ""),
        ca_path=file(cluster, "certificate-authority"),
        ca_data=cluster.get("certificate-authority-data"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        certificate_path=file(user, "client-certificate"),
        certificate_data=user.get("client-certificate-data"),
        private_key_path=file(user, "client-key"),
        private_key_data=user.get("client-key-data"),
        token=token,
        default_namespace=context.get("namespace"),
        trust_env=trust_env,
    )


def from_service_account(
    folder: Path, environ: Mapping[str, str], *, trust_env: bool = False
) -> kopf.ConnectionInfo:
    """A pod's: the API server from ``KUBERNETES_SERVICE_HOST``/``_PORT``, the token, CA and namespace from
    the files the kubelet mounts in ``folder``."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise kopf.LoginError("MDOPS_IN_CLUSTER=true, but KUBERNETES_SERVICE_HOST/_PORT are unset: no pod")
    token, ca, namespace = folder / "token", folder / "ca.crt", folder / "namespace"
    for needed in (token, ca):
        if not needed.is_file():
            raise kopf.LoginError(f"MDOPS_IN_CLUSTER=true, but no {needed}: is the service account mounted?")
    return kopf.ConnectionInfo(
        server=f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}",
        ca_path=str(ca),
        token=token.read_text().strip(),
        default_namespace=namespace.read_text().strip() if namespace.is_file() else None,
        trust_env=trust_env,
    )


def _entry(config: dict[str, Any], kind: str, name: Any, path: Path) -> dict[str, Any]:
    """The ``kind`` (context, cluster, user) named ``name`` in a kubeconfig."""
    for item in config.get(f"{kind}s") or []:
        if item.get("name") == name:
            return item.get(kind) or {}
    raise kopf.LoginError(f"{path}: no {kind} named {name!r}")
