"""One Runbook's way from admitted to finished: the controller's domain logic, free of kopf.

The dispatcher (:mod:`controller.dispatcher`) decides *when*; this module does each step, level-based:
run again after a restart (or after an error), every step looks at what is done already and picks up
from there. Every request id runs at most once: the ledger claim decides who may run, the executor's
idempotent start adopts a run that already started.

The steps, and the writes each makes (a trivial run: two status patches, two finalizer patches, three
ledger writes and two Events):

1. :meth:`Runs.admit`: the ledger claim, saying that its run has not started. A duplicate is settled here
   (it shows the earlier result, or waits for it, parked, holding nothing). Then :meth:`Runs.gate`, the
   namespace's RunbookPolicies and the request's RunbookApprovals, before the Runbook joins its target's
   lane and takes the lock: it passes, is held (outside its change window, or awaiting approvals; holding
   nothing, looked at again when its wait ends or a policy or approval changes) or ends without executing
   (refused, rejected, expired).
2. :meth:`Runs.run`: the target's lock (for mutating runs), the finalizer (so that a deletion stops the
   run, also while no controller runs), what the run will run in prepared (a folder, a suspended Job), then
   the claim's mark taken off, the executor's start (a Job let run: one patch) and one status patch
   (Running, with the request id, the resolved window and the target); then the run's log lines, patched
   as they come (debounced, coalesced); then :meth:`Runs.finish`.
3. :meth:`Runs.finish`: the result into the ledger first (the record that the request ran), the Job
   left to its TTL, the finalizer removed, and last the finished status, which takes the Runbook out of
   the controller's watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from controller import audit, ledger, metrics, transitions
from controller.events import Events, Ref
from controller.executors import Executor, Run, RunbookGone, RunRequest, failure
from controller.kubeapi import ApiError, Final, KubeApi, NamespaceTerminating, Started
from controller.lock import TargetLock
from controller.settings import ControllerSettings
from runbooks import approval, keys, policy
from runbooks.calendar import CalendarError
from runbooks.contract import ExitCode, Reason, now, parse_time, reason_of
from runbooks.models import (
    Execution,
    RunbookSpec,
    RunbookStatus,
    RunSession,
    other_parameters,
    request_fingerprint,
)

if TYPE_CHECKING:
    from controller.dispatcher import Entry

log = logging.getLogger(__name__)

LOCK_RETRY_SECONDS = 2.0
WINDOW_RETRY_SECONDS = 30.0
UNREADABLE_RETRY_SECONDS = 10.0  # a Runbook whose request id's claim cannot be read looks at it again
START_RETRY_SECONDS = 1.0  # a run whose Job the API server refused asks again after this, then less often
# A held run is looked at again at the latest after this long, whatever its wait: a safety net for a
# missed watch event or a clock that jumped (the wait's end is a wall-clock time, asyncio's timers are not).
HOLD_RECHECK_SECONDS = 300.0
# A run the gate let through longer ago than this (it waited for its lock or a slot) is asked again just
# before it starts, if the namespace has policies: a window may have closed, a blackout begun meanwhile.
REGATE_AFTER_SECONDS = 1.0
LOG_DEBOUNCE_SECONDS = 0.15


class Outcome(enum.Enum):
    OWNER = "owner"  # admitted: it owns its request id and may run
    # owns its request id, but the gate holds it; or its request id's claim cannot be read (edited by hand):
    # out of its target's lane, holding nothing, admitted again after ``delay``
    HELD = "held"
    PARKED = "parked"  # a duplicate whose original has not finished: it waits for that result
    SETTLED = "settled"  # finished (or shown as a duplicate): it leaves the watch
    GONE = "gone"  # the Runbook no longer exists
    RETRY = "retry"  # not now: again after ``delay``
    STOPPED = "stopped"  # the controller pauses or stops: the next one picks up from here


@dataclass(frozen=True)
class Next:
    outcome: Outcome
    delay: float = 0.0
    owner: str = ""  # PARKED: the uid of the original
    # PARKED: the original's claim if its Runbook went unseen: its run is ended first (Dispatcher.take_orphan)
    orphan: ledger.Entry | None = None
    holder: str = ""  # RETRY: the name of the Runbook that holds the lock it waits for


GATE_WAITS = (Reason.OUTSIDE_CHANGE_WINDOW, Reason.AWAITING_APPROVAL)
# The ends a run reaches by itself (its script's, or its timeout's); never what stopping it reports.
OWN_ENDS = frozenset(
    {
        ExitCode.SUCCESS,
        ExitCode.SCRIPT_FAILED,
        ExitCode.INVALID_ARGUMENTS,
        ExitCode.GATE_FAILED,
        ExitCode.TIMEOUT,
    }
)


def stop_message(cancel: dict[str, Any] | None) -> str:
    """Why a run was stopped: its ``spec.cancel`` (who, why), else its Runbook's deletion."""
    if cancel is not None:
        return transitions.cancel_message(cancel, started=True)
    return "cancelled: the Runbook was deleted"


def after_stop(result: dict[str, Any], cancel: dict[str, Any] | None) -> dict[str, Any]:
    """The result of a run stopped because its Runbook was deleted, or cancelled (``cancel``: its
    ``spec.cancel``): the end it had reached when the stop came (it finished as the stop did: that is what
    happened), the runner's own report of the stop (a cancel's saying who cancelled and why), or, when the
    stop left no report (a runner killed, a Job gone), cancelled."""
    if result.get("exitCode") in OWN_ENDS:
        return result
    if result.get("exitCode") == ExitCode.CANCELLED:
        return result if cancel is None else {**result, "message": stop_message(cancel)}
    return failure(ExitCode.CANCELLED, stop_message(cancel))


def stopped_result(entry: Entry, result: dict[str, Any]) -> dict[str, Any]:
    """The result of a deleted or cancelled Runbook's run, however it came: stopped here (:meth:`Runs._wait`),
    found ended as the stop was asked (its runner killed meanwhile: no report of its own), or found lost (a
    controller stopping it, its Job deleted in the foreground or its run folder removed, died before it
    recorded that): as :func:`after_stop` says, a lost one's message saying what was found."""
    if not entry.stop_asked:
        return result
    cancel = entry.spec.get("cancel")
    if result.get("reason") == Reason.LOST:
        return failure(ExitCode.CANCELLED, f"{stop_message(cancel)}; {result['message']}")
    return after_stop(result, cancel)


