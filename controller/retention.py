"""Retention of finished Runbooks, as Kubernetes has it for Jobs (``ttlSecondsAfterFinished``) and CronJobs
(``successfulJobsHistoryLimit``, ``failedJobsHistoryLimit``).

One task (:class:`Retention`) deletes the finished Runbooks of the namespace that are older than
``MDOPS_RETENTION_TTL_SECONDS`` or beyond the newest ``MDOPS_RETENTION_SUCCESSFUL_PER_COMMAND`` successful /
``MDOPS_RETENTION_FAILED_PER_COMMAND`` failed ones of their command; which ones is decided by a pure
function (:func:`doomed`). A pass lists the finished Runbooks page by page (the watch's field selector
turned round: ``status.result`` is set) and keeps a few fields of each; the first pass comes one interval
after the start, so that a starting controller does nothing per finished Runbook.

The ledger (:mod:`controller.ledger`) keeps the request ids of what retention deleted: a Runbook that a
GitOps tool creates again with the same request id is a duplicate that shows the original's result, and
never runs twice. A Runbook's time of finishing is when *it* finished (its ``Succeeded`` condition's
transition), so that such a duplicate is kept its own TTL, not its original's.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller import audit
from controller.kubeapi import KubeApi
from controller.settings import ControllerSettings
from runbooks.contract import parse_time
from runbooks.models import RunbookStatus

log = logging.getLogger(__name__)

FINISHED = "status.result!="  # the selectable field is set once the run has finished
TTL = "TTLExpired"
HISTORY = "HistoryLimit"


@dataclass(frozen=True, slots=True)
class Finished:
    """What retention keeps of a finished Runbook."""

    name: str
    uid: str
    version: str
    command: str
    succeeded: bool
    finished_at: datetime.datetime
    spec: dict[str, Any]  # for the audit line of its deletion (the few fields it names)
    status: RunbookStatus

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Finished | None:
        """None for a Runbook that is unfinished or being deleted already."""
        meta = body["metadata"]
        status = RunbookStatus.read(body.get("status"))
        succeeded = status.succeeded
        if meta.get("deletionTimestamp") or succeeded is None or not status.finished:
            return None
        spec = body.get("spec") or {}
        moment = (
            parse_time(succeeded.last_transition_time)
            or parse_time(status.finished_at)
            or parse_time(meta.get("creationTimestamp"))
        )
        if moment is None:
            return None
        kept = ("command", "requestId", "requestedBy", "mode", "profile", "dryRun")
        # Its logs and health are not needed: only what the audit line shows is kept.
        brief = status.model_copy(update={"logs": [], "health": None, "state": None})
        return cls(
            meta["name"],
            meta["uid"],
            meta.get("resourceVersion", ""),
            spec.get("command", ""),
            succeeded.status == "True",
            moment,
            {key: spec[key] for key in kept if key in spec},
            brief,
        )


def _order(runbook: Finished) -> tuple[datetime.datetime, str]:
    return runbook.finished_at, runbook.name


def doomed(
    runbooks: list[Finished],
    now: datetime.datetime,
    ttl_seconds: int,
    successful_per_command: int,
    failed_per_command: int,
) -> list[tuple[Finished, str]]:
    """The finished Runbooks to delete, oldest first, each with why (``TTLExpired`` or ``HistoryLimit``):
    those that finished ``ttl_seconds`` ago or earlier, and those beyond the newest ``successful_per_command``
    successful and ``failed_per_command`` failed ones of their command. A limit of 0 is no limit."""
    why: dict[str, str] = {}
    if ttl_seconds:
        expiry = now - datetime.timedelta(seconds=ttl_seconds)
        why.update((runbook.uid, TTL) for runbook in runbooks if runbook.finished_at <= expiry)
    groups: dict[tuple[str, bool], list[Finished]] = collections.defaultdict(list)
    for runbook in runbooks:
        groups[runbook.command, runbook.succeeded].append(runbook)
    for (_, succeeded), group in groups.items():
        limit = successful_per_command if succeeded else failed_per_command
        if limit:
            newest_first = sorted(group, key=_order, reverse=True)
            for runbook in newest_first[limit:]:
                why.setdefault(runbook.uid, HISTORY)
    chosen = sorted((runbook for runbook in runbooks if runbook.uid in why), key=_order)
    return [(runbook, why[runbook.uid]) for runbook in chosen]


class Retention:
    """The one periodic task that applies :func:`doomed` to the namespace, while this replica is the active
    one (``paused``: kopf's peering paused it)."""

    def __init__(self, kube: KubeApi, settings: ControllerSettings, paused: Callable[[], bool]):
        self.kube = kube
        self.settings = settings
        self.paused = paused

    async def run(self) -> None:
        interval = self.settings.retention_interval_seconds
        if not interval:
            return
        while True:
            await asyncio.sleep(interval)  # also before the first pass: the start is over by then
            if self.paused():
                continue
            try:
                deleted = await self.sweep()
            except Exception:  # a failed pass is retried with the next one
                log.exception("retention in %s failed", self.settings.namespace)
            else:
                if deleted:
                    log.info("retention deleted %d finished Runbooks", deleted)

    async def listed(self) -> list[Finished]:
        runbooks: list[Finished] = []
        path = self.kube.runbook_path(self.settings.namespace)
        async for items in self.kube.pages(path, params={"fieldSelector": FINISHED}):
            runbooks.extend(filter(None, map(Finished.from_body, items)))
        return runbooks

    async def sweep(self) -> int:
        settings = self.settings
        chosen = doomed(
            await self.listed(),
            datetime.datetime.now(datetime.UTC),
            settings.retention_ttl_seconds,
            settings.retention_successful_per_command,
            settings.retention_failed_per_command,
        )
        deleted = 0
        for runbook, why in chosen:
            if self.paused():
                break
            namespace = settings.namespace
            if await self.kube.delete_runbook(namespace, runbook.name, runbook.uid, runbook.version):
                deleted += 1
                message = f"deleted by retention ({why})"
                audit.write(
                    audit.line("Deleted", namespace, runbook.name, runbook.spec, runbook.status, message)
                )
        return deleted
