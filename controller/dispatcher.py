"""The controller's queue, and the one dispatcher that decides what runs now.

Every unfinished Runbook in the controller's watch is one small :class:`Entry`: its spec, its status as last
seen, and where it stands. Finished Runbooks are not in the watch at all (its field selector, see
:mod:`controller.handlers`), so they cost nothing but their place in the API server's cache.

The dispatcher is driven by events (a watch event, the end of a step), never by polling:

- each new Runbook is admitted (:meth:`controller.runs.Runs.admit`: the ledger claim, then the gate of
  policies and approvals), a few at a time, oldest first, once kopf's listing of the Runbooks has been seen
  whole (:meth:`Dispatcher.listing_ended`), those the gate held before after the others
  (:attr:`Entry.admission`); a duplicate is settled there or parked until its
  original has finished; one beyond the namespace's cap of unfinished Runbooks fails instead
  (:mod:`controller.quota`); one the gate holds leaves its lane, holding nothing, and is admitted again
  when its wait ends or a policy or one of its approvals changes (:meth:`Dispatcher.gate_changed`);
- the Runbooks that need their target's lock wait in that target's lane, in order of arrival (oldest
  ``creationTimestamp`` first; within one second, the order in which a controller first saw them, its
  arrival stamp, which the ledger claim keeps across restarts); only the lane's head may take the lock,
  once no Runbook of its second behind it is still being admitted (its claim may place it earlier), unless
  one behind it holds the lock already (:meth:`Dispatcher._holder_first`), and
  each of the others shows, once, the Runbook it waits behind;
- at most ``max_parallel`` runs go on at once (local processes or Jobs alike), oldest first; a run that
  was going on before a restart is adopted first, whatever the limit.

When kopf's peering pauses this replica (another one with a higher priority is active), the dispatcher
pauses: its runs are left to the active replica (they go on; it adopts them), and it forgets its queue,
which the watch lists again when kopf resumes.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import enum
import heapq
import itertools
import logging
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from controller import metrics
from controller.ledger import Entry as Claim
from controller.ledger import Trimmer
from controller.quota import Cap, admitted_before
from controller.runs import GATE_WAITS, Next, Outcome, Runs, lock_group, queue_key, unstarted_stop
from controller.settings import ControllerSettings
from runbooks import keys
from runbooks.contract import Command
from runbooks.models import RunbookStatus

log = logging.getLogger(__name__)

ADMISSIONS = 4  # claims in flight at once
WRITERS = 4  # Queued statuses in flight at once
ERROR_RETRY_SECONDS = 5.0
FORGET_SECONDS = 60.0  # a settled entry waits this long (up to twice) for its last watch event


class Stage(enum.Enum):
    NEW = "new"  # seen, not admitted yet
    ADMITTING = "admitting"
    PARKED = "parked"  # a duplicate waiting for its original's result
    HELD = "held"  # held by the gate (its change window, its approvals): admitted again later
    WAITING = "waiting"  # admitted: waits for its lane's head and a slot
    READY = "ready"  # may start as soon as a slot is free
    RUNNING = "running"
    SETTLED = "settled"  # done: it leaves the watch


BUSY = (Stage.READY, Stage.RUNNING)


@dataclass(eq=False, slots=True)
class Entry:
    """What the controller keeps of an unfinished Runbook."""

    uid: str
    name: str
    namespace: str
    created: str
    seq: int  # arrival stamp: microseconds, strictly increasing (:meth:`Dispatcher.arrival`)
    spec: dict[str, Any]
    generation: int
    group: str
    raw_status: dict[str, Any]
    finalizers: list[str]
    deleting: bool = False
    stage: Stage = Stage.NEW
    claim: Claim | None = None
    status: RunbookStatus | None = None  # as the controller last wrote it (None: read raw_status)
    shown_behind: str = ""  # the Runbook its Queued status names
    left: bool = False  # it left the watch (deleted, or finished)
    gone: bool = False  # it no longer exists
    final: bool = False  # another controller replica finished it: nothing more is written to its status
    finishing: bool = False  # its finished status is being written: it leaves the watch
    # This controller put its finalizer on and has not taken it off: an event of an earlier write, handled
    # late, does not say that it went (the run's end would then leave it on a finished Runbook, which no
    # controller watches: deleted, it would never go).
    protected: bool = False
    cancel: asyncio.Event | None = None  # while it runs: set when the Runbook is deleted or cancelled
    regate: bool = False  # a policy or approval changed since the gate looked at it: look again
    held_before: bool = False  # the gate held it (its status said so when it came into view)
    gated_at: float = 0.0  # when the gate last let it through (the event loop's time)
    gated_by_policies: bool = False  # the namespace had RunbookPolicies then
    refused_since: float = 0.0  # when the API server first refused its Job (the event loop's time)
    retry_at: float = 0.0  # when its last RETRY asked to be tried again (the event loop's time)
    settled_at: float = 0.0  # when it settled (monotonic), for the sweep of leave events that never show
    orphan: bool = False  # taken from its claim: its Runbook went unseen (:meth:`Dispatcher.take_orphan`)

    @classmethod
    def from_body(cls, body: dict[str, Any], seq: int, settings: ControllerSettings) -> Entry:
        meta = body["metadata"]
        # Its keys shared with every other Runbook's (the schema's few names): each parsed body has its own.
        spec = {sys.intern(key): value for key, value in (body.get("spec") or {}).items()}
        return cls(
            uid=meta["uid"],
            name=meta["name"],
            namespace=meta["namespace"],
            created=meta.get("creationTimestamp", ""),
            seq=seq,
            spec=spec,
            generation=meta.get("generation", 1),
            group=lock_group(settings, spec.get("profile", "primary")),
            raw_status=body.get("status") or {},
            finalizers=list(meta.get("finalizers") or []),
            deleting=bool(meta.get("deletionTimestamp")),
            held_before=shows_held(body.get("status") or {}),
        )

    def update(self, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        self.raw_status = body.get("status") or {}
        if self.status is not None and self.status.execution is None and self.raw_status.get("execution"):
            # Another replica started the run and said so, while this one did not act (frozen: a replica
            # stopped past the peering lifetime wakes believing itself the active one). Its status is the one
            # to go on from: the run is adopted, never started again nor its Running written over (no write
            # of this controller's takes a run's execution away, so this is never its own, seen late).
            self.status = None
        self.finalizers = list(meta.get("finalizers") or [])
        if self.protected and keys.FINALIZER not in self.finalizers:
            self.finalizers.append(keys.FINALIZER)
        self.deleting = bool(meta.get("deletionTimestamp"))
        cancel = (body.get("spec") or {}).get("cancel")
        if cancel is not None:  # the one field of the spec set after its creation (once)
            self.spec["cancel"] = cancel
        if self.stop_asked and self.cancel is not None:
            self.cancel.set()

    @property
    def cancelled(self) -> bool:
        """Whether its ``spec.cancel`` is set: it never starts, or its run is stopped."""
        return self.spec.get("cancel") is not None

    @property
    def stop_asked(self) -> bool:
        """Deleted or cancelled: nothing of it starts, and its run, if one started, is stopped."""
        return self.deleting or self.cancelled

    @property
    def command(self) -> str:
        return self.spec["command"]

    @property
    def request_id(self) -> str:
        return self.spec.get("requestId") or self.name

    @property
    def needs_lock(self) -> bool:
        return Command(self.spec["command"]).mutating and not self.spec.get("dryRun", False)

    @property
    def target(self) -> str:
        return queue_key(self.namespace, self.group)

    @property
    def started(self) -> bool:
        return bool((self.status.execution if self.status else None) or self.raw_status.get("execution"))

    @property
    def order(self) -> tuple[int, str, int]:
        """First come, first served; a run that went on before a restart comes first of all."""
        return (0 if self.started else 1, self.created, self.seq)

    @property
    def admission(self) -> tuple[int, str, int]:
        """The order of admission: :attr:`order`, but a run the gate held before comes after every run it
        did not. Each look at a held run is a claim and a read of the policies, and a restart over a
        freeze's 2,000 held runs (or a policy change, which looks at all of them) kept a new run on
        another target waiting minutes behind them. Its place in its lane stays its :attr:`order`."""
        return (0 if self.started else 2 if self.held_before else 1, self.created, self.seq)


def shows_held(status: dict[str, Any]) -> bool:
    """Whether a status (as the watch shows it) says that the gate holds the run."""
    return any(
        condition.get("type") == "Succeeded" and condition.get("reason") in GATE_WAITS
        for condition in status.get("conditions") or ()
    )


class Lane:
    """The Runbooks of one target that need its lock, in order; the head alone may hold it."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.keys: list[tuple[int, str, int]] = []
        self.busy: Entry | None = None  # the head, once it may take the lock (until it is done)

    def add(self, entry: Entry) -> None:
        key = entry.order
        index = bisect.bisect(self.keys, key)
        self.keys.insert(index, key)
        self.entries.insert(index, entry)

    def remove(self, entry: Entry) -> Entry | None:
        """Take ``entry`` out; return the entry that was behind it (its predecessor changed)."""
        index = self.entries.index(entry)
        del self.entries[index]
        del self.keys[index]
        if self.busy is entry:
            self.busy = None
        return self.entries[index] if 0 < index < len(self.entries) else None

    def unsettled(self, head: Entry) -> bool:
        """Whether a Runbook of the head's second is still being admitted: its claim (made before a
        restart) may put it ahead."""
        for entry in itertools.islice(self.entries, 1, None):
            if entry.created != head.created or entry.started != head.started:
                return False
            if entry.stage in (Stage.NEW, Stage.ADMITTING):
                return True
        return False

    def ahead(self, entry: Entry) -> Entry | None:
        index = self.entries.index(entry)
        return self.entries[index - 1] if index else None

    def waiting(self) -> int:
        return len(self.entries) - (1 if self.busy is not None else 0)