def vote(item: dict[str, Any]) -> approval.Vote:
    """A RunbookApproval as the count sees it."""
    spec = item["spec"]
    at = parse_time(item["metadata"]["creationTimestamp"])
    assert at is not None
    return approval.Vote(
        spec["approver"],
        spec["decision"],
        at,
        spec["requester"],
        spec.get("comment", ""),
        spec.get("runbookUid", ""),
    )


def unstarted_stop(entry: Entry) -> bool:
    """A deleted or cancelled Runbook whose status names no run: it starts nothing, and a run a controller
    started before its status said so is only looked for and stopped. It needs no lock for that, nor to
    wait for a run on its target that holds it (the gate may have held it, holding no lock, while that run
    took it), nor for a slot."""
    return entry.stop_asked and Runs.status(entry).execution is None


def lock_group(settings: ControllerSettings, profile: str) -> str:
    return settings.lock_groups.get(profile, "default")


def queue_key(namespace: str, group: str) -> str:
    return f"{namespace}/{group}"


def apply(status: RunbookStatus, change: RunbookStatus) -> RunbookStatus:
    """The status after the merge patch ``change``, as the API server stores it (top-level fields)."""
    return status.model_copy(update={name: getattr(change, name) for name in change.model_fields_set})


@dataclass
class Services:
    settings: ControllerSettings
    kube: KubeApi
    ledger: ledger.Ledger
    lock: TargetLock
    executor: Executor
    events: Events


