"""How the API's own requests to the Kubernetes API give up: promptly, and without trying again by themselves.

A request (execute's create and read, the schedules' list, approvals' create and the policies' list) waits
``REQUEST_TIMEOUT``: 5 s to connect, then 10 s for each read of the answer; a frozen API server makes it a 503
within about that, not after the official client's three tries of 30 s each. urllib3 tries again only a
connection that could not be made (the request never left, so nothing can happen twice); never a request
that was sent, whose answer was lost: a create may have been applied. Execute's own logic (the Runbook named
after the request id, a 409 read back as the same run) makes asking again safe for the client.

The cache's list and watch have their own timeouts (:mod:`api.cache`), on their own client.
"""

from __future__ import annotations

from pathlib import Path

from kubernetes import client
from urllib3.util.retry import Retry

from runbooks.kube import configuration

REQUEST_TIMEOUT = (5, 10)
RETRIES = Retry(total=1, connect=1, read=0, status=0, other=0, redirect=0, raise_on_status=False)


def requests_client(kubeconfig: str | Path | None, in_cluster: bool = False) -> client.ApiClient:
    """The client of the API's requests (not the cache's watch): no retry of a request that was sent."""
    cfg = configuration(kubeconfig, in_cluster)
    cfg.retries = RETRIES
    return client.ApiClient(cfg)
