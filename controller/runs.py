"""One Runbook, from accepted to finished: the controller's domain logic, free of kopf.

Level-based: ``reconcile`` looks at the Runbook's status and the world (ledger, lock, executor) and
moves it forward; run again after a restart, it picks up where the last controller stopped. Every
request id runs at most once: the ledger claim decides who may run, the executor's idempotent start
adopts a run that already started.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kubernetes.client.rest import ApiException

from controller import metrics, transitions
from controller.executors import Executor, Run, RunRequest, failure
from controller.kubeapi import KubeApi
from controller.ledger import Entry, Ledger
from controller.lock import TargetLock
from controller.settings import ControllerSettings
from runbooks.calendar import CalendarError
from runbooks.contract import Command, ExitCode, now, parse_time, reason_of
from runbooks.models import Execution, RunbookStatus, RunSession

log = logging.getLogger(__name__)

LOCK_POLL_SECONDS = 1.0
DUPLICATE_POLL_SECONDS = 1.0


class Stopped(Exception):
    """The controller is stopping or pausing: leave the run to the next controller."""


@dataclass(frozen=True)
class QueueEntry:
    created: str
    name: str
    uid: str
    started: bool = False  # it holds (or held) the lock and runs: no longer waiting


def lock_group(settings: ControllerSettings, profile: str) -> str:
    return settings.lock_groups.get(profile, "default")


def needs_lock(spec: dict[str, Any]) -> bool:
    return Command(spec["command"]).mutating and not spec.get("dryRun", False)


def queue_key(namespace: str, group: str) -> str:
    return f"{namespace}/{group}"


def ahead_of(queue: Iterable[QueueEntry], uid: str) -> list[QueueEntry]:
    """The Runbooks ahead of ``uid`` in its target's queue, first come first served (all of them when ``uid``
    is not in the queue yet)."""
    waiting = sorted(queue, key=lambda e: (e.created, e.name))
    mine = next((i for i, e in enumerate(waiting) if e.uid == uid), len(waiting))
    return waiting[:mine]


def queue_entry(body: dict[str, Any]) -> QueueEntry:
    meta = body["metadata"]
    started = bool((body.get("status") or {}).get("execution"))
    return QueueEntry(meta["creationTimestamp"], meta["name"], meta["uid"], started)


def queue_depth(queue: Iterable[QueueEntry]) -> int:
    """How many Runbooks of a target's queue wait for its lock (the one running is not waiting)."""
    return sum(1 for entry in queue if not entry.started)


@dataclass
class Services:
    settings: ControllerSettings
    kube: KubeApi
    ledger: Ledger
    lock: TargetLock
    executor: Executor
    event: Callable[[dict, str, str, str], None]  # (body, type, reason, message)
    wakeups: dict[str, asyncio.Event]

    def wakeup(self, key: str) -> asyncio.Event:
        return self.wakeups.setdefault(key, asyncio.Event())