class LogPublisher:
    """Puts a running run's newest log lines into its status: ``LOG_DEBOUNCE_SECONDS`` after they change,
    with at most one patch in flight, the newest lines winning; so a chatty script costs the API server a
    few patches a second, and a quiet one none."""

    def __init__(self, publish: Callable[[], Awaitable[None]]):
        self.publish = publish
        self.dirty = False
        self.closed = False
        self.sleeping = False
        self.task: asyncio.Task | None = None

    def changed(self) -> None:
        self.dirty = True
        if not self.closed and (self.task is None or self.task.done()):
            self.task = asyncio.ensure_future(self._loop())

    async def _loop(self) -> None:
        while self.dirty and not self.closed:
            self.sleeping = True
            await asyncio.sleep(LOG_DEBOUNCE_SECONDS)
            self.sleeping = False
            self.dirty = False
            with contextlib.suppress(ApiError):  # the next change, or the finished status, shows them
                await self.publish()

    async def close(self) -> None:
        """Stop publishing (the finished status carries the last lines); a patch in flight completes
        first, so that it never lands after the status that follows."""
        self.closed = True
        if self.task is None:
            return
        if self.sleeping:
            self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class Runs:
    def __init__(self, services: Services):
        self.services = services

    # -- status and Events ---------------------------------------------------------------------
    @staticmethod
    def status(entry: Entry) -> RunbookStatus:
        """The status as the controller last wrote it, else as the watch last showed it: read each time, not
        kept (a model costs 1 KB, and a burst's runs mostly wait before anything of theirs is written)."""
        return entry.status if entry.status is not None else RunbookStatus.read(entry.raw_status)

    async def patch(self, entry: Entry, change: RunbookStatus) -> bool:
        """Apply ``change`` to the status (the controller writes it whole: it is its only writer); False
        if the Runbook no longer exists (``entry.gone``) or another replica finished it (``entry.final``)."""
        if entry.final:
            return False
        status = apply(self.status(entry), change)
        # A status that names no run, written over one that does, would hide a run another replica started
        # while this one did not see it (frozen: it wakes believing itself the active one, with its old view):
        # written only while the status names none, and the finished status is final anyway.
        unstarted = None
        if self.status(entry).execution is None and not status.finished:
            unstarted = entry.status is not None or bool(entry.raw_status)  # whether it saw a status
        try:
            ok = await self.services.kube.put_status(
                entry.namespace, entry.name, entry.uid, status.to_k8s(), unstarted
            )
        except Started as started:
            log.warning(
                "%s/%s: another replica started its run meanwhile: its status stands",
                entry.namespace,
                entry.name,
            )
            entry.update(started.body)  # its Running is the status to go on from (Entry.update)
            return True
        except Final:
            log.warning(
                "%s/%s has a final status already (another replica's, or an earlier attempt's of this run)",
                entry.namespace,
                entry.name,
            )
            entry.final = True
            return False
        entry.status = status
        entry.gone = entry.gone or not ok
        return ok

    def event(
        self,
        entry: Entry,
        kind: str,
        reason: str,
        message: str,
        *,
        status: RunbookStatus | None = None,
        post: bool = True,
    ) -> None:
        """A transition: its audit line (``status``: the one it ends with, if not the one last written)
        and, if ``post``, its Event."""
        audit.write(
            audit.line(reason, entry.namespace, entry.name, entry.spec, status or self.status(entry), message)
        )
        if post:
            self.services.events.post(Ref(entry.namespace, entry.name, entry.uid), kind, reason, message)

    async def show_queued(self, entry: Entry, behind: str) -> None:
        """A Runbook waiting for its target's lock shows which Runbook it waits behind."""
        message = f"waiting for {behind} to finish on target {entry.target}"
        change = transitions.queued(self.status(entry), entry.generation, message)
        change.request_id, change.target = entry.request_id, entry.target
        if await self.patch(entry, change):
            self.event(entry, "Normal", "Queued", message)

    # -- 1. admission --------------------------------------------------------------------------
    async def admit(self, entry: Entry, in_view: Callable[[str], bool]) -> Next:
        """Claim the request id; settle or park a duplicate. A run the gate held owns its claim already: it
        is looked at again without claiming it again (a failed create and a read of its Lease each time,
        twice the gate's own cost, for every held run at each look and in the herd at a freeze's end)."""
        request = request_fingerprint(entry.spec)
        try:
            claim = entry.claim or await self.services.ledger.claim(
                entry.namespace,
                entry.request_id,
                entry.uid,
                entry.name,
                entry.seq,
                request,
                entry.group,
                entry.spec,
            )
        except ledger.UnreadableClaim as error:
            return await self._unreadable(entry, error)
        if (
            claim.uid != entry.uid
            and claim.unstarted
            and not in_view(claim.uid)
            and await self._earlier(claim) is None
        ):
            # That Runbook never started (it waited: for its lock, a slot, the gate), and it was deleted
            # while no controller ran (it had no finalizer: it went at once): its request id is free.
            await self.services.ledger.release(claim, entry.namespace)
            return await self.admit(entry, in_view)
        if claim.uid != entry.uid and claim.other_request(request):  # never shown another request's result
            message = other_parameters(entry.request_id, claim.runbook)
            refused = failure(ExitCode.INVALID_ARGUMENTS, message)
            return await self.settle_duplicate(entry, claim, refused, message)
        if claim.uid == entry.uid:
            if not claim.recorded and not entry.deleting:  # its namespace is being deleted: so is it, soon
                return Next(Outcome.RETRY, LOCK_RETRY_SECONDS)
            entry.claim = await self._unstarted_again(entry, claim)
            verdict = await self.gate(entry)
            if verdict.outcome is Outcome.HELD and entry.needs_lock:
                # A controller killed after taking the lock and before the gate held it leaves the lock
                # taken (so does one whose Job was refused): a held run holds no lock, else its target's
                # other runs wait for the hold's end.
                await self.services.lock.release_if_held(entry.namespace, entry.group, entry.uid)
            return verdict
        if claim.result is not None:
            return await self.settle_duplicate(entry, claim)
        if entry.cancelled:  # a duplicate that would wait for its original's result: it ends now
            await self._end_unstarted(entry, self._cancelled(entry))
            return Next(Outcome.SETTLED)
        if in_view(claim.uid):  # the original runs (or waits) here: wait for its result, holding nothing
            return await self._park(entry, claim)
        earlier = await self._earlier(claim)
        if earlier is None:  # deleted by force, unseen, after its run may have started: it is ended first
            if claim.command:
                return Next(Outcome.PARKED, owner=claim.uid, orphan=claim)
            # A claim made before claims named their command: its run cannot be ended here.
            cancelled = failure(ExitCode.CANCELLED, "the earlier run was deleted unfinished")
            return await self.settle_duplicate(entry, claim, cancelled)
        status = RunbookStatus.read(earlier.get("status") or {})
        if status.finished:  # finished, but its result never reached the ledger: it does now
            claim = await self.services.ledger.finish(claim, entry.namespace, status.to_k8s())
            return await self.settle_duplicate(entry, claim)
        return await self._park(entry, claim)  # it comes into view soon

    async def _unreadable(self, entry: Entry, error: ledger.UnreadableClaim) -> Next:
        """Its request id's claim cannot be read (edited by hand): whether that request id ran, and how,
        cannot be told, so the Runbook is held, its status saying why, and looked at again now and then (the
        Lease mended, or deleted to free the request id). As a run the gate holds, it holds up no other run
        of its target."""
        log.warning("%s/%s waits: %s", entry.namespace, entry.name, error)
        change = transitions.pending_because(
            self.status(entry), entry.generation, f"cannot be admitted: {error}"
        )
        if apply(self.status(entry), change) != self.status(entry) and not await self.patch(entry, change):
            return Next(Outcome.GONE)
        return Next(Outcome.HELD, UNREADABLE_RETRY_SECONDS)

    async def _unstarted_again(self, entry: Entry, claim: ledger.Entry) -> ledger.Entry:
        """The own claim, saying again that its run has not started if that is so: a claim made before
        claims carried the mark (a controller upgraded while runs waited) leaves a run that waits without
        a finalizer, unseen if it is deleted while no controller runs. Without the finalizer, and with no
        run in its status nor found by the executor, it has not started. The Runbook is read again first:
        this controller's view may be old (a paused replica sees no more events), and the claim read since
        may lack the mark because the active replica put the finalizer on, took the mark off and is starting
        the run (its Job still suspended); a mark put on then says "not started" of a run going on."""
        if (
            claim.unstarted
            or claim.result is not None
            or keys.FINALIZER in entry.finalizers
            or entry.deleting
            or self.status(entry).execution is not None
            or await self.services.executor.find(self.request(entry)) is not None
        ):
            return claim
        current = await self.services.kube.get_runbook(entry.namespace, entry.name)
        if (
            current is None
            or current["metadata"]["uid"] != entry.uid
            or keys.FINALIZER in (current["metadata"].get("finalizers") or ())
            or (current.get("status") or {}).get("execution")
        ):
            return claim
        return await self.services.ledger.mark_unstarted(claim, entry.namespace, unstarted=True)

    async def _earlier(self, claim: ledger.Entry) -> dict[str, Any] | None:
        """The Runbook that made ``claim``; None if it is gone."""
        namespace, _, name = claim.runbook.partition("/")
        earlier = await self.services.kube.get_runbook(namespace, name)
        return earlier if earlier is not None and earlier["metadata"]["uid"] == claim.uid else None

    # -- 1b. the gate: change windows and four eyes ---------------------------------------------
    async def gate(self, entry: Entry) -> Next:
        """What the namespace's RunbookPolicies say about starting now (:func:`runbooks.policy.evaluate`)
        and, if it needs approvals, what its RunbookApprovals count to (:func:`runbooks.approval.tally`).

        Level-based like every step: it reads the policies and approvals as they are now and the status as
        last written (the approvals' deadline, set when the run began to wait for them), so a controller
        restarted while a run waits decides the same again. A run that started (its status or its executor
        says so), or whose result the ledger has, went past the gate before: it is never held again; nor is a
        deleted or cancelled one, which starts nothing. No policy: it passes, as without the gate."""
        assert entry.claim is not None
        status = self.status(entry)
        if entry.claim.result is not None or status.execution is not None:
            return Next(Outcome.OWNER)
        if entry.stop_asked:  # its run, if a controller started one, is only stopped (run)
            return Next(Outcome.OWNER)
        # Its claim's mark comes off, and its finalizer goes on, just before the start: a controller may have
        # started the run and died before its status said so. The claim tells, or else the executor.
        if not entry.claim.unstarted or (
            keys.FINALIZER in entry.finalizers
            and await self.services.executor.find(self.request(entry)) is not None
        ):
            return Next(Outcome.OWNER)
        entry.regate = False  # a change from now on is looked at again
        items = await self.services.kube.policies(entry.namespace)
        entry.gated_at, entry.gated_by_policies = asyncio.get_running_loop().time(), bool(items)
        if not items:
            return await self._pass(entry, None)
        policies, unreadable = policy.parse(items)
        try:
            spec = RunbookSpec.model_validate(entry.spec)
            if concerned := [u.message for u in unreadable if u.concerns(spec)]:
                return await self._cannot_start(entry, f"waits at the gate: {'; '.join(concerned)}")
            at = datetime.datetime.now(datetime.UTC)
            # In a thread: the venue's calendar, if a rule needs the session state, may load its table.
            calendar = self.services.settings.calendar
            decision = await asyncio.to_thread(policy.evaluate, policies, spec, at, calendar)
        except (ValidationError, CalendarError) as error:  # not decided: never run it ungated
            return await self._cannot_start(entry, f"waits at the gate: {error}")
        if isinstance(decision, policy.Reject):
            return await self._not_run(
                entry, transitions.refused(status, entry.generation, decision), "refused"
            )
        if isinstance(decision, policy.Wait):
            if decision.expire_after is not None:  # a rejection wins while it waits for its window too
                rejection = policy.Allowed(expire_after=decision.expire_after)
                counted, change, _ = await self._tally(entry, rejection, at)
                if counted.state == approval.REJECTED:
                    return await self._not_run(entry, change, "rejected")
            change = transitions.held(status, entry.generation, decision)
            await self._show_held(entry, change, Reason.OUTSIDE_CHANGE_WINDOW, decision.message, "held")
            return self._hold((decision.until - at).total_seconds())
        if decision.expire_after is None:  # no rule asks for approvals: no decision counts
            return await self._pass(entry, None)
        return await self._count(entry, decision, at)

    async def _count(self, entry: Entry, allowed: policy.Allowed, at: datetime.datetime) -> Next:
        """Count the request's approvals; pass, hold or end the run by the tally."""
        counted, change, expires = await self._tally(entry, allowed, at)
        if counted.state == approval.APPROVED and not allowed.approvals:  # none needed now, none rejected
            return await self._pass(entry, None)
        if counted.state == approval.APPROVED:
            who = ", ".join(v.approver for v in counted.approved_by)
            return await self._pass(entry, change, f"approved by {who} ({counted.summary})")
        if counted.state == approval.PENDING:
            message = change.succeeded.message if change.succeeded else counted.summary
            await self._show_held(entry, change, Reason.AWAITING_APPROVAL, message, "awaiting")
            return self._hold((expires - at).total_seconds())
        outcome = "rejected" if counted.state == approval.REJECTED else "expired"
        return await self._not_run(entry, change, outcome)

    async def _tally(
        self, entry: Entry, allowed: policy.Allowed, at: datetime.datetime
    ) -> tuple[approval.Tally, RunbookStatus, datetime.datetime]:
        """The request's decisions counted as ``allowed`` asks, the status that says so, and when its wait
        for approvals ends."""
        status = self.status(entry)
        assert allowed.expire_after is not None
        deadline = transitions.approvals_deadline(status)  # this wait's, if the run waits for approvals
        written = parse_time(status.policy.approvals_expire_at) if status.policy else None
        votes = [vote(item) for item in await self.services.kube.approvals(entry.namespace, entry.request_id)]
        counted = approval.tally(
            votes,
            runbook_uid=entry.uid,
            requester=entry.spec.get("requestedBy") or "",
            required=allowed.approvals,
            requested_at=parse_time(entry.created) or at,
            waiting_since=(deadline or at + allowed.expire_after) - allowed.expire_after,
            now=at,
            expire_after=allowed.expire_after,
            approved_at=transitions.approved_at(status),
        )
        # Approved: no deadline any more; the one written stays as it was (a new one would be a new status).
        expires = counted.expires_at or written or at + allowed.expire_after
        requirement = transitions.requirement(allowed, expires)
        zone = self.services.settings.zone
        return (
            counted,
            transitions.approvals_counted(status, entry.generation, counted, requirement, zone),
            expires,
        )

    async def _cannot_start(self, entry: Entry, message: str) -> Next:
        """Not startable yet (the venue's calendar cannot tell, a policy does not parse): said in its
        status, once, and looked at again in a while; held meanwhile, as a run outside its window is, out
        of its target's lane and holding no lock (the caller gives back one it took), so that the runs
        behind it that can start do."""
        log.error("%s/%s %s", entry.namespace, entry.name, message)
        change = transitions.pending_because(self.status(entry), entry.generation, message)
        if apply(self.status(entry), change) != self.status(entry):
            await self.patch(entry, change)
        return self._hold(WINDOW_RETRY_SECONDS)

    @staticmethod
    def _hold(seconds: float) -> Next:
        """Held until ``seconds`` from now (a moment after, so that the wait is over then). Its claim says
        that it has not started (:meth:`admit`) until it gets its finalizer, just before the start."""
        return Next(Outcome.HELD, min(max(seconds, 0.0) + 0.05, HOLD_RECHECK_SECONDS))

    async def _show_held(
        self, entry: Entry, change: RunbookStatus, reason: Reason, message: str, outcome: str
    ) -> None:
        """Write a held status, with its Event, when it says something new (not at each look)."""
        if apply(self.status(entry), change) == self.status(entry):
            return
        if await self.patch(entry, change):
            self.event(entry, "Normal", reason, message)
            metrics.GATE.labels(entry.command, outcome).inc()

    async def _pass(self, entry: Entry, change: RunbookStatus | None, message: str = "") -> Next:
        """Through the gate: the approvals recorded, and a held status no longer shown as held."""
        status = self.status(entry)
        held = status.succeeded is not None and status.succeeded.reason in GATE_WAITS
        if change is None and not held:
            return Next(Outcome.OWNER)
        message = message or "the policies allow it now"
        change = apply(
            change or RunbookStatus(), transitions.pending_because(status, entry.generation, message)
        )
        if not await self.patch(entry, change):
            return Next(Outcome.GONE)
        if status.approvals != self.status(entry).approvals or status.policy != self.status(entry).policy:
            self.event(entry, "Normal", Reason.APPROVED, message)
            metrics.GATE.labels(entry.command, "approved").inc()
        return Next(Outcome.OWNER)

    async def _not_run(self, entry: Entry, change: RunbookStatus, outcome: str) -> Next:
        """End the run without executing it. Its request id is freed first (it never ran: created again,
        it asks again), then the finished status takes it out of the watch."""
        assert entry.claim is not None
        await self.services.ledger.release(entry.claim, entry.namespace)
        await self._end_unstarted(entry, change)
        metrics.GATE.labels(entry.command, outcome).inc()
        return Next(Outcome.SETTLED)

    async def _cancelled_unstarted(self, entry: Entry) -> Next:
        """End a run cancelled before it started: it never starts. Unlike a refused run, its request id is
        used up: its end is recorded in the ledger first, while the claim's mark still says that it has not
        started (:meth:`controller.ledger.Ledger.finish`); a mark taken off meanwhile (another replica
        starting it) leaves it to be looked for and stopped (:meth:`run`, again), a claim freed meanwhile
        (another replica saw it deleted first) a Runbook that goes, as one deleted before its start does. Its
        lock, if it took it, is released."""
        assert entry.claim is not None
        change = self._cancelled(entry)
        shown = apply(self.status(entry), change).to_k8s()
        try:
            claim = entry.claim = await self.services.ledger.finish(
                entry.claim, entry.namespace, shown, unstarted=True
            )
        except ledger.ClaimGone:
            log.warning("%s/%s: its claim was freed as its cancel was recorded", entry.namespace, entry.name)
            return await self.forget(entry)
        if claim.result is None:
            return Next(Outcome.RETRY)
        if claim.result.get("exitCode") is not None:  # another replica ran it, and recorded its end
            return await self.finish(entry, None, claim.result)
        await self._end_unstarted(entry, change)
        if entry.needs_lock:
            await self.services.lock.release(entry.namespace, entry.group, entry.uid)
        return Next(Outcome.SETTLED)

    def _cancelled(self, entry: Entry) -> RunbookStatus:
        """The finished status of a run cancelled before it started."""
        message = transitions.cancel_message(entry.spec["cancel"], started=False)
        return transitions.not_run(self.status(entry), entry.generation, Reason.CANCELLED, message)

    async def _end_unstarted(self, entry: Entry, change: RunbookStatus) -> None:
        """The finished status ``change`` of a run that never executed, its Event and audit line; what was
        prepared for it, and its finalizer, go first."""
        await self._release_prepared(entry)
        await self._let_go(entry)  # before the finished status, which takes it out of the watch
        entry.finishing = True
        change.request_id, change.target = entry.request_id, entry.target  # in effect, as a run's are
        final = apply(self.status(entry), change)
        await self.patch(entry, change)
        reason = final.succeeded.reason if final.succeeded else Reason.FAILED
        self.event(entry, "Warning", reason, final.message or reason, status=final, post=not entry.gone)

    async def _park(self, entry: Entry, claim: ledger.Entry) -> Next:
        if self.status(entry).duplicate_of != claim.runbook:
            change = transitions.waiting_for_original(
                self.status(entry), entry.generation, claim.runbook, entry.request_id
            )
            if not await self.patch(entry, change):
                return Next(Outcome.GONE)
            message = change.succeeded.message if change.succeeded else ""
            audit.write(
                audit.line(
                    Reason.QUEUED, entry.namespace, entry.name, entry.spec, self.status(entry), message
                )
            )
        return Next(Outcome.PARKED, owner=claim.uid)

    async def settle_duplicate(
        self, entry: Entry, claim: ledger.Entry, result: dict[str, Any] | None = None, message: str = ""
    ) -> Next:
        """Show the earlier run's result (or ``result`` and ``message``): the duplicate never runs."""
        result = result or claim.result or {}
        change = transitions.duplicate(
            self.status(entry),
            entry.generation,
            earlier=claim.runbook,
            result=result,
            request_id=entry.request_id,
            window=entry.spec.get("window") if entry.spec.get("window") in ("day", "night") else None,
            target=entry.target,
            message=message or None,
        )
        await self.services.ledger.note_duplicate(claim, entry.namespace, entry.uid)
        if await self.patch(entry, change):
            said = message or f"request id {entry.request_id} already ran as {claim.runbook}"
            self.event(entry, "Warning" if message else "Normal", "Duplicate", said)
        return Next(Outcome.SETTLED)

    async def release_claim(self, entry: Entry) -> None:
        """The Runbook was deleted before it ran: its request id is free again. Its claim is read from the
        ledger if this controller has not admitted it (an earlier one did). Not if its claim's mark is off:
        a controller may have started its run (and died before its status said so), which a deletion by
        force leaves going; its request id stays, a Runbook that comes with it a cancelled duplicate."""
        if self.status(entry).execution:
            return
        claim = entry.claim or await self.services.ledger.lookup(entry.namespace, entry.request_id)
        if claim is not None and claim.uid == entry.uid and claim.unstarted:
            await self.services.ledger.release(claim, entry.namespace)

    async def stop_unseen(self, entry: Entry) -> bool:
        """Whether a Runbook deleted by force before its run here may have a run going, which is then looked
        for and stopped as a deleted Runbook's is (:meth:`run`), and its end recorded for its request id:
        its claim, this Runbook's, has no result and its mark is off (a controller started the run, or was
        about to, and died before its status said so, or this one had not adopted it yet). Left alone, a
        local run went on unseen, its end never recorded, and a Runbook that came with its request id said
        that it was cancelled."""
        claim = entry.claim or await self.services.ledger.lookup(entry.namespace, entry.request_id)
        if claim is None or claim.uid != entry.uid or claim.unstarted or claim.result is not None:
            return False
        entry.claim, entry.deleting = claim, True  # deleted: its next step stops what it finds
        return True

    async def orphans(self, namespace: str, in_view: Callable[[str], bool]) -> AsyncIterator[ledger.Entry]:
        """The claims whose run's end is not recorded and whose Runbook went while no controller saw it
        (deleted by force while none ran, or while the one stopping its run died before it recorded the
        end): nobody else ends their runs. Each is read again once its Runbook was found gone: a run that
        this controller saw go may have been ended meanwhile."""
        async for claim in self.services.ledger.unfinished(namespace):
            if not claim.command or in_view(claim.uid) or await self._earlier(claim) is not None:
                continue  # (no command: a claim made before claims named it, whose run cannot be ended)
            current = await self.services.ledger.lookup(namespace, claim.request_id)
            if current is not None and current.uid == claim.uid and current.result is None:
                yield current

    async def forget(self, entry: Entry) -> Next:
        """The Runbook was deleted (or is gone) and no run of it was ever started: its request id, its
        lock and its finalizer go."""
        await self.release_claim(entry)
        if entry.needs_lock:
            await self.services.lock.release(entry.namespace, entry.group, entry.uid)
        await self._release_prepared(entry)
        await self._let_go(entry)
        return Next(Outcome.GONE)

    async def _release_prepared(self, entry: Entry) -> None:
        """What was prepared for a run that never started goes (a suspended Job, a folder without a runner).
        Only a run that got its finalizer (:meth:`_protect`) got as far as being prepared, or an orphan's
        (its Runbook gone, it may have been)."""
        if (keys.FINALIZER in entry.finalizers and not entry.gone) or entry.orphan:
            await self.services.executor.handle(self.request(entry)).release()

    # -- 2. the run ----------------------------------------------------------------------------
    async def run(self, entry: Entry, stopping: asyncio.Event) -> Next:
        """Start (or adopt) the run, wait for it and finish it."""
        assert entry.claim is not None
        if entry.claim.result is not None:  # recorded before a restart: only the rest is left to do
            return await self._recorded(entry)
        if entry.needs_lock and not unstarted_stop(entry):
            try:
                holder = await self.services.lock.acquire(entry.namespace, entry.group, entry.uid, entry.name)
            except NamespaceTerminating:  # its Lease went with the namespace, and cannot come back
                if not entry.deleting:
                    return Next(Outcome.RETRY, LOCK_RETRY_SECONDS)  # it is deleted with the namespace soon
                holder = None  # a deleted Runbook starts nothing: its run, if any, is only stopped
            if holder is not None:
                log.info("%s/%s waits: the lock is held by %s", entry.namespace, entry.name, holder)
                return Next(Outcome.RETRY, LOCK_RETRY_SECONDS, holder=holder)
        if not entry.stop_asked and self.status(entry).execution is None and self._regate_due(entry):
            verdict = await self.gate(entry)  # held, refused, rejected or expired now: it never starts
            if verdict.outcome is not Outcome.OWNER:
                if entry.needs_lock:
                    await self.services.lock.release(entry.namespace, entry.group, entry.uid)
                return verdict
        run: Run | dict[str, Any] | None
        if self.status(entry).execution is not None:  # never started again: adopted, or lost
            run = await self.services.executor.adopt(self.request(entry))
            if isinstance(run, dict):
                run = stopped_result(entry, run)
        elif entry.stop_asked:  # a controller may have started it, and died before its status said so
            run = await self._found(entry)
            if run is None:  # never started: a deleted one goes, a cancelled one never starts
                return await (self.forget(entry) if entry.deleting else self._cancelled_unstarted(entry))
            if isinstance(run, dict):
                run = stopped_result(entry, run)
        else:
            try:
                status = self.status(entry)
                window, session = (
                    (status.window, status.session) if status.window else await self._window(entry)
                )
            except CalendarError as error:  # window auto: the calendar decides it
                if entry.needs_lock:
                    await self.services.lock.release(entry.namespace, entry.group, entry.uid)
                advice = "give its window (day or night) to run it without the calendar"
                return await self._cannot_start(entry, f"cannot start: {error}; {advice}")
            # Its claim's mark is off: a controller got as far as preparing it, and may have started it and
            # died before its status said so. It is adopted, or found lost; started only where what was
            # prepared proves that nothing ran (:meth:`Executor.resume`).
            may_have_started = not entry.claim.unstarted
            if not await self._protect(entry):
                return await self.forget(entry)
            executor, request = self.services.executor, self.request(entry, window)
            begun: Run | dict[str, Any] | Next | None = None
            if not may_have_started:
                # Prepared first, then the mark comes off: a controller killed between the two leaves what
                # proves that nothing ran (a folder without a runner, a suspended Job).
                begun = await self._attempt(entry, executor.prepare(request), stopping, marked=True)
                if begun is None:
                    try:
                        entry.claim = await self.services.ledger.mark_unstarted(
                            entry.claim, entry.namespace, unstarted=False
                        )
                    except ledger.ClaimGone:  # another replica saw it deleted first, and freed its request id
                        log.warning(
                            "%s/%s: its claim was freed as its run was to start: not started",
                            entry.namespace,
                            entry.name,
                        )
                        return await self.forget(entry)
                    if entry.claim.result is not None:  # another replica recorded its end meanwhile
                        return await self._recorded(entry)
            if stopping.is_set() and not isinstance(begun, Next):
                # Paused meanwhile: the active replica runs it, from what was prepared (which proves that
                # nothing ran, :meth:`Executor.resume`), or prepares it again (here it could not be: a 5xx
                # may hide a Job made). Nothing more is written here: that replica may have started the run
                # already. A mark put back on would say "not started" of a run going on, which a forced
                # deletion would free to run again; a result 'could not start' would end the record of a
                # run whose script runs, and free its target's lock.
                log.info(
                    "%s/%s: paused before its start, left to the active replica", entry.namespace, entry.name
                )
                return Next(Outcome.STOPPED)
            if begun is None:
                step = executor.resume if may_have_started else executor.start
                begun = await self._attempt(entry, step(request), stopping, marked=False)
            if isinstance(begun, Next):  # its Job refused (asked again later), or its Runbook gone
                return begun
            assert begun is not None
            run = begun
            if not isinstance(run, dict):
                await self._announce(entry, run, window, session)
        if isinstance(run, dict):  # lost, never started, or could not start
            return await self.finish(entry, None, run)
        result = await self._wait(entry, run, stopping)
        if result is None:
            return Next(Outcome.STOPPED)
        return await self.finish(entry, run, stopped_result(entry, result))

    async def _announce(self, entry: Entry, run: Run, window: str, session: RunSession | None) -> None:
        """Say that the run started: its Running status (its start) and its Event, unless the status says so
        already. Another replica may have started it and said so while this one got it ready (this one
        frozen meanwhile, it woke believing itself the active one): its Running, brought by the watch since
        (:meth:`Entry.update`) or met by this one's write (:meth:`patch`), stands, its start neither moved
        nor told again."""
        execution = Execution(executor=self.services.executor.kind, name=run.name)
        if self.status(entry).execution == execution:
            log.info("%s/%s: another replica started its run meanwhile: adopted", entry.namespace, entry.name)
            return
        change = transitions.running(self.status(entry), entry.generation, execution, now())
        change.request_id, change.window, change.target = entry.request_id, window, entry.target
        change.session = session
        written = await self.patch(entry, change)
        if entry.final or (written and self.status(entry).started_at != change.started_at):
            return  # the other's Running, adopted, or its end, recorded: told by that replica
        self.event(entry, "Normal", "Started", f"{entry.command} started ({run.name})", post=written)

    async def _recorded(self, entry: Entry) -> Next:
        """Finish a run whose end the ledger holds already: recorded before a restart, or by another replica
        while this one did not act (paused, or frozen: a replica stopped by SIGSTOP past the peering lifetime
        wakes believing itself the active one, with its view of before). That end is its cancel before the
        start (no exit code), or its run's: the other replica ran it meanwhile."""
        assert entry.claim is not None and entry.claim.result is not None
        if entry.claim.result.get("exitCode") is None:  # cancelled before it started
            return await self._cancelled_unstarted(entry)
        run = self.services.executor.handle(self.request(entry))
        return await self.finish(entry, run, entry.claim.result)

    async def _found(self, entry: Entry) -> Run | dict[str, Any] | None:
        """The run of a deleted Runbook whose status names none, to be stopped: None if none was started.
        With its claim's mark off, a controller may have started it: what it ran in, if gone, went with the
        run (a Job deleted, a state folder lost), which is then lost, its request id never freed."""
        assert entry.claim is not None
        if entry.claim.unstarted:
            return await self.services.executor.find(self.request(entry))
        run = await self.services.executor.adopt(self.request(entry))
        if isinstance(run, dict) and run.get("reason") != Reason.LOST:  # provably never started: it says so
            entry.claim = await self.services.ledger.mark_unstarted(entry.claim, entry.namespace, True)
            return None
        return run

    @staticmethod
    def _regate_due(entry: Entry) -> bool:
        """Whether the gate must look again before the run starts: something it reads changed since it let
        the run through (a policy, an approval: a rejection wins until the start), or the namespace has
        policies and the run waited since (for its lock, for a slot: a window may have closed since)."""
        waited = asyncio.get_running_loop().time() - entry.gated_at > REGATE_AFTER_SECONDS
        return entry.regate or (entry.gated_by_policies and waited)

    async def _attempt(
        self,
        entry: Entry,
        step: Awaitable[Run | dict[str, Any] | None],
        stopping: asyncio.Event,
        *,
        marked: bool,
    ) -> Run | dict[str, Any] | Next | None:
        """What the executor's ``step`` gives; for a run that cannot start, its result (exit code 125), or
        when to ask again while the API server refuses its Job (:meth:`_refused`). Another error of the API
        server (a 5xx, a connection lost) may hide a write that was done: with the claim's mark still on
        (``marked``: what it made proves nothing ran), the run could not start; with it off, the step fails
        and is tried again, which adopts what the lost answer made. A Runbook deleted by force before its
        run started, what was prepared for it gone with it, ends here (:meth:`_gone_unstarted`); one deleted
        or cancelled meanwhile whose suspended Job went (another replica deleted it: its run never starts)
        is looked at again, as one asked to stop."""
        try:
            return await step
        except RunbookGone as gone:
            if gone.stopped:  # deleted or cancelled meanwhile: looked at again as such (:meth:`_found`)
                return Next(Outcome.RETRY, START_RETRY_SECONDS)
            return await self._gone_unstarted(entry, stopping)
        except NamespaceTerminating as error:
            return failure(ExitCode.NOT_EXECUTED, f"could not start: {error}")
        except ApiError as error:
            if error.refused_by_admission:
                return await self._refused(entry, error)
            if not marked:
                raise
            return failure(ExitCode.NOT_EXECUTED, f"could not start: {error}")
        except OSError as error:
            return failure(ExitCode.NOT_EXECUTED, f"could not start: {error}")

    async def _gone_unstarted(self, entry: Entry, stopping: asyncio.Event) -> Next:
        """The Runbook was deleted by force after its claim's mark came off and before its run started, and
        what was prepared for the run went with it (:class:`RunbookGone`): this controller started nothing.
        Its claim says so again, and is freed as a run's that never started is (:meth:`forget`): its request
        id may run. Not if this replica was paused meanwhile: the active one, which read the claim without its
        mark, may have let the prepared run start (a suspended Job let run), and what ran went with the
        Runbook; the request id is kept, never freed for a second run."""
        entry.gone = True
        if stopping.is_set():
            log.warning(
                "%s/%s is gone, its run not started here; paused meanwhile, the active replica may have"
                " started it: the request id is kept",
                entry.namespace,
                entry.name,
            )
        elif entry.claim is not None:
            entry.claim = await self.services.ledger.mark_unstarted(
                entry.claim, entry.namespace, unstarted=True
            )
        return await self.forget(entry)

    async def _refused(self, entry: Entry, error: ApiError) -> Next | dict[str, Any]:
        """The API server refused its Job (403: a quota, an admission policy). That may lift (a quota frees
        up as other Jobs end, a policy is mended), so the run keeps its lock and asks again, less and less
        often, its status saying why, for ``MDOPS_JOB_START_FAILURE_SECONDS`` (0: its timeout) from the
        first refusal; then it fails, never having run."""
        loop = asyncio.get_running_loop()
        if not entry.refused_since:
            entry.refused_since = loop.time()
            log.warning("%s/%s cannot start yet, its Job is refused: %s", entry.namespace, entry.name, error)
        waited = loop.time() - entry.refused_since
        limit = self.services.settings.job_start_failure_seconds or float(
            entry.spec.get("timeoutSeconds", 300)
        )
        if waited >= limit:
            return failure(
                ExitCode.NOT_EXECUTED, f"could not start: its Job was refused for {waited:.0f} s: {error}"
            )
        why = f"cannot start yet, its Job is refused (asked again for up to {limit:.0f} s): {error}"
        change = transitions.pending_because(self.status(entry), entry.generation, why)
        if apply(self.status(entry), change) != self.status(entry) and not await self.patch(entry, change):
            return Next(Outcome.GONE)
        return Next(Outcome.RETRY, min(max(waited / 2, START_RETRY_SECONDS), limit - waited, 30.0))

    @staticmethod
    def request(entry: Entry, window: str = "") -> RunRequest:
        claim = entry.claim.lease_uid if entry.claim else ""
        return RunRequest(
            entry.namespace, entry.name, entry.uid, entry.request_id, entry.command, window, entry.spec, claim
        )

    async def _window(self, entry: Entry) -> tuple[str, RunSession | None]:
        """The spec's window (auto: the one the venue's calendar gives now) and the venue's session now.
        The calendar is loaded as the controller starts; a run that comes before the load is done waits
        for it in a thread (never on the event loop), and only then. An explicit window runs without the
        calendar: its session is recorded when the calendar can tell."""
        window, at = entry.spec.get("window", "auto"), datetime.datetime.now(datetime.UTC)
        venue = self.services.settings.calendar
        try:
            calendar = venue.loaded(at) or await asyncio.to_thread(venue.at, at)
            state = calendar.state(at)  # refused past what the library knows of the venue
        except CalendarError:
            if window == "auto":
                raise
            return window, None
        session = RunSession(venue=calendar.venue, state=state)
        return (calendar.windows[state] if window == "auto" else window), session

    async def _protect(self, entry: Entry) -> bool:
        """Add the finalizer before the run is prepared and started (also if a client put it on while the
        run waited); False if the Runbook is gone. The claim's mark that the run has not started comes off
        after that: a controller killed before leaves the finalizer (a deletion then waits for the next
        controller, which frees the claim), and a deletion by force then leaves a claim that still says,
        truly, that its run never started. Once the mark is off, a Runbook deleted by force may have run:
        its claim is never freed."""
        if keys.FINALIZER not in entry.finalizers:
            finalizers = [*entry.finalizers, keys.FINALIZER]
            if not await self.services.kube.set_finalizers(
                entry.namespace, entry.name, entry.uid, finalizers
            ):
                return False
            entry.finalizers = finalizers
        entry.protected = True
        return True

    async def _let_go(self, entry: Entry) -> None:
        """Remove the finalizer: the run is over, or never started (a deleted Runbook then goes)."""
        if keys.FINALIZER in entry.finalizers and not entry.gone:
            finalizers = [f for f in entry.finalizers if f != keys.FINALIZER]
            if await self.services.kube.set_finalizers(entry.namespace, entry.name, entry.uid, finalizers):
                entry.finalizers, entry.protected = finalizers, False

    async def _wait(self, entry: Entry, run: Run, stopping: asyncio.Event) -> dict[str, Any] | None:
        """The run's result; None if the controller stops first. A deleted or cancelled Runbook's run is
        stopped."""

        async def publish() -> None:
            if not entry.gone:
                await self.patch(entry, transitions.progress_logs(run.logs()))  # none once it is final

        publisher = LogPublisher(publish)
        metrics.RUNNING.inc()
        waiting = asyncio.ensure_future(run.wait(publisher.changed))
        interrupts = [asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(entry.cancel.wait())]
        try:
            await asyncio.wait({waiting, *interrupts}, return_when=asyncio.FIRST_COMPLETED)
            if waiting.done():
                return waiting.result()
            if stopping.is_set():
                waiting.cancel()
                return None
            if not entry.stop_asked and not await self._deleted(entry):
                return await waiting  # another replica finished it: the same run, or a second one, ends
            cancel = entry.spec.get("cancel")
            log.info(
                "%s/%s: stopping its run %s (%s)", entry.namespace, entry.name, run.name, stop_message(cancel)
            )
            await run.cancel()  # the Runbook was deleted or cancelled: stop its run
            result = after_stop(await waiting, cancel)
            log.info(
                "%s/%s: its run %s stopped: exit code %s",
                entry.namespace,
                entry.name,
                run.name,
                result.get("exitCode"),
            )
            return result
        finally:
            for task in interrupts:
                task.cancel()
            await publisher.close()
            metrics.RUNNING.dec()

    async def _deleted(self, entry: Entry) -> bool:
        """Whether a running Runbook that left the watch was deleted (by force: its finalizer taken away),
        rather than finished by another controller replica (it ran as kopf's peering settled)."""
        body = await self.services.kube.get_runbook(entry.namespace, entry.name)
        if body is not None and body["metadata"]["uid"] == entry.uid:
            entry.final = bool((body.get("status") or {}).get("result"))
            return False
        entry.gone = True
        return True

    # -- 3. the end ----------------------------------------------------------------------------
    async def finish(self, entry: Entry, run: Run | None, result: dict[str, Any]) -> Next:
        """Record the result in the ledger, where the first recorded stands, and show that one."""
        assert entry.claim is not None
        dry_run = bool(entry.spec.get("dryRun"))
        if "logs" not in result:  # a result from the ledger: keep the lines the status shows
            result = {**result, "logs": [line.to_k8s() for line in self.status(entry).logs]}
        change = transitions.finished(self.status(entry), entry.generation, result, dry_run=dry_run)
        final = apply(self.status(entry), change)
        shown = final.to_k8s()
        entry.claim = await self.services.ledger.finish(entry.claim, entry.namespace, shown)
        recorded = entry.claim.result
        if recorded is not None and recorded != ledger.summary(shown):  # another replica's run
            result = {**recorded, "logs": result["logs"]}
            change = transitions.finished(self.status(entry), entry.generation, result, dry_run=dry_run)
            final = apply(self.status(entry), change)
        # What the run ran in (or was made to run in: a folder whose runner never started) may go now.
        await (run or self.services.executor.handle(self.request(entry))).release()
        await self._let_go(entry)
        entry.finishing = True
        if not (entry.gone or entry.deleting):  # a deleted one is gone with its finalizer
            await self.patch(entry, change)
        if entry.needs_lock:
            await self.services.lock.release(entry.namespace, entry.group, entry.uid)
        started, finished = parse_time(final.started_at), parse_time(final.finished_at)
        duration = (finished - started).total_seconds() if started and finished else 0.0
        metrics.record_finish(entry.command, result, duration, dry_run=dry_run)
        code = final.exit_code
        kind = "Normal" if code == ExitCode.SUCCESS else "Warning"
        message = final.message or f"exit code {code}"
        # No Event (it would name nothing, or repeat another replica's), but its audit line.
        gone = entry.gone or entry.deleting or entry.final
        reason = Reason.LOST if result.get("reason") == Reason.LOST else reason_of(code)
        self.event(entry, kind, reason, message, status=final, post=not gone)
        return Next(Outcome.SETTLED)
