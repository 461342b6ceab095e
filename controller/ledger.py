"""The request ledger: which Runbook owns a request id, and how its run ended.

One Lease per request id (``mdops-req-<hash>``) in the Runbook's namespace. Creating it is the atomic
claim: whoever creates it first owns the request id, and every later Runbook with the same id (a
re-apply under another name, a re-creation after deletion) is a duplicate that shows the recorded
result instead of running. The ledger is bounded: past ``size`` entries, the oldest finished ones are
deleted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from controller.kubeapi import Conflict, KubeApi

LABEL = "ops.mdops.io/ledger"
A_REQUEST, A_RUNBOOK, A_RESULT, A_FINISHED = (
    "ops.mdops.io/request-id",
    "ops.mdops.io/runbook",
    "ops.mdops.io/result",
    "ops.mdops.io/finished-at",
)


def lease_name(request_id: str) -> str:
    return "mdops-req-" + hashlib.sha256(request_id.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Entry:
    uid: str
    runbook: str  # namespace/name
    result: dict[str, Any] | None

    @classmethod
    def from_lease(cls, lease) -> Entry:
        annotations = lease.metadata.annotations or {}
        result = annotations.get(A_RESULT)
        return cls(
            lease.spec.holder_identity or "",
            annotations.get(A_RUNBOOK, ""),
            json.loads(result) if result else None,
        )


class Ledger:
    def __init__(self, kube: KubeApi, size: int):
        self.kube = kube
        self.size = size
        self._since_trim: dict[str, int] = {}

    async def claim(self, namespace: str, request_id: str, uid: str, name: str) -> Entry:
        """Claim ``request_id`` for the Runbook ``uid``; return the entry of whoever owns it."""
        body = {
            "metadata": {
                "name": lease_name(request_id),
                "labels": {LABEL: "true", "app.kubernetes.io/managed-by": "mdops"},
                "annotations": {A_REQUEST: request_id, A_RUNBOOK: f"{namespace}/{name}"},
            },
            "spec": {"holderIdentity": uid},
        }
        while True:
            try:
                return Entry.from_lease(await self.kube.create_lease(namespace, body))
            except Conflict:
                lease = await self.kube.get_lease(namespace, body["metadata"]["name"])
                if lease is not None:  # else trimmed meanwhile: claim again
                    return Entry.from_lease(lease)

    async def lookup(self, namespace: str, request_id: str) -> Entry | None:
        lease = await self.kube.get_lease(namespace, lease_name(request_id))
        return Entry.from_lease(lease) if lease else None

    async def release(self, namespace: str, request_id: str, uid: str) -> None:
        """Give up an unfinished claim (its Runbook was deleted before it ran)."""
        entry = await self.lookup(namespace, request_id)
        if entry is not None and entry.uid == uid and entry.result is None:
            await self.kube.delete_lease(namespace, lease_name(request_id))

    async def finish(self, namespace: str, request_id: str, uid: str, result: dict[str, Any]) -> None:
        summary = {
            k: result.get(k) for k in ("exitCode", "result", "message", "startedAt", "finishedAt", "health")
        }
        while True:
            lease = await self.kube.get_lease(namespace, lease_name(request_id))
            if lease is None or lease.spec.holder_identity != uid:
                return
            lease.metadata.annotations = {
                **(lease.metadata.annotations or {}),
                A_RESULT: json.dumps(summary, separators=(",", ":")),
                A_FINISHED: summary["finishedAt"] or "",
            }
            try:
                await self.kube.replace_lease(namespace, lease)
                break
            except Conflict:
                continue
        self._since_trim[namespace] = self._since_trim.get(namespace, 0) + 1
        if self._since_trim[namespace] >= max(1, self.size // 10):
            self._since_trim[namespace] = 0
            await self.trim(namespace)

    async def trim(self, namespace: str) -> int:
        """Delete the oldest finished entries beyond ``size``; return how many were deleted."""
        leases = await self.kube.list_leases(namespace, f"{LABEL}=true")
        excess = len(leases) - self.size
        if excess <= 0:
            return 0
        done = [lease for lease in leases if (lease.metadata.annotations or {}).get(A_FINISHED)]
        done.sort(key=lambda lease: lease.metadata.annotations[A_FINISHED])
        for lease in done[:excess]:
            await self.kube.delete_lease(namespace, lease.metadata.name)
        return min(excess, len(done))
