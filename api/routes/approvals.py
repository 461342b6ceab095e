"""``POST /api/ops/runbooks/{request_id}/approve`` and ``/reject``: four eyes through the REST API.

A decision is a ``RunbookApproval`` object made as the token's name (``runbooks:approve``), so that kubectl,
RBAC, GitOps and the audit trail see it as they see one made with kubectl. The API's ServiceAccount may
name the token as the approver (the identities policy lets it: its Role has ``impersonate`` on
runbookapprovals); the API server still refuses an approval by the requester, which the API refuses first
(403). One decision per person and Runbook: the object's name comes from the request id, the Runbook's uid
and the person, so a second one is a 409, while a Runbook made again with the request id (after its first
expired, was rejected or was deleted) may be decided on again. A decision is on the Runbook the client saw:
given the run's ``created_at`` or ``uid`` as it was shown, the API refuses (409) one whose request id names
another Runbook now (the uid tells apart one made again within the second the one shown was made in), and
it writes the uid of the Runbook it checked into the approval (``runbookUid``), so that
one made again between this check and the controller's count does not get the decision either.
A decision counts only on a run the gate holds for approvals, or will: one that the namespace's policies,
evaluated now as the gate does, let start at once is refused (409) rather than recorded and ignored.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
from typing import Annotated

from fastapi import APIRouter, Body, Path
from fastapi.responses import JSONResponse
from kubernetes import client
from pydantic import ValidationError

from api.auth import Principal, reads
from api.cache import RunbookCache
from api.deps import RUNBOOK_READ, Approving, CacheDep, KubeDep, SettingsDep
from api.errors import Conflict, Forbidden
from api.jsonbody import StrictJSONRoute
from api.kube import REQUEST_TIMEOUT, KubeRequests
from api.openapi import PROTECTED, responses
from api.records import RunbookRecord
from api.render import iso
from api.routes.runbooks import find_run
from api.schemas import DecisionRequest, DecisionResponse
from runbooks import approval, crd, keys, policy
from runbooks.calendar import CalendarError, VenueCalendar
from runbooks.contract import Reason, RunState, parse_time
from runbooks.models import ApprovalDecision, RequestId, RunbookSpec

router = APIRouter(prefix="/api/ops/runbooks", tags=["approvals"], route_class=StrictJSONRoute)
RESPONSES = responses(
    *PROTECTED,
    404,
    409,
    415,
    422,
    503,
    c403="The token lacks runbooks:approve, or approves a run it asked for.",
    c404="No run has this request_id.",
    c409="The run is not the one the client named (its created_at or uid is not the one sent: made again "
    "since the client looked, or mistyped), too late (the run runs or has finished; to approve, it has "
    "passed the gate and waits for its lock, where a rejection still stops it), no policy asks for "
    "approvals for the run (the gate lets it start at once), already decided by this token, or the run "
    "names no requester (or, to approve, names a schedule that names nobody).",
)
RequestIdPath = Annotated[RequestId, Path(description="The run's request id.")]
Comment = Annotated[
    DecisionRequest | None,
    Body(description="An optional comment, and the run's created_at and uid as they were shown."),
]


def approval_name(request_id: str, uid: str, approver: str) -> str:
    """One name per Runbook and person (a DNS-1123 label whatever they hold)."""
    digest = hashlib.sha256(f"{request_id}\n{uid}\n{approver}".encode()).hexdigest()
    return f"rba-{digest[:40]}"


def _route(decision: ApprovalDecision, summary: str) -> None:
    """``POST /api/ops/runbooks/{request_id}/<decision>``: the same route for both decisions."""

    async def decide(
        request_id: RequestIdPath,
        settings: SettingsDep,
        cache: CacheDep,
        kube: KubeDep,
        principal: Approving,
        body: Comment = None,
    ) -> JSONResponse:
        return await _decide(
            decision, request_id, settings.zone, settings.calendar, cache, kube, principal, body
        )

    router.add_api_route(
        f"/{{request_id}}/{decision.lower()}",
        decide,
        methods=["POST"],
        name=decision.lower(),
        status_code=201,
        response_model=DecisionResponse,
        summary=summary,
        responses=RESPONSES,
    )


_route("Approve", "Approve another person's run that has not started (runbooks:approve)")
_route(
    "Reject", "Reject a run that has not started: it ends failed, Rejected (runbooks:approve; also one's own)"
)


async def _decide(
    decision: ApprovalDecision,
    request_id: str,
    zone: datetime.tzinfo,
    calendar: VenueCalendar,
    cache: RunbookCache,
    kube: KubeRequests,
    principal: Principal,
    body: DecisionRequest | None,
) -> JSONResponse:
    record = await find_run(cache, kube, request_id)
    approver = principal.name
    if body is not None and (named := _another(body, record, zone)):
        # Which run the request id names now, only to a token that may read it (as GET would show it).
        now = (
            f": its request id names Runbook {record.uid}, created at {iso(record.created, zone)}"
            if RUNBOOK_READ.allows(principal) and reads(principal, record)
            else ""
        )
        raise Conflict(
            f"run {request_id!r} is not the one you named ({named}){now}; "
            "either the run you named was deleted and its request id asked for again since you looked, or "
            "what you gave is mistyped: nothing was decided"
        )
    requester = record.spec.get("requestedBy") or ""
    if decision == "Approve" and approval.identity(approver) == approval.identity(requester):
        who = (
            repr(approver)
            if approver == requester
            else f"{approver!r} is {requester!r} to the count (names are told apart without case, spaces or "
            "invisible characters), who"
        )
        raise Forbidden(f"{who} asked for run {request_id!r}: nobody approves their own request")
    if not requester:
        raise Conflict(
            f"run {request_id!r} names no requester (spec.requestedBy), so no approval can count for it; "
            "cancel the run to stop it"
        )
    if decision == "Approve" and not approval.answerable(requester):
        raise Conflict(
            f"run {request_id!r} is requested by {requester}, a schedule that names nobody (its "
            "spec.requestedBy), so no approval can count for it; reject it, or cancel the run, to stop it"
        )
    if record.finished or record.status == RunState.RUNNING:
        state = "has finished" if record.finished else "has started"
        raise Conflict(f"run {request_id!r} {state}: too late to decide on it")
    if record.reason == Reason.QUEUED and decision == "Approve":  # the gate is before the lock
        raise Conflict(
            f"run {request_id!r} has passed the gate and waits for its target's lock: too late to approve "
            "it (a rejection still stops it until it starts)"
        )
    if record.reason != Reason.AWAITING_APPROVAL and not await _gate_counts(
        record.spec, cache, kube, calendar
    ):
        raise Conflict(
            f"no RunbookPolicy asks for approvals for run {request_id!r}: the gate lets it start without "
            "counting decisions, so this one would not count; cancel the run to stop it"
        )
    spec = approval.RunbookApprovalSpec(
        request_id=request_id,
        decision=decision,
        approver=approver,
        requester=requester,
        comment=body.comment if body else "",
        runbook_uid=record.uid or None,
    )
    if decision == "Approve":  # one from the run's own second would not count (whole seconds): the next
        early = record.created + datetime.timedelta(seconds=1) - datetime.datetime.now(datetime.UTC)
        # At most a second: the run was made before it was looked up, so a second from now is past its
        # second by the API server's clock too, however far this process's clock lags behind that one.
        await asyncio.sleep(min(max(early.total_seconds(), 0.0), 1.0))
    name = approval_name(request_id, record.uid, approver)
    manifest = crd.APPROVAL.manifest(name, spec.to_k8s(), labels={keys.MANAGED_BY: keys.API_MANAGER})
    try:
        made = await kube(
            kube.objects.create_namespaced_custom_object,
            keys.GROUP,
            keys.VERSION,
            cache.namespace,
            approval.PLURAL,
            manifest,
            _request_timeout=REQUEST_TIMEOUT,
        )
    except client.ApiException as error:
        if error.status != 409:
            raise
        raise Conflict(
            f"{approver!r} has already decided on run {request_id!r} (RunbookApproval {name}); "
            "a decision is not changed"
        ) from error
    answer = {
        "name": name,
        "request_id": request_id,
        "decision": decision,
        "approver": approver,
        "requester": requester,
        "comment": spec.comment,
        "created_at": iso(parse_time(made["metadata"].get("creationTimestamp")), zone),
    }
    return JSONResponse(answer, status_code=201)


def _another(body: DecisionRequest, record: RunbookRecord, zone: datetime.tzinfo) -> str | None:
    """The run the client named (``created at ...``, ``Runbook <uid>``) if it is not ``record``, the
    Runbook its request id names now; None if it is. The API cannot tell a run made again since the client
    looked from a time or uid mistyped: it keeps no deleted Runbook."""
    if body.created_at is not None and body.created_at != record.created:
        return f"created at {iso(body.created_at, zone)}"
    if body.uid is not None and str(body.uid) != record.uid:
        return f"Runbook {body.uid}"
    return None


async def _gate_counts(spec: dict, cache: RunbookCache, kube: KubeRequests, calendar: VenueCalendar) -> bool:
    """Whether the gate will count decisions on the run of ``spec``: the namespace's policies, evaluated
    now as the gate evaluates them, hold it for approvals, or for its window (then they may, if a rule
    that matches it asks for approvals), or refuse it. Whatever keeps the gate from deciding (a policy or
    a calendar it cannot read) holds the run there too, and it counts decisions once it can. A run it let
    through (waiting for its lock) is asked again before it starts, when a rejection came meanwhile."""
    try:
        listed = await kube(
            kube.objects.list_namespaced_custom_object,
            keys.GROUP,
            keys.VERSION,
            cache.namespace,
            policy.PLURAL,
            _request_timeout=REQUEST_TIMEOUT,
        )
    except client.ApiException as error:
        if error.status != 404:  # 404: no policy CRD installed, so no policy
            raise
        listed = {}
    items = listed.get("items") or []
    if not items:
        return False
    at = datetime.datetime.now(datetime.UTC)
    policies, unreadable = policy.parse(items)
    try:
        run = RunbookSpec.model_validate(spec)
        if any(u.concerns(run) for u in unreadable):
            return True  # the gate cannot decide either: the run waits for it
        decision = await asyncio.to_thread(policy.evaluate, policies, run, at, calendar)
    except (ValidationError, CalendarError):
        return True
    if isinstance(decision, policy.Wait):  # counted at the wait's end only if a rule may ask for approvals
        return any(r.approvals and r.match.matches(run) for p in policies.values() for r in p.rules)
    return not (isinstance(decision, policy.Allowed) and decision.expire_after is None)
