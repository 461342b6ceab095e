"""One mutating runbook at a time per target: the Lease that makes it exclusive and survives restarts.

The lock is a Lease (``mdops-lock-<group>``) whose holder is the running Runbook's uid. The order in which
Runbooks get it comes from the dispatcher's queue (:mod:`controller.dispatcher`), oldest first; the Lease
is what a restarted controller finds. A holder that has finished, or no longer exists and left no process
of its run that may still run, is stale and is replaced, so the lock is always released, even after a
crash, and never while the run of a Runbook deleted by force (its finalizer taken away while no controller
ran, so that none stopped its run) goes on.

Each lock's Lease is kept as last written (or as absent, if it was read and there was none), so that
taking and releasing it are one write each; a conflict (someone else wrote it) reads it again.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import Any

from controller.kubeapi import Conflict, KubeApi
from runbooks import keys
from runbooks.models import RunbookStatus


def lease_name(group: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", group.lower()).strip("-")[:30] or "group"
    return f"mdops-lock-{slug}-{hashlib.sha256(group.encode()).hexdigest()[:8]}"


def _now() -> str:
    # A Lease's MicroTime: RFC 3339 with microseconds.
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class TargetLock:
    def __init__(self, kube: KubeApi, may_run: Callable[[str, str, str], Awaitable[bool]]):
        """``may_run(namespace, name, uid)``: whether a process of the run of that Runbook, gone, may still
        run (:meth:`controller.executors.Executor.may_run`)."""
        self.kube = kube
        self.may_run = may_run
        # None: read, and there was none (only this controller makes it while it is active).
        self.leases: dict[tuple[str, str], dict[str, Any] | None] = {}

    def forget(self) -> None:
        """Forget every Lease as last known: another replica may write them from now on (kopf's peering
        paused this one), so each is read again before it is trusted (a holder of before the pause may
        have let go since, and another run taken the lock)."""
        self.leases.clear()

    async def holder_active(self, namespace: str, name: str, uid: str) -> bool:
        """Whether the holder still needs the lock: it exists and has not finished, or it is gone and a
        process of its run may still run (deleted by force while no controller ran: nobody stopped it)."""
        body = await self.kube.get_runbook(namespace, name)
        if body is None or body["metadata"]["uid"] != uid:
            return await self.may_run(namespace, name, uid)
        return not RunbookStatus.read(body.get("status") or {}).finished

    async def _current(self, namespace: str, group: str, fresh: bool) -> dict[str, Any] | None:
        key = (namespace, group)
        if fresh or key not in self.leases:
            self.leases[key] = await self.kube.get_lease(namespace, lease_name(group))
        return self.leases[key]

    async def acquire(self, namespace: str, group: str, uid: str, name: str) -> str | None:
        """Take the lock for ``uid``; return None on success, else the name of the Runbook holding it."""
        fresh = False
        while True:
            lease = await self._current(namespace, group, fresh)
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
                    self.leases[(namespace, group)] = await self.kube.create_lease(namespace, body)
                    return None
                except Conflict:
                    fresh = True
                    continue
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity")
            holder_name = (lease["metadata"].get("annotations") or {}).get(keys.RUNBOOK, "")
            if holder == uid:
                return None
            if holder and not fresh:  # as we last knew it: read it again before judging the holder
                fresh = True
                continue
            if holder and holder_name and await self.holder_active(namespace, holder_name, holder):
                return holder_name
            taken = {
                **lease,
                "metadata": {
                    **lease["metadata"],
                    "annotations": {**(lease["metadata"].get("annotations") or {}), keys.RUNBOOK: name},
                },
                "spec": {**spec, "holderIdentity": uid, "acquireTime": _now()},
            }
            try:
                self.leases[(namespace, group)] = await self.kube.replace_lease(namespace, taken)
                return None
            except Conflict:
                fresh = True

    async def release_if_held(self, namespace: str, group: str, uid: str) -> None:
        """Release the lock if ``uid`` holds it, as this controller last knew the Lease (read once per
        target if it never did): after a restart, a run the gate holds may hold the lock it took before."""
        lease = await self._current(namespace, group, fresh=False)
        if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == uid:
            await self.release(namespace, group, uid)

    async def release(self, namespace: str, group: str, uid: str) -> None:
        fresh = False
        while True:
            lease = await self._current(namespace, group, fresh)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != uid:
                if fresh:
                    return
                fresh = True
                continue
            spec = {k: v for k, v in lease["spec"].items() if k not in ("holderIdentity", "acquireTime")}
            try:
                released = await self.kube.replace_lease(namespace, {**lease, "spec": spec})
                self.leases[(namespace, group)] = released
                return
            except Conflict:
                fresh = True