class Dispatcher:
    def __init__(self, runs: Runs, settings: ControllerSettings):
        self.runs = runs
        self.settings = settings
        self.max_parallel = settings.max_parallel
        self.entries: dict[str, Entry] = {}
        self.lanes: dict[str, Lane] = {}
        self.fresh: list[tuple[tuple[int, str, int], str]] = []  # heap: NEW entries to admit
        self.ready: list[tuple[tuple[int, str, int], str]] = []  # heap: READY entries
        self.parked: dict[str, list[Entry]] = collections.defaultdict(list)  # original's uid -> duplicates
        self.held: dict[str, Entry] = {}  # uid -> an entry the gate holds
        # request id -> the unsettled entries that name it: an approval wakes its own runs, not a search
        self.requests: dict[str, list[Entry]] = collections.defaultdict(list)
        self.writes: collections.deque[Entry] = collections.deque()  # Queued statuses to show
        self.showing: set[str] = set()  # uids whose Queued status is being written
        self.dirty: set[str] = set()  # lanes to look at
        self.tasks: dict[str, asyncio.Task] = {}  # uid -> its step in progress
        self.running = 0
        self.admitting = 0
        self.last_arrival = 0
        self.paused = False
        # Nothing is admitted until every Runbook of kopf's listing (as it starts, as it resumes) was seen:
        # the runs let in before must be counted (:class:`Cap`) and queued ahead of newer ones first.
        self.listed = False
        self.seen: set[str] = set()  # the uids seen meanwhile
        self.unseen: set[str] | None = None  # those of the listing not seen yet (None: not listed yet)
        self.stopping = asyncio.Event()
        self.wakeup = asyncio.Event()
        self.orphan_look: asyncio.Task | None = None  # the last look for orphans (:meth:`_take_orphans`)
        self.sweep: asyncio.TimerHandle | None = None  # the next sweep of settled entries
        self.trimmer = Trimmer(runs.services.kube, settings.namespace, settings.ledger_size, self.named)
        self.cap = Cap(settings.max_unfinished_per_namespace)

    def arrival(self) -> int:
        """A new arrival stamp: the time in microseconds, later than every one given before (and than
        those of a controller before a restart, whose clock was earlier)."""
        self.last_arrival = max(self.last_arrival + 1, time.time_ns() // 1000)
        return self.last_arrival

    # -- what the other parts ask ----------------------------------------------------------------
    def named(self, request_id: str) -> bool:
        """Whether an unfinished Runbook names this request id (the ledger must remember it)."""
        return request_id in self.requests

    def in_view(self, uid: str) -> bool:
        entry = self.entries.get(uid)
        return entry is not None and entry.stage is not Stage.SETTLED

    # -- the watch --------------------------------------------------------------------------------
    def observe(self, kind: str | None, body: dict[str, Any]) -> None:
        """A watch event of a Runbook (``kind`` None: listed)."""
        meta = body["metadata"]
        if not self.listed:
            self.seen.add(meta["uid"])
            if self.unseen is not None:
                self.unseen.discard(meta["uid"])
                self._admit_once_listed()
        if self.paused:
            return  # events that sneaked in as kopf paused; the watch lists everything again on resume
        entry = self.entries.get(meta["uid"])
        if kind == "DELETED":
            if entry is not None:
                self._left(entry)
        elif entry is not None:
            was_asked = entry.stop_asked
            if entry.stage is not Stage.SETTLED:
                entry.update(body)
            if entry.stop_asked and not was_asked:
                self._stop_asked(entry)
        elif "command" in (body.get("spec") or {}):
            if meta.get("deletionTimestamp") and keys.FINALIZER not in (meta.get("finalizers") or ()):
                return  # deleted before it ran: it is gone in a moment
            entry = Entry.from_body(body, self.arrival(), self.settings)
            self.entries[entry.uid] = entry
            self.requests[entry.request_id].append(entry)
            self.cap.seen(entry)
            if entry.needs_lock:
                self._lane(entry).add(entry)
                self.dirty.add(entry.target)
            heapq.heappush(self.fresh, (entry.admission, entry.uid))
            self.wake()

    def _stop_asked(self, entry: Entry) -> None:
        """A Runbook with our finalizer was deleted, or one was cancelled: its next step, which starts
        nothing and stops what a controller started (or ends a cancelled duplicate that waits for its
        original), comes now, not when its wait would have ended (the gate's hold, up to
        ``HOLD_RECHECK_SECONDS``; a refused Job's next ask, up to 30 s; a slot; the original's end). A
        step in progress is followed by the next one at once (:meth:`_ended`)."""
        if entry.stage is Stage.HELD:
            self._unhold(entry)
        elif entry.stage is Stage.WAITING:
            self._again(entry)
        elif entry.stage is Stage.READY:  # it needs a slot no more: it goes first (:meth:`_make_ready`)
            self._make_ready(entry)
            self.wake()
        elif entry.stage is Stage.PARKED and entry.cancelled:  # admitted again: it waits no more
            entry.stage = Stage.NEW
            heapq.heappush(self.fresh, (entry.admission, entry.uid))
            self.wake()

    def listing_ended(self, uids: set[str]) -> None:
        """kopf listed the Runbooks ``uids``. kopf hands each to a worker of its own, which brings it here
        when it gets to it, in no set order: a new Runbook listed first (by name) was admitted before the
        runs let in before a restart were seen, and let in beyond the cap. Admission begins once each listed
        Runbook has been seen (a listing after it began, after a watch that could not resume, changes
        nothing). One that ends while paused is not counted: kopf lists again as it resumes.

        A listing after that (kopf lists again when its watch cannot resume: a 410 after the API server
        restarted) brings no event for the Runbooks that went meanwhile: one in view that it does not list
        was deleted, or finished by another replica, before it (it lists the unfinished ones), and is taken
        as having left the watch. Before, a run whose Runbook went by force in such a gap went on to its
        end, never stopped."""
        if self.paused:
            return
        if self.listed:
            for entry in [entry for uid, entry in self.entries.items() if uid not in uids]:
                if entry.stage is not Stage.SETTLED and not (entry.left or entry.finishing):
                    log.info("%s/%s is not listed again: it left the watch", entry.namespace, entry.name)
                    self._left(entry)
            return
        self.unseen = uids - self.seen
        self._admit_once_listed()

    def _admit_once_listed(self) -> None:
        if self.unseen is not None and not self.unseen:
            self.listed, self.seen, self.unseen = True, set(), None
            self.wake()
            self.orphan_look = asyncio.ensure_future(self._take_orphans(self.stopping))

    async def _take_orphans(self, epoch: asyncio.Event) -> None:
        """Once every unfinished Runbook is in view (as the controller starts, as it resumes), take the
        orphans that the ledger holds (:meth:`controller.runs.Runs.orphans`): one list of the unfinished
        claims, nothing per finished run."""
        while not epoch.is_set():  # set once paused: the active replica looks
            try:
                async for claim in self.runs.orphans(self.settings.namespace, self.in_view):
                    if not epoch.is_set():
                        self.take_orphan(claim)
                return
            except Exception:  # tried again: nobody else ends those runs
                log.exception(
                    "looking for the runs of Runbooks gone unseen failed; again in %.0fs", ERROR_RETRY_SECONDS
                )
                await asyncio.sleep(ERROR_RETRY_SECONDS)

    def take_orphan(self, claim: Claim) -> None:
        """Take the claim of a Runbook that went while no controller saw it (found after a listing, or by
        a duplicate's admission): its run, if one started, is stopped as a deleted Runbook's is, at once and
        without a lock or a slot (:meth:`controller.runs.Runs.run`), its end recorded for its request id and
        its lock released; one that provably never started frees its request id. The duplicates of its
        request id wait for that (parked)."""
        known = self.entries.get(claim.uid)
        if self.paused or (known is not None and known.stage is not Stage.SETTLED):
            return
        namespace, _, name = claim.runbook.partition("/")
        spec = {**claim.asked, "command": claim.command, "requestId": claim.request_id}
        entry = Entry(
            uid=claim.uid,
            name=name,
            namespace=namespace,
            created="",
            seq=claim.arrival,
            spec=spec,
            generation=1,
            group=claim.annotations.get(keys.LOCK_GROUP, "default"),
            raw_status={},
            finalizers=[],
            deleting=True,
            claim=claim,
            left=True,
            gone=True,
            orphan=True,
        )
        log.warning(
            "%s/%s went while no controller saw it: its run, if one started, is stopped and its end recorded",
            namespace,
            name,
        )
        self.entries[entry.uid] = entry
        self.requests[entry.request_id].append(entry)
        self._make_ready(entry)
        self.wake()

    def _left(self, entry: Entry) -> None:
        """The Runbook left the watch: it finished (our doing, or another replica's) or was deleted."""
        entry.left = True
        if entry.stage is Stage.SETTLED:
            self.entries.pop(entry.uid, None)
        elif entry.finishing:
            pass  # its last step settles it
        elif entry.stage is Stage.RUNNING:
            # A run holds its finalizer: a forced deletion took it away, or another replica finished it
            # (kopf's peering settling); the run tells which (:meth:`controller.runs.Runs.run`).
            if entry.cancel is not None:
                entry.cancel.set()
        elif entry.uid not in self.tasks:
            self._check(entry)

    def _check(self, entry: Entry) -> None:
        """A Runbook that left the watch before it ran. One an earlier controller let in (a run the gate
        held, which this one admits after the new ones) claimed its request id, also if this one has not
        admitted it yet."""
        if entry.claim is None and not admitted_before(entry):
            self._settle(entry, gone=True)
        else:
            self._spawn(entry, self._check_gone(entry))

    async def _check_gone(self, entry: Entry) -> Next:
        """One read tells a deletion from a finish by someone else; a deleted one frees its claim, unless
        its run may have started: that is stopped first (:meth:`controller.runs.Runs.stop_unseen`)."""
        body = await self.runs.services.kube.get_runbook(entry.namespace, entry.name)
        if body is not None and body["metadata"]["uid"] == entry.uid:
            return Next(Outcome.SETTLED)  # finished elsewhere: nothing of it is ours any more
        entry.gone = True
        if await self.runs.stop_unseen(entry):
            return Next(Outcome.OWNER)  # ready at once: a stop needs no lock nor slot (unstarted_stop)
        await self.runs.release_claim(entry)
        return Next(Outcome.GONE)

    def gate_changed(self, request_id: str | None = None) -> None:
        """A RunbookPolicy changed (``request_id`` None) or a RunbookApproval of ``request_id`` did: the
        runs it may concern pass the gate again: those it holds at once, those at the gate now once more
        after it, and those it let through before they start (:meth:`controller.runs.Runs.run`)."""
        if self.paused:
            return
        # An approval concerns only the runs of its request (none for a finished run's: a listing brings
        # them all), found without a look at every run: a burst of approvals over as many held runs cost
        # the event loop seconds of CPU (quadratic) when each looked at them all.
        concerned = self.entries.values() if request_id is None else self.requests.get(request_id, ())
        for entry in list(concerned):
            if entry.stage is Stage.HELD:
                self._unhold(entry)
            elif not entry.started:  # let through, not started: asked again before it starts
                entry.regate = True

    # -- kopf's peering ---------------------------------------------------------------------------
    def pause(self) -> None:
        """kopf paused the operator (another replica is active) or is stopping it."""
        if self.paused:
            return
        log.info("pausing (kopf pauses or stops the operator): runs going on are left as they are")
        self.paused = True
        self.listed, self.seen, self.unseen = False, set(), None  # the watch lists everything again
        self.stopping.set()
        self.runs.services.lock.forget()  # the active replica writes the Leases meanwhile
        self.entries.clear()
        self.lanes.clear()
        self.fresh.clear()
        self.ready.clear()
        self.parked.clear()
        self.held.clear()
        metrics.HELD.set(0)
        self.requests.clear()
        self.cap.clear()
        self.writes.clear()
        self.dirty.clear()

    def resume(self) -> None:
        if not self.paused:
            return
        log.info("resuming: this controller is the active one")
        self.paused = False
        self.stopping = asyncio.Event()
        self.wake()

    # -- the loop ---------------------------------------------------------------------------------
    def wake(self) -> None:
        self.wakeup.set()

    async def run(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            if not self.paused:
                self._dispatch()

    def _idle(self, uid: str) -> bool:
        return uid not in self.tasks and uid not in self.showing

    def _dispatch(self) -> None:
        while self.listed and self.fresh and self.admitting < ADMISSIONS:
            _, uid = heapq.heappop(self.fresh)
            entry = self.entries.get(uid)
            if entry is not None and entry.stage is Stage.NEW and self._idle(uid):
                entry.stage = Stage.ADMITTING
                entry.regate = False
                self.admitting += 1
                if self.cap.admit(entry):
                    self._spawn(entry, self.runs.admit(entry, self.in_view))
                else:
                    self._spawn(entry, self.cap.refuse(self.runs, entry, self.in_view))
        for target in self.dirty:
            self._advance(target)
        self.dirty.clear()
        while self.ready:
            _, uid = self.ready[0]
            entry = self.entries.get(uid)
            if entry is None or entry.stage is not Stage.READY:
                heapq.heappop(self.ready)
                continue
            if not self._idle(uid) or (
                self.running >= self.max_parallel and not (entry.started or unstarted_stop(entry))
            ):
                break  # the oldest waits for its Queued status to be written, or for a slot
            heapq.heappop(self.ready)
            entry.stage = Stage.RUNNING
            entry.cancel = asyncio.Event()
            if entry.stop_asked or entry.gone:
                entry.cancel.set()
            self.running += 1
            self._spawn(entry, self.runs.run(entry, self.stopping))
        while self.writes and len(self.showing) < WRITERS:
            entry = self.writes.popleft()
            lane = self.lanes.get(entry.target)
            ahead = lane.ahead(entry) if lane is not None and entry in lane.entries else None
            if entry.stage is Stage.WAITING and ahead is not None and ahead.name != entry.shown_behind:
                entry.shown_behind = ahead.name
                self.showing.add(entry.uid)
                task = asyncio.ensure_future(self.runs.show_queued(entry, ahead.name))
                task.add_done_callback(lambda done, uid=entry.uid: self._shown(uid, done))

    def _advance(self, target: str) -> None:
        """Let the lane's head take the lock when nobody ahead holds it, and its last try's wait is over (a
        lock held outside the lane, a refused Job's next ask): the lane's other events (an arrival, a Queued
        status written) made it try again at once, a Lease and a Runbook read, or a Job create, each time."""
        lane = self.lanes.get(target)
        if lane is None:
            return
        if lane.busy is None and lane.entries:
            head = lane.entries[0]
            if (
                head.stage is Stage.WAITING
                and self._idle(head.uid)
                and not head.retry_at
                and not lane.unsettled(head)
            ):
                lane.busy = head
                self._make_ready(head)
        metrics.QUEUE_DEPTH.labels(target).set(lane.waiting())

    def _make_ready(self, entry: Entry) -> None:
        """Ready to start as soon as a slot is free; one that starts nothing (:func:`unstarted_stop`) needs
        none, and goes first with the runs adopted after a restart."""
        entry.stage = Stage.READY
        key = (0, entry.created, entry.seq) if unstarted_stop(entry) else entry.order
        heapq.heappush(self.ready, (key, entry.uid))

    def _show_queued(self, entry: Entry) -> None:
        self.writes.append(entry)
        self.wake()

    def _shown(self, uid: str, task: asyncio.Task) -> None:
        self.showing.discard(uid)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a Queued status was not written: %s", task.exception())
        entry = self.entries.get(uid)
        if entry is not None and entry.needs_lock:  # its lane was passed over while it was being written
            self.dirty.add(entry.target)
        self.wake()

    # -- steps and their outcomes -----------------------------------------------------------------
    def _spawn(self, entry: Entry, step: Coroutine[Any, Any, Next]) -> None:
        epoch, asked = self.stopping, entry.stop_asked
        task = asyncio.ensure_future(self._step(step))
        self.tasks[entry.uid] = task
        task.add_done_callback(lambda done: self._ended(entry, epoch, done, asked))

    @staticmethod
    async def _step(step: Coroutine[Any, Any, Next]) -> Next:
        try:
            return await step
        except Exception:
            log.exception("a step failed; it is tried again in %.0fs", ERROR_RETRY_SECONDS)
            return Next(Outcome.RETRY, ERROR_RETRY_SECONDS)

    def _ended(self, entry: Entry, epoch: asyncio.Event, task: asyncio.Task, asked: bool) -> None:
        """A step ended: the entry goes on as its outcome says. ``asked``: whether the Runbook was being
        deleted or was cancelled as the step began; a deletion or cancel seen meanwhile did not wake it
        (:meth:`_stop_asked`), so its next step comes at once."""
        if self.tasks.get(entry.uid) is task:
            del self.tasks[entry.uid]
        stage = entry.stage
        if stage is Stage.ADMITTING:
            self.admitting -= 1
        elif stage is Stage.RUNNING:
            self.running -= 1
            entry.cancel = None
        self.wake()
        if epoch is not self.stopping or task.cancelled() or self.entries.get(entry.uid) is not entry:
            return  # paused meanwhile: the entry is forgotten, the watch brings it again
        outcome = task.result()
        asked_meanwhile = entry.stop_asked and not asked
        if outcome.outcome is Outcome.OWNER:
            entry.stage = Stage.WAITING
            self._place(entry)
            if not entry.needs_lock or unstarted_stop(entry):  # no turn to wait for
                self._make_ready(entry)
            else:
                self.dirty.add(entry.target)
                if self.lanes[entry.target].ahead(entry) is not None:
                    self._show_queued(entry)
        elif outcome.outcome is Outcome.HELD:
            self._leave_lane(entry)
            entry.stage = Stage.HELD
            entry.held_before = True
            self.held[entry.uid] = entry
            metrics.HELD.set(len(self.held))
            delay = 0.0 if entry.regate or asked_meanwhile else outcome.delay
            asyncio.get_running_loop().call_later(delay, self._unhold, entry)
        elif outcome.outcome is Outcome.PARKED:
            self._leave_lane(entry)
            entry.stage = Stage.PARKED
            if outcome.orphan is not None:
                self.take_orphan(outcome.orphan)
            self.parked[outcome.owner].append(entry)
            if not self.in_view(outcome.owner):  # not in view yet: look again in a while
                asyncio.get_running_loop().call_later(ERROR_RETRY_SECONDS, self._unpark, outcome.owner)
            if asked_meanwhile:
                self._stop_asked(entry)
        elif outcome.outcome in (Outcome.SETTLED, Outcome.GONE):
            self._settle(entry, gone=outcome.outcome is Outcome.GONE)
            return
        elif outcome.outcome is Outcome.RETRY:
            self._retry(entry, stage, 0.0 if asked_meanwhile else outcome.delay)
            if outcome.holder:
                self._holder_first(entry.target, outcome.holder)
        if (
            entry.left
            and not entry.finishing
            and self._idle(entry.uid)
            and not (entry.gone and entry.deleting)
        ):
            self._check(entry)  # it left during the step (one known gone and deleted: its stop comes next)

    def _place(self, entry: Entry) -> None:
        """An admitted entry takes the arrival its claim recorded (a controller before a restart saw
        it first)."""
        arrival = entry.claim.arrival if entry.claim is not None else 0
        if not arrival or arrival == entry.seq:
            return
        lane = self.lanes.get(entry.target) if entry.needs_lock else None
        if lane is not None and entry in lane.entries:
            lane.remove(entry)
            entry.seq = arrival
            lane.add(entry)
        else:
            entry.seq = arrival

    def _retry(self, entry: Entry, stage: Stage, delay: float) -> None:
        entry.stage = Stage.NEW if stage is Stage.ADMITTING else Stage.WAITING
        lane = self.lanes.get(entry.target)
        if lane is not None and lane.busy is entry:
            lane.busy = None
        loop = asyncio.get_running_loop()
        entry.retry_at = loop.time() + delay
        loop.call_later(delay, self._again, entry)

    def _holder_first(self, target: str, name: str) -> None:
        """The lane's head waits for a lock that a Runbook behind it holds without having started: the
        holder took it while the head, older, was held at the gate (and its Job is refused for now), or a
        controller killed before it started the holder's run gave it the lock. The holder goes first (nobody
        else can take the lock until it is done): else each waits for the other for ever. Not before its own
        retry is due (a refused Job is asked again less and less often), else at each of the head's asks."""
        lane = self.lanes.get(target)
        if lane is None or lane.busy is not None:
            return
        now = asyncio.get_running_loop().time()
        for entry in lane.entries:
            if entry.name == name and entry.stage is Stage.WAITING and self._idle(entry.uid):
                if entry.retry_at <= now:
                    lane.busy = entry
                    self._make_ready(entry)
                return

    def _again(self, entry: Entry) -> None:
        """Its wait is over (or a deletion or cancel cut it short): its next step may come; if a step of it
        is in progress, or its Queued status is being written, when that ends (:meth:`_ended`,
        :meth:`_shown`)."""
        if self.entries.get(entry.uid) is not entry:
            return
        entry.retry_at = 0.0
        if not self._idle(entry.uid):
            return
        if entry.stage is Stage.NEW:
            heapq.heappush(self.fresh, (entry.admission, entry.uid))
        elif entry.stage is Stage.WAITING:
            if entry.needs_lock and not unstarted_stop(entry):
                self.dirty.add(entry.target)
            else:
                self._make_ready(entry)
        self.wake()

    def _unhold(self, entry: Entry) -> None:
        """A held entry's wait is over (or something it waits for changed): admitted again, in its lane."""
        if (
            self.held.get(entry.uid) is not entry
            or entry.stage is not Stage.HELD
            or not self._idle(entry.uid)
        ):
            return
        del self.held[entry.uid]
        metrics.HELD.set(len(self.held))
        entry.stage = Stage.NEW
        if entry.needs_lock:
            self._lane(entry).add(entry)
            self.dirty.add(entry.target)
        heapq.heappush(self.fresh, (entry.admission, entry.uid))
        self.wake()

    def _settle(self, entry: Entry, gone: bool) -> None:
        """The entry is done: out of its lane, and its duplicates get their result (or their turn)."""
        self.cap.left(entry.uid)
        if self.held.pop(entry.uid, None) is not None:
            metrics.HELD.set(len(self.held))
        if entry.stage is not Stage.SETTLED:
            named = self.requests[entry.request_id]
            named.remove(entry)
            if not named:
                del self.requests[entry.request_id]
        self._leave_lane(entry)
        entry.stage = Stage.SETTLED
        if gone or entry.left:
            self.entries.pop(entry.uid, None)
        else:  # until the watch sees it leave (soon): its late events must not bring it back
            entry.settled_at = time.monotonic()
            self._sweep_later()
        claim = entry.claim
        if claim is not None and claim.uid == entry.uid:
            if claim.result is not None:
                self.trimmer.note_finished()
            self._unpark(entry.uid)

    def _leave_lane(self, entry: Entry) -> None:
        lane = self.lanes.get(entry.target)
        if lane is None or entry not in lane.entries:
            return
        behind = lane.remove(entry)
        if behind is not None and behind.stage is Stage.WAITING:
            self._show_queued(behind)
        self.dirty.add(entry.target)
        if not lane.entries:
            metrics.QUEUE_DEPTH.labels(entry.target).set(0)
            del self.lanes[entry.target]

    def _sweep_later(self) -> None:
        if self.sweep is None:
            self.sweep = asyncio.get_running_loop().call_later(FORGET_SECONDS, self._sweep)

    def _sweep(self) -> None:
        """Forget the settled entries whose leave event never showed. One timer for them all: a timer per
        run would keep something of every run of a burst alive that long after it, scattered through
        the memory the burst took, which could then not be given back."""
        self.sweep = None
        expired = time.monotonic() - FORGET_SECONDS
        settled = [entry for entry in self.entries.values() if entry.stage is Stage.SETTLED]
        for entry in settled:
            if entry.settled_at <= expired:
                del self.entries[entry.uid]
        if any(entry.settled_at > expired for entry in settled):
            self._sweep_later()

    def _unpark(self, owner: str) -> None:
        """The original finished, left or never came into view: its duplicates are admitted again (and
        shown its result, or claim the request id that it freed)."""
        for entry in self.parked.pop(owner, []):
            if self.entries.get(entry.uid) is entry and entry.stage is Stage.PARKED:
                entry.stage = Stage.NEW
                if entry.needs_lock:
                    self._lane(entry).add(entry)
                heapq.heappush(self.fresh, (entry.admission, entry.uid))
        self.wake()

    def _lane(self, entry: Entry) -> Lane:
        lane = self.lanes.get(entry.target)
        if lane is None:
            lane = self.lanes[entry.target] = Lane()
        return lane
