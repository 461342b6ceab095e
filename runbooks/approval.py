"""``RunbookApproval``: one person's decision on one request, and the count of them for a run.

Approvals are Kubernetes objects, so kubectl, RBAC, GitOps and the audit trail all apply to them. An
approval names the request id it decides on (a request id runs at most once, and a Runbook's spec is
immutable) and the requester of that request (copied from the Runbook's ``requestedBy``); its spec is
immutable. A request id is freed again when its Runbook expires, is rejected or is deleted before it ran,
and may then be asked for anew, with other parameters: an approval may therefore also name the Runbook
decided on (``runbookUid``, its ``metadata.uid``; the REST API always does), and then counts for that one
only. That ``approver`` is who creates the object, and that it
is not the ``requester``, the API server enforces (manifests/identities.yaml, a ValidatingAdmissionPolicy);
that ``requester`` is truly the Runbook's, the count does (an approval naming another is ignored), and that
the approver is a person, not a ServiceAccount whose token the requester may hold.
"""

from __future__ import annotations

import datetime
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from runbooks.contract import Reason
from runbooks.models import ApprovalDecision, Person, ReasonText, RequestId, _Model
from runbooks.schedule import REQUESTER_PREFIX

KIND = "RunbookApproval"
PLURAL = "runbookapprovals"
SINGULAR = "runbookapproval"
SHORT_NAMES = ["rba"]

RunbookUid = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9-]+$")]
SPEC_IMMUTABLE = "spec is immutable: a decision is not changed; create another approval"
APPROVED, PENDING, REJECTED, EXPIRED = (
    Reason.APPROVED,
    Reason.AWAITING_APPROVAL,
    Reason.REJECTED,
    Reason.APPROVAL_EXPIRED,
)


class RunbookApprovalSpec(_Model):
    """One decision on one request. Immutable."""

    request_id: RequestId = Field(description="The request id (of the Runbook) decided on.")
    decision: ApprovalDecision = Field(description="Approve, or Reject (the run then fails).")
    approver: Person = Field(
        min_length=1,
        description="Who decides: the Kubernetes user who creates this object, or the REST API's token name.",
    )
    requester: Person = Field(
        min_length=1,
        description="Who asked for the run: the Runbook's spec.requestedBy (an approval naming anyone else "
        "does not count). Nobody approves their own request.",
    )
    comment: ReasonText = Field("", description="Why, for the audit.")
    runbook_uid: RunbookUid | None = Field(
        None,
        description="The Runbook decided on (its metadata.uid): the approval then counts for that Runbook "
        "only, not for another one made later with the request id. Without it, it counts for the request "
        "id's Runbook (one made before the approval).",
    )


@dataclass(frozen=True)
class Vote:
    """An approval object as the count sees it; ``at`` is its creationTimestamp."""

    approver: str
    decision: ApprovalDecision
    at: datetime.datetime
    requester: str  # whose request the approval says it decides on
    comment: str = ""
    runbook_uid: str = ""  # the Runbook it decides on, if it names one


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


SYSTEM_PREFIX = "system:"  # Kubernetes' own identities: ServiceAccounts, nodes, the anonymous user


def person(name: str) -> bool:
    """Whether ``name`` may be a person's: not one of Kubernetes' own identities (``system:...``), above
    all a ServiceAccount (``system:serviceaccount:NAMESPACE:NAME``), whose token whoever may create one
    or a pod that mounts it holds: the requester too."""
    return not name.startswith(SYSTEM_PREFIX)