class RunbookRun:
    def __init__(self, services: Services, body: dict[str, Any]):
        self.services = services
        self.body = body
        meta = body["metadata"]
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.generation = meta.get("generation", 1)
        self.spec = body["spec"]
        self.status = RunbookStatus.read(body.get("status") or {})
        self.command = self.spec["command"]
        self.request_id = self.spec.get("requestId") or self.name
        self.group = lock_group(self.services.settings, self.spec.get("profile", "primary"))
        self.dry_run = bool(self.spec.get("dryRun"))

    async def _patch(self, change: RunbookStatus) -> None:
        updated = await self.services.kube.patch_status(self.namespace, self.name, transitions.patch(change))
        if updated is not None:
            self.status = RunbookStatus.read(updated.get("status") or {})
        else:  # the Runbook is gone: keep what we meant to write
            self.status = self.status.model_copy(
                update={k: getattr(change, k) for k in change.model_fields_set}
            )

    # -- the whole life ----------------------------------------------------
    async def reconcile(
        self, queue: Callable[[], Iterable[QueueEntry]], stopped: asyncio.Event, deleted: Callable[[], bool]
    ) -> None:
        """Move the Runbook to its end; raise Stopped if the controller stops first."""
        if self.status.finished:
            return
        try:
            await self._reconcile(queue, stopped, deleted)
        except Stopped:
            if deleted() and not self.status.execution:  # never ran: the request id is free again
                await self.services.ledger.release(self.namespace, self.request_id, self.uid)
            raise

    async def _reconcile(
        self, queue: Callable[[], Iterable[QueueEntry]], stopped: asyncio.Event, deleted: Callable[[], bool]
    ) -> None:
        # The first auto window loads the venue's calendar (a child process): off the event loop.
        window, session = (
            (self.status.window, self.status.session)
            if self.status.window
            else await asyncio.to_thread(self._resolve_window)
        )
        resolved = {
            "request_id": self.request_id,
            "window": window,
            "target": queue_key(self.namespace, self.group),
            "session": session,
        }
        if not self.status.conditions:
            await self._patch(transitions.pending(self.status, self.generation, **resolved))
            self.services.event(
                self.body, "Normal", "Accepted", f"{self.command} accepted as request {self.request_id}"
            )

        owner = await self.services.ledger.claim(self.namespace, self.request_id, self.uid, self.name)
        if owner.uid != self.uid:
            await self._duplicate(owner, resolved, stopped)
            return

        locked = needs_lock(self.spec)
        if locked and not self.status.execution:
            await self._wait_for_lock(queue, stopped)
        try:
            run = await self._start(window)
            if run is None:
                return
            result = await self._wait(run, stopped, deleted)
            await self._finish(result)
        finally:
            if locked and (self.status.finished or deleted()):
                await self.services.lock.release(self.namespace, self.group, self.uid)
                self.services.wakeup(queue_key(self.namespace, self.group)).set()

    def _resolve_window(self) -> tuple[str, RunSession | None]:
        """The window (auto: from the venue's session now) and that session; an explicit window runs
        without the calendar, so its session is recorded only when the calendar can tell."""
        window, at = self.spec.get("window", "auto"), datetime.datetime.now(datetime.UTC)
        try:
            calendar = self.services.settings.calendar.at(at)
            state = calendar.state(at)
        except CalendarError:
            if window == "auto":
                raise
            return window, None
        session = RunSession(venue=calendar.venue, state=state)
        return (calendar.windows[state] if window == "auto" else window), session

    # -- duplicates ----------------------------------------------------------
    async def _duplicate(self, owner: Entry, resolved: dict[str, Any], stopped: asyncio.Event) -> None:
        while owner.result is None:
            earlier_ns, _, earlier_name = owner.runbook.partition("/")
            earlier = await self.services.kube.get_runbook(earlier_ns, earlier_name)
            if earlier is None or earlier["metadata"]["uid"] != owner.uid:
                owner = dataclasses.replace(
                    owner, result=failure(ExitCode.CANCELLED, "the earlier run was deleted unfinished")
                )
                break
            if not self.status.duplicate_of:
                await self._patch(
                    transitions.waiting_for_original(
                        self.status, self.generation, owner.runbook, self.request_id
                    )
                )
            if await _wait(stopped, DUPLICATE_POLL_SECONDS):
                raise Stopped
            owner = await self.services.ledger.lookup(self.namespace, self.request_id) or owner
        await self._patch(
            transitions.duplicate(
                self.status, self.generation, earlier=owner.runbook, result=owner.result, **resolved
            )
        )
        self.services.event(
            self.body, "Normal", "Duplicate", f"request id {self.request_id} already ran as {owner.runbook}"
        )

    # -- the lock ------------------------------------------------------------
    async def _wait_for_lock(self, queue: Callable[[], Iterable[QueueEntry]], stopped: asyncio.Event) -> None:
        key = queue_key(self.namespace, self.group)
        shown = ""
        while True:
            waiting = list(queue())
            ahead = [e.name for e in ahead_of(waiting, self.uid)]
            holder = (
                None
                if ahead
                else await self.services.lock.acquire(self.namespace, self.group, self.uid, self.name)
            )
            if not ahead and holder is None:
                metrics.QUEUE_DEPTH.labels(key).set(max(0, queue_depth(waiting) - 1))  # minus this one
                return
            blocker = holder or ahead[0]
            message = f"waiting for {blocker} to finish on target {key} ({len(ahead) or 1} ahead)"
            if message != shown:
                shown = message
                await self._patch(transitions.queued(self.status, self.generation, message))
                self.services.event(self.body, "Normal", "Queued", message)
            metrics.QUEUE_DEPTH.labels(key).set(queue_depth(waiting))
            wakeup = self.services.wakeup(key)
            wakeup.clear()
            if await _wait(stopped, LOCK_POLL_SECONDS, wakeup):
                raise Stopped

    # -- running -------------------------------------------------------------
    async def _start(self, window: str) -> Run | None:
        request = RunRequest(
            self.namespace, self.name, self.uid, self.request_id, self.command, window, self.spec
        )
        try:
            run = await self.services.executor.start(request)
        except (ApiException, OSError) as error:
            detail = getattr(error, "reason", None) or str(error)
            await self._finish(failure(ExitCode.NOT_EXECUTED, f"could not start the run: {detail}"))
            return None
        if not self.status.execution:
            execution = Execution(executor=self.services.executor.kind, name=run.name)
            await self._patch(transitions.running(self.status, self.generation, execution, now()))
            self.services.event(self.body, "Normal", "Started", f"{self.command} started ({run.name})")
        return run

    async def _wait(self, run: Run, stopped: asyncio.Event, deleted: Callable[[], bool]) -> dict[str, Any]:
        async def on_logs(lines: list[dict[str, Any]]) -> None:
            await self._patch(transitions.progress_logs(lines))

        metrics.RUNNING.inc()
        waiting = asyncio.ensure_future(run.wait(on_logs))
        stop = asyncio.ensure_future(stopped.wait())
        try:
            await asyncio.wait({waiting, stop}, return_when=asyncio.FIRST_COMPLETED)
            if waiting.done():
                return waiting.result()
            if not deleted():
                waiting.cancel()
                raise Stopped
            await run.cancel()  # the Runbook was deleted: stop its run
            result = await waiting
            if result.get("exitCode") == ExitCode.CANCELLED:
                return result
            return failure(ExitCode.CANCELLED, "cancelled: the Runbook was deleted")
        finally:
            stop.cancel()
            metrics.RUNNING.dec()

    async def _finish(self, result: dict[str, Any]) -> None:
        await self._patch(transitions.finished(self.status, self.generation, result, dry_run=self.dry_run))
        await self.services.ledger.finish(self.namespace, self.request_id, self.uid, self.status)
        started, finished = parse_time(self.status.started_at), parse_time(self.status.finished_at)
        duration = (finished - started).total_seconds() if started and finished else 0.0
        metrics.record_finish(self.command, result, duration, dry_run=self.dry_run)
        code = self.status.exit_code
        kind = "Normal" if code == ExitCode.SUCCESS else "Warning"
        self.services.event(self.body, kind, reason_of(code), self.status.message or f"exit code {code}")


async def _wait(stopped: asyncio.Event, timeout: float, *others: asyncio.Event) -> bool:
    """Sleep up to ``timeout`` or until an event is set; True if ``stopped`` was set."""
    tasks = [asyncio.ensure_future(e.wait()) for e in (stopped, *others)]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    return stopped.is_set()
