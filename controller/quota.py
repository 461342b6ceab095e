"""The namespace-wide cap on unfinished Runbooks (``MDOPS_MAX_UNFINISHED_PER_NAMESPACE``).

The REST API caps each token; this cap holds for everyone, kubectl users and GitOps tools too, so that no
one fills etcd or the controller's queue. It is counted where the Runbooks are admitted, in their order
(oldest first): a Runbook is *let in* when the dispatcher admits it (or as soon as it is seen, if its status
shows that an earlier controller did), and counts until it has finished or left. One that arrives while
``cap`` are let in fails at once (reason ``QuotaExceeded``) before it claims its request id in the ledger,
so the same request id can be used again once there is room. One that claimed its request id before (a
controller before a restart let it in) is never refused, whatever the cap is now.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from controller import transitions
from controller.runs import Next, Outcome, Runs
from runbooks.contract import Reason

if TYPE_CHECKING:
    from controller.dispatcher import Entry


def admitted_before(entry: Entry) -> bool:
    """Whether its status shows that an earlier controller admitted it (it started or was held, its
    request id, or the run it waits for); :meth:`Cap.refuse` asks the ledger about the others."""
    status = entry.raw_status
    return entry.started or entry.held_before or bool(status.get("requestId") or status.get("duplicateOf"))


class Cap:
    def __init__(self, cap: int):
        self.cap = cap
        self.let_in: set[str] = set()  # uids

    def seen(self, entry: Entry) -> None:
        """A Runbook came into view: one an earlier controller let in counts at once, not at its admission
        (runs the gate held are admitted after new ones, which must find the namespace as full as it is)."""
        if admitted_before(entry):
            self.let_in.add(entry.uid)

    def admit(self, entry: Entry) -> bool:
        """Let ``entry`` in, or say it is beyond the cap. A deleted Runbook is always let in: it starts
        nothing, and its admission takes its finalizer off (a controller killed as it let go of it left the
        finalizer, its claim gone); refused, it would be finished, out of the watch, Terminating for ever."""
        if self.cap and not entry.deleting and entry.uid not in self.let_in and len(self.let_in) >= self.cap:
            return False
        self.let_in.add(entry.uid)
        return True

    def left(self, uid: str) -> None:
        self.let_in.discard(uid)

    def clear(self) -> None:
        self.let_in.clear()

    async def refuse(self, runs: Runs, entry: Entry, in_view: Callable[[str], bool]) -> Next:
        """Fail ``entry`` at once: it never runs, and claims nothing. Unless the ledger shows that it
        claimed its request id before, which its status may not say (queued for its lock, or nothing
        written yet when that controller stopped): then it is let in and admitted."""
        claim = await runs.services.ledger.lookup(entry.namespace, entry.request_id)
        if claim is not None and claim.uid == entry.uid:
            self.let_in.add(entry.uid)
            entry.claim = claim  # admitted with it, not claimed again (a create refused, and a read)
            return await runs.admit(entry, in_view)
        change = transitions.over_quota(
            runs.status(entry), entry.generation, unfinished=len(self.let_in), cap=self.cap
        )
        change.request_id, change.target = entry.request_id, entry.target
        if await runs.patch(entry, change):
            runs.event(entry, "Warning", Reason.QUOTA_EXCEEDED, change.message or "")
        return Next(Outcome.SETTLED)
