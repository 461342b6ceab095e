"""The one way mdops reaches the Kubernetes API.

A client comes from a kubeconfig given by explicit path, whose API servers must all
be on loopback (the local control plane), or from the pod's service account when
in-cluster mode is asked for explicitly. Nothing reads ``~/.kube/config``,
``$KUBECONFIG`` or in-cluster credentials by default.

The official client is imported by the functions that hand one out, not with this module: the controller
checks its kubeconfig here without that client (see :mod:`controller.login`).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from runbooks.yamlfile import load_yaml

if TYPE_CHECKING:
    from kubernetes import client

log = logging.getLogger(__name__)
RETRY_SECONDS = 1.0  # between two attempts of a call that the API server did not answer
T = TypeVar("T")


class NotLoopbackError(RuntimeError):
    """A kubeconfig points at an API server that is not on this machine's loopback."""


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
    kubeconfig = load_yaml(path) or {}
    clusters = kubeconfig.get("clusters") if isinstance(kubeconfig, dict) else None  # a file of text
    if not clusters or not isinstance(clusters, list):
        raise NotLoopbackError(f"{path}: names no cluster")
    for entry in clusters:  # of any shape: what is not a loopback server's address is refused
        cluster = entry.get("cluster") if isinstance(entry, dict) else None
        server = cluster.get("server") if isinstance(cluster, dict) else None
        if not isinstance(server, str) or not is_loopback(server):
            raise NotLoopbackError(
                f"{path}: refusing API server {server!r}: "
                "mdops dev tools only talk to a control plane on loopback"
            )
    return path


def chosen_kubeconfig(kubeconfig: str | Path | None, in_cluster: bool = False) -> Path | None:
    """The loopback kubeconfig to log in with, or None for the pod's service account: only when a deployment
    asks for it with ``in_cluster`` (MDOPS_IN_CLUSTER=true, set by the chart and the manifests). Never both,
    and never a fallback from one to the other."""
    if in_cluster and kubeconfig:
        raise ValueError("MDOPS_KUBECONFIG and MDOPS_IN_CLUSTER=true both given: choose one")
    if in_cluster:
        return None
    if kubeconfig:
        return loopback_kubeconfig(kubeconfig)
    raise ValueError("no Kubernetes credentials: set MDOPS_KUBECONFIG (a path) or MDOPS_IN_CLUSTER=true")


def configuration(kubeconfig: str | Path | None, in_cluster: bool = False) -> client.Configuration:
    """The official client's configuration, from what :func:`chosen_kubeconfig` chooses."""
    from kubernetes import client, config

    cfg = client.Configuration()
    path = chosen_kubeconfig(kubeconfig, in_cluster)
    if path is None:
        config.load_incluster_config(client_configuration=cfg)
    else:
        config.load_kube_config(config_file=str(path), client_configuration=cfg)
    return cfg


def api_client(kubeconfig: str | Path | None, in_cluster: bool = False) -> client.ApiClient:
    from kubernetes import client

    return client.ApiClient(configuration(kubeconfig, in_cluster))


def server_away(error: BaseException) -> bool:
    """Whether a call of the official client failed because the API server did not answer it (stopped,
    starting again, overloaded: no connection, a 5xx or a 429) rather than because it refused it."""
    import urllib3
    from kubernetes.client.rest import ApiException

    if isinstance(error, ApiException):
        return error.status >= 500 or error.status in (0, 429)
    return isinstance(error, urllib3.exceptions.HTTPError | OSError)


def persistently(call: Callable[..., T], *args: Any, within: float | None = None, **kwargs: Any) -> T:
    """``call(*args, **kwargs)``, again every second while the API server is away (:func:`server_away`), for
    ``within`` seconds at most (None: until it answers), as a kubelet keeps trying. A call that may have
    been applied before its answer was lost is made again: it must be one that can be."""
    deadline = None if within is None else time.monotonic() + within
    while True:
        try:
            return call(*args, **kwargs)
        except Exception as error:
            if not server_away(error) or (deadline is not None and time.monotonic() > deadline):
                raise
            log.info("the Kubernetes API server is away (%s); trying again", type(error).__name__)
        time.sleep(RETRY_SECONDS)