def identity(name: str) -> str:
    """Who ``name`` is, as the count tells people apart: without case, compatibility forms (full-width
    letters, ligatures), spaces and invisible format characters (a zero-width space). Kubernetes compares
    user names byte for byte, but an identity provider may not (LDAP and e-mail addresses ignore case), and
    a REST API token may be named otherwise than its holder's Kubernetes user: ``Alice`` approving alice's
    run, or ``bob`` and `` bob`` giving two of its approvals, would be one person's four eyes. Letters of
    other scripts that look alike (a Cyrillic a, U+0430) are not told apart here."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return "".join(c for c in folded if not c.isspace() and unicodedata.category(c) != "Cf")


def answerable(requester: str) -> bool:
    """Whether approvals can count for a request by ``requester``: a person, not nobody (an empty
    ``requestedBy``) and not a schedule that names nobody (``schedule:<name>``), whose runs anyone who may
    write schedules could otherwise ask for and approve."""
    return bool(requester) and not requester.startswith(REQUESTER_PREFIX)


def tally(
    votes: Iterable[Vote],
    *,
    runbook_uid: str,
    requester: str,
    required: int,
    requested_at: datetime.datetime,
    waiting_since: datetime.datetime,
    now: datetime.datetime,
    expire_after: datetime.timedelta,
    approved_at: datetime.datetime | None = None,
) -> Tally:
    """Count the decisions on the Runbook ``runbook_uid``, a request made by ``requester`` at
    ``requested_at`` that has waited for its approvals since ``waiting_since``; ``approved_at``: when it
    was approved, if it was (its status says so), counted again while it waits for its lock or after a
    restart.

    - A decision made before the request is ignored (it cannot have been about this Runbook). Creation
      times are whole seconds: an approval made in the request's second cannot be told from one made just
      before it, and is ignored too (a rejection in that second counts: ignoring it could only let a run
      start).
    - A rejection by anyone (the requester may withdraw) wins over any number of approvals.
    - An approval that names another Runbook (``runbook_uid``: one its request id named before, which the
      approver saw) is ignored; a rejection stops the run whatever Runbook it names, as whatever requester
      (ignoring one could only let a run start).
    - An approval counts only from a person (:func:`person`) other than the requester (a request that
      names nobody who answers for it cannot be approved at all: :func:`answerable`), if it names the
      requester (one naming another was not made for this request: the API server checks an approval
      against the requester it names, so only that one can be trusted), once per person, and only for
      ``expire_after`` after it was given. People are told apart by :func:`identity`: another spelling
      of the requester's name is the requester.
    - Without enough approvals ``expire_after`` after ``waiting_since``, the request has expired.
    - Once approved, a request stays approved: its approvals are counted as of ``approved_at`` (they do not
      expire while it waits for its turn), but a rejection still wins.
    """
    counted_at = approved_at or now
    who = identity(requester)
    counted: dict[str, Vote] = {}  # by identity()
    ignored: list[tuple[Vote, str]] = []
    rejection: Vote | None = None
    for vote in sorted(votes, key=lambda v: v.at):
        approver = identity(vote.approver)
        if vote.at < requested_at:
            ignored.append((vote, "given before the request"))
        elif vote.decision == "Reject":
            rejection = rejection or vote
        elif vote.runbook_uid and vote.runbook_uid != runbook_uid:
            ignored.append((vote, f"made for another Runbook with this request id (uid {vote.runbook_uid})"))
        elif vote.at == requested_at:
            ignored.append((vote, "given in the request's second: perhaps before it"))
        elif not answerable(requester):
            ignored.append(
                (vote, f"the request names nobody who answers for it ({requester or 'no requester'})")
            )
        elif approver == who:
            ignored.append((vote, "the requester cannot approve their own request"))
        elif not person(vote.approver):
            ignored.append(
                (vote, "not a person: whoever holds a ServiceAccount's token (the requester too) may give it")
            )
        elif vote.requester != requester:
            ignored.append((vote, f"it names another requester ({vote.requester})"))
        elif vote.at + expire_after <= counted_at:
            ignored.append((vote, "expired"))
        elif approver in counted:
            ignored.append((counted[approver], "repeated by the same person"))
            counted[approver] = vote
        else:
            counted[approver] = vote
    approved_by = tuple(counted.values())
    if rejection is not None:
        return Tally(REJECTED, required, approved_by, rejection, tuple(ignored))
    if len(approved_by) >= required:
        return Tally(APPROVED, required, approved_by, None, tuple(ignored))
    expires_at = waiting_since + expire_after
    state = EXPIRED if now >= expires_at else PENDING
    return Tally(state, required, approved_by, None, tuple(ignored), expires_at)
