"""``RunbookApproval``: one person's decision on one request, and the count of them for a run.

Approvals are Kubernetes objects, so kubectl, RBAC, GitOps and the audit trail all apply to them. An
approval names the request id it decides on (a request id runs at most once, and a Runbook's spec is
immutable, so the id names exactly what is approved); its spec is immutable. Who may name whom as
``approver`` (and ``requestedBy`` on Runbooks) is the API server's to enforce, with a
ValidatingAdmissionPolicy; this module only counts.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from runbooks.models import RequestId, _Model

KIND = "RunbookApproval"
PLURAL = "runbookapprovals"
SINGULAR = "runbookapproval"
SHORT_NAMES = ["rba"]

SPEC_IMMUTABLE = "spec is immutable: a decision is not changed; create another approval"
APPROVED, PENDING, REJECTED, EXPIRED = "Approved", "AwaitingApproval", "Rejected", "ApprovalExpired"


class RunbookApprovalSpec(_Model):
    """One decision on one request. Immutable."""

    request_id: RequestId = Field(description="The request id (of the Runbook) decided on.")
    decision: Literal["Approve", "Reject"] = Field(description="Approve, or Reject (the run then fails).")
    approver: str = Field(
        min_length=1,
        max_length=253,
        description="Who decides: the Kubernetes user who creates this object, or the REST API's token name.",
    )
    comment: str = Field("", max_length=1024, description="Why, for the audit.")


@dataclass(frozen=True)
class Vote:
    """An approval object as the count sees it; ``at`` is its creationTimestamp."""

    approver: str
    decision: Literal["Approve", "Reject"]
    at: datetime.datetime
    comment: str = ""


@dataclass(frozen=True)
class Tally:
    state: str  # Approved, AwaitingApproval, Rejected or ApprovalExpired (the condition reasons)
    required: int
    approved_by: tuple[Vote, ...] = ()
    rejected_by: Vote | None = None
    ignored: tuple[tuple[Vote, str], ...] = ()  # each with the reason it did not count
    expires_at: datetime.datetime | None = None

    @property
    def summary(self) -> str:
        """E.g. "1 of 2 approvals (alice)"."""
        who = ", ".join(v.approver for v in self.approved_by)
        return f"{len(self.approved_by)} of {self.required} approvals" + (f" ({who})" if who else "")


def tally(
    votes: Iterable[Vote],
    *,
    requester: str,
    required: int,
    requested_at: datetime.datetime,
    waiting_since: datetime.datetime,
    now: datetime.datetime,
    expire_after: datetime.timedelta,
) -> Tally:
    """Count the decisions on a request made by ``requester`` at ``requested_at`` that has waited for
    its approvals since ``waiting_since``.

    - A decision made before the request is ignored (it cannot have been about this Runbook).
    - A rejection by anyone (the requester may withdraw) wins over any number of approvals.
    - An approval counts only from someone other than the requester (a request that names no requester
      cannot be approved at all), once per person, and only for ``expire_after`` after it was given.
    - Without enough approvals ``expire_after`` after ``waiting_since``, the request has expired.
    """
    counted: dict[str, Vote] = {}
    ignored: list[tuple[Vote, str]] = []
    rejection: Vote | None = None
    for vote in sorted(votes, key=lambda v: v.at):
        if vote.at < requested_at:
            ignored.append((vote, "given before the request"))
        elif vote.decision == "Reject":
            rejection = rejection or vote
        elif not requester:
            ignored.append((vote, "the request names no requester"))
        elif vote.approver == requester:
            ignored.append((vote, "the requester cannot approve their own request"))
        elif vote.at + expire_after <= now:
            ignored.append((vote, "expired"))
        elif vote.approver in counted:
            ignored.append((counted[vote.approver], "repeated by the same person"))
            counted[vote.approver] = vote
        else:
            counted[vote.approver] = vote
    approved_by = tuple(counted.values())
    if rejection is not None:
        return Tally(REJECTED, required, approved_by, rejection, tuple(ignored))
    if len(approved_by) >= required:
        return Tally(APPROVED, required, approved_by, None, tuple(ignored))
    expires_at = waiting_since + expire_after
    state = EXPIRED if now >= expires_at else PENDING
    return Tally(state, required, approved_by, None, tuple(ignored), expires_at)
