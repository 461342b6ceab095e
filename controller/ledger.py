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
from runbooks import keys
from runbooks.models import RunbookStatus

# What the ledger keeps of a run's status: enough for a duplicate to show the result.
KEPT = ("exit_code", "result", "message", "started_at", "finished_at", "health")


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
        result = annotations.get(keys.RESULT)
        return cls(
            lease.spec.holder_identity or "",
            annotations.get(keys.RUNBOOK, ""),
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
                "labels": {keys.LEDGER_LABEL: "true", keys.MANAGED_BY: keys.MANAGER},
                "annotations": {keys.REQUEST_ID: request_id, keys.RUNBOOK: f"{namespace}/{name}"},
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

    async def finish(self, namespace: str, request_id: str, uid: str, status: RunbookStatus) -> None:
        summary = status.model_dump(by_alias=True, include=set(KEPT), mode="json")
        while True:
            lease = await self.kube.get_lease(namespace, lease_name(request_id))
            if lease is None or lease.spec.holder_identity != uid:
                return
            lease.metadata.annotations = {
                **(lease.metadata.annotations or {}),
                keys.RESULT: json.dumps(summary, separators=(",", ":")),
                keys.FINISHED_AT: summary["finishedAt"] or "",
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
        leases = await self.kube.list_leases(namespace, f"{keys.LEDGER_LABEL}=true")
        doomed = oldest_finished(leases, self.size)
        for lease in doomed:
            await self.kube.delete_lease(namespace, lease.metadata.name)
        return len(doomed)


def oldest_finished(leases: list, size: int) -> list:
    """The entries to delete so that at most ``size`` remain: the finished ones, oldest first. Unfinished
    entries are never deleted (their runs may still be going on)."""
    excess = len(leases) - size
    if excess <= 0:
        return []
    done = [lease for lease in leases if (lease.metadata.annotations or {}).get(keys.FINISHED_AT)]
    done.sort(key=lambda lease: lease.metadata.annotations[keys.FINISHED_AT])
    return done[:excess]
