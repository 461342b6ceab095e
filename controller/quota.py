"""The namespace-wide cap on unfinished Runbooks (``MDOPS_MAX_UNFINISHED_PER_NAMESPACE``).

The REST API caps each token; this cap holds for everyone, kubectl users and GitOps tools too, so that no
one fills etcd or the controller's queue. It is counted where the Runbooks are admitted, in their order
(oldest first): a Runbook is *let in* when the dispatcher admits it, and counts until it has finished or
left. One that arrives while ``cap`` are let in fails at once (reason ``QuotaExceeded``) before it claims
its request id in the ledger, so the same request id can be used again once there is room.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from controller import transitions
from controller.runs import Next, Outcome, Runs
from runbooks.contract import Reason

if TYPE_CHECKING:
    from controller.dispatcher import Entry


def admitted_before(entry: Entry) -> bool:
    """Whether an earlier controller admitted it already (its status shows its request id, or the run it
    waits for): a restart, or a lower cap, never refuses what was let in."""
    status = entry.raw_status
    return entry.started or bool(status.get("requestId") or status.get("duplicateOf"))


class Cap:
    def __init__(self, cap: int):
        self.cap = cap
        self.let_in: set[str] = set()  # uids

    def admit(self, entry: Entry) -> bool:
        """Let ``entry`` in, or say it is beyond the cap."""
        known = entry.uid in self.let_in or admitted_before(entry)
        if self.cap and not known and len(self.let_in) >= self.cap:
            return False
        self.let_in.add(entry.uid)
        return True

    def left(self, uid: str) -> None:
        self.let_in.discard(uid)

    def clear(self) -> None:
        self.let_in.clear()

    async def refuse(self, runs: Runs, entry: Entry) -> Next:
        """Fail ``entry`` at once: it never runs, and claims nothing."""
        change = transitions.over_quota(
            runs.status(entry), entry.generation, unfinished=len(self.let_in), cap=self.cap
        )
        change.request_id, change.target = entry.request_id, entry.target
        if await runs.patch(entry, change):
            runs.event(entry, "Warning", Reason.QUOTA_EXCEEDED, change.message or "")
        return Next(Outcome.SETTLED)
