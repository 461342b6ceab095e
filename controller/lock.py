"""One mutating runbook at a time per target, first come first served.

The lock is a Lease (``mdops-lock-<group>``) whose holder is the running Runbook's uid, so it survives
controller restarts. Order comes from the controller's index of waiting Runbooks (oldest first);
the Lease makes it exclusive. A holder that no longer exists or has finished is stale and is replaced,
so the lock is always released, even after a crash.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Awaitable, Callable

from controller.kubeapi import Conflict, KubeApi
from runbooks import keys


def lease_name(group: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", group.lower()).strip("-")[:30] or "group"
    return f"mdops-lock-{slug}-{hashlib.sha256(group.encode()).hexdigest()[:8]}"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class TargetLock:
    def __init__(self, kube: KubeApi, holder_active: Callable[[str, str, str], Awaitable[bool]]):
        """``holder_active(namespace, name, uid)`` says whether a holder still needs the lock."""
        self.kube = kube
        self.holder_active = holder_active

    async def acquire(self, namespace: str, group: str, uid: str, name: str) -> str | None:
        """Take the lock for ``uid``; return None on success, else the name of the Runbook holding it."""
        lease = await self.kube.get_lease(namespace, lease_name(group))
        if lease is None:
            body = {
                "metadata": {
                    "name": lease_name(group),
                    "labels": {keys.MANAGED_BY: keys.MANAGER, keys.LOCK_LABEL: "true"},
                    "annotations": {keys.RUNBOOK: name, keys.LOCK_GROUP: group},
                },
                "spec": {"holderIdentity": uid, "acquireTime": _now()},
            }
            try:
                await self.kube.create_lease(namespace, body)
                return None
            except Conflict:
                return "another runbook (just now)"
        holder = lease.spec.holder_identity
        holder_name = (lease.metadata.annotations or {}).get(keys.RUNBOOK, "")
        if holder == uid:
            return None
        if holder and await self.holder_active(namespace, holder_name, holder):
            return holder_name
        lease.spec.holder_identity = uid
        lease.spec.acquire_time = _now()
        lease.metadata.annotations = {**(lease.metadata.annotations or {}), keys.RUNBOOK: name}
        try:
            await self.kube.replace_lease(namespace, lease)
            return None
        except Conflict:
            return "another runbook (just now)"

    async def release(self, namespace: str, group: str, uid: str) -> None:
        while True:
            lease = await self.kube.get_lease(namespace, lease_name(group))
            if lease is None or lease.spec.holder_identity != uid:
                return
            lease.spec.holder_identity = None
            lease.spec.acquire_time = None
            try:
                await self.kube.replace_lease(namespace, lease)
                return
            except Conflict:
                continue
