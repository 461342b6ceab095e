"""How the API's own requests to the Kubernetes API give up: promptly, and without trying again by themselves.

A request (execute's create and read, the schedules' list, approvals' create and the policies' list) waits
``REQUEST_TIMEOUT``: 5 s to connect, then 10 s for each read of the answer; a frozen API server makes it a 503
within about that, not after the official client's three tries of 30 s each. urllib3 tries again only a
connection that could not be made (the request never left, so nothing can happen twice); never a request
that was sent, whose answer was lost: a create may have been applied. Execute's own logic (the Runbook named
after the request id, a 409 read back as the same run) makes asking again safe for the client.

The requests run in threads of their own (:class:`KubeRequests`), never in the event loop's default pool,
which status' rendering and the calendar use: a frozen API server holds only these threads. A request waits
at most ``QUEUE_SECONDS`` for one of them, else it is a 503 then: however many requests come while the
API server answers none, each gets its 503 within about the timeouts above, not behind all the others'.

The cache's list and watch have their own timeouts (:mod:`api.cache`), on their own client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client
from urllib3.util.retry import Retry

from api.errors import KubernetesUnavailable
from runbooks.kube import configuration

REQUEST_TIMEOUT = (5, 10)
RETRIES = Retry(total=1, connect=1, read=0, status=0, other=0, redirect=0, raise_on_status=False)
WORKERS = 8  # requests in flight at once; the others wait for one of them, QUEUE_SECONDS at most
QUEUE_SECONDS = REQUEST_TIMEOUT[0]
BUSY = "Kubernetes API unreachable: it has not answered the API's earlier requests yet; try again shortly"
T = TypeVar("T")


def requests_client(kubeconfig: str | Path | None, in_cluster: bool = False) -> client.ApiClient:
    """The client of the API's requests (not the cache's watch): no retry of a request that was sent."""
    cfg = configuration(kubeconfig, in_cluster)
    cfg.retries = RETRIES
    return client.ApiClient(cfg)


class KubeRequests:
    """The API's custom objects client on :func:`requests_client`, and the threads its requests run in."""

    def __init__(self, api: client.ApiClient, workers: int = WORKERS):
        self.objects = client.CustomObjectsApi(api)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="kubernetes")
        self._free = asyncio.Semaphore(workers)

    async def __call__(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``call(*args, **kwargs)`` in a thread of the pool; a 503 if none is free within QUEUE_SECONDS. The
        thread is free again when ``call`` returns, even if the request that asked went away meanwhile."""
        try:
            await asyncio.wait_for(self._free.acquire(), QUEUE_SECONDS)
        except TimeoutError:
            raise KubernetesUnavailable(BUSY) from None
        loop = asyncio.get_running_loop()

        def release(_: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
                loop.call_soon_threadsafe(self._free.release)

        future = self._pool.submit(functools.partial(call, *args, **kwargs))
        future.add_done_callback(release)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
