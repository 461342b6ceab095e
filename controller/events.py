"""Kubernetes Events on Runbooks, posted in the background so that a run never waits for them.

Events are auxiliary (they expire within the hour; the status keeps what matters): the queue is bounded,
and when the API server cannot keep up the newest Events are dropped with a warning rather than memory
growing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from controller.kubeapi import ApiError, KubeApi
from runbooks import keys
from runbooks.contract import now

log = logging.getLogger(__name__)

COMPONENT = "mdops-controller"
QUEUE_LIMIT = 10_000
MESSAGE_CHARS = 1024


@dataclass(frozen=True, slots=True)
class Ref:
    """The object an Event is about: a Runbook, or a RunbookSchedule."""

    namespace: str
    name: str
    uid: str
    kind: str = keys.KIND


class Events:
    def __init__(self, kube: KubeApi, instance: str):
        self.kube = kube
        self.instance = instance
        self.queue: asyncio.Queue[tuple[Ref, str, str, str]] = asyncio.Queue(QUEUE_LIMIT)
        self.dropped = 0

    def post(self, ref: Ref, kind: str, reason: str, message: str) -> None:
        try:
            self.queue.put_nowait((ref, kind, reason, message))
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("%d Events dropped: the API server does not keep up", self.dropped)

    async def run(self) -> None:
        """Post the queued Events, one at a time, until cancelled."""
        while True:
            ref, kind, reason, message = await self.queue.get()
            with contextlib.suppress(ApiError):  # auxiliary: a failed Event is logged by nobody
                await self.kube.post_event(ref.namespace, self.event(ref, kind, reason, message))

    def event(self, ref: Ref, kind: str, reason: str, message: str) -> dict[str, Any]:
        stamp = now()
        return {
            "metadata": {"generateName": f"{ref.name}.", "namespace": ref.namespace},
            "involvedObject": {
                "apiVersion": keys.API_VERSION,
                "kind": ref.kind,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": ref.uid,
            },
            "type": kind,
            "reason": reason,
            "message": message[:MESSAGE_CHARS],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance,
            "action": reason,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
