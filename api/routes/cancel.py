"""``POST /api/ops/runbooks/{request_id}/cancel``: stop a run, or keep it from starting, and keep its record.

A cancel is the Runbook's ``spec.cancel`` set, as the token's name (``requestedBy``) with the body's
reason, by a JSON merge patch guarded by the uid of the Runbook the API looked up: a Runbook made again
with the request id since is not cancelled in its place (409). The API server sets it once and only on an
unfinished Runbook (the CRD's rules); the API's ServiceAccount may name the token (the identities policy
lets it: its Role has ``impersonate`` on runbooks). The controller then keeps a run that has not started
from ever starting, or stops one running (README: the REST API's cancel).

Who may run a command may cancel its runs: the token needs the execute permission for the run's command,
and may read the run (``status:read``, or its own run); of a run it may not read, it is told nothing (404).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from fastapi.responses import JSONResponse
from kubernetes import client

from api import auth
from api.cache import RunbookCache
from api.deps import CacheDep, Executing, KubeDep, SettingsDep
from api.errors import Conflict, NotFound
from api.jsonbody import StrictJSONRoute
from api.kube import REQUEST_TIMEOUT, KubeRequests
from api.openapi import PROTECTED, responses
from api.records import RunbookRecord, record_of
from api.render import run_view
from api.routes.runbooks import find_run, read_runbook
from api.schemas import CancelRefused, CancelRequest, ErrorResponse, RunView
from runbooks import crd, keys
from runbooks.models import RequestId

router = APIRouter(prefix="/api/ops/runbooks", tags=["runbooks"], route_class=StrictJSONRoute)
RequestIdPath = Annotated[RequestId, Path(description="The run's request id.")]
Reason = Annotated[
    CancelRequest | None,
    Body(description="An optional reason, for the audit, and the run's uid as it was shown."),
]


@router.post(
    "/{request_id}/cancel",
    response_model=RunView,
    status_code=202,
    summary="Cancel a run: one not started never starts, one running is stopped (runbooks:execute)",
    responses={
        200: {"model": RunView, "description": "The run was already cancelled: nothing changed."},
        202: {
            "model": RunView,
            "description": "Cancelled: the controller stops the run, or never starts it.",
        },
        **responses(
            *PROTECTED,
            404,
            415,
            422,
            503,
            c403="The token lacks the execute permission for the run's command.",
            c404="No run has this request_id (or the token may not read it: status:read, or its own).",
        ),
        409: {
            "model": CancelRefused | ErrorResponse,
            "description": "The run has finished: nothing to cancel (its record is in the body, with why); "
            "or (only detail: nothing was cancelled) the request id names another Runbook than the uid "
            "sent, or its Runbook was deleted and made again as it was cancelled.",
        },
    },
)
async def cancel(
    request_id: RequestIdPath,
    settings: SettingsDep,
    cache: CacheDep,
    kube: KubeDep,
    principal: Executing,
    body: Reason = None,
) -> JSONResponse:
    record = await find_run(cache, kube, request_id, principal)
    auth.permission(auth.execute_permission(record.command)).check(principal)
    zone = settings.zone
    if body is not None and body.uid is not None and str(body.uid) != record.uid:
        raise Conflict(
            f"run {request_id!r} is not the one you named (Runbook {body.uid}): either the run you named was "
            "deleted and its request id asked for again since you looked, or the uid is mistyped: nothing "
            "was cancelled"
        )
    if record.spec.get("cancel") is not None:
        return JSONResponse(run_view(record, zone), status_code=200)
    if record.finished:
        return finished(record, zone)
    wanted = {"requestedBy": principal.name, "reason": body.reason if body else ""}
    patch = {"metadata": {"uid": record.uid}, "spec": {"cancel": wanted}}
    try:
        patched = await kube(_patch, kube, cache, record.name, patch)
    except client.ApiException as error:
        if error.status == 404:
            raise _deleted(request_id) from error
        refusal = _refusal(error)
        if error.status != 422:
            raise
        if "metadata.uid" in refusal.fields:  # the precondition: another Runbook has its name now
            raise _made_again(request_id) from error
        if not (crd.CANCEL_FINISHED in refusal.message or crd.CANCEL_ONCE in refusal.message):
            raise
        # The API server knew better than the cache: the run has finished, or been cancelled, meanwhile.
        try:
            now = record_of(await kube(read_runbook, kube, cache, record.name))
        except client.ApiException as gone:
            if gone.status != 404:
                raise
            raise _deleted(request_id) from gone  # and deleted since: as if it had been before the patch
        if now.uid != record.uid:  # deleted and made again since: not the run refused, nor one cancelled
            raise _made_again(request_id) from error
        if crd.CANCEL_FINISHED in refusal.message:
            return finished(now, zone)
        return JSONResponse(run_view(now, zone), status_code=200)
    return JSONResponse(run_view(record_of(patched), zone), status_code=202)


def _deleted(request_id: str) -> NotFound:
    """The 404 of a run whose Runbook the API server no longer has: as for a run that does not exist."""
    return NotFound(f"no runbook with request_id {request_id!r}: deleted as it was cancelled")


def _made_again(request_id: str) -> Conflict:
    """The 409 of a run whose Runbook was deleted, and made again with its request id, as it was cancelled."""
    return Conflict(
        f"run {request_id!r} was deleted and its Runbook made again as it was cancelled: nothing was "
        "cancelled; look at the run again"
    )


def finished(record: RunbookRecord, zone: datetime.tzinfo) -> JSONResponse:
    """The 409 of a run that has finished: why, and the run as it ended."""
    outcome = record.status + (f", exit code {record.exit_code}" if record.exit_code is not None else "")
    detail = f"run {record.request_id!r} has finished ({outcome}): nothing to cancel"
    return JSONResponse({"detail": detail, **run_view(record, zone)}, status_code=409)


@dataclass(frozen=True)
class Refusal:
    """What the API server said when it refused the patch: its message, and the fields it named."""

    message: str
    fields: frozenset[str]


def _refusal(error: client.ApiException) -> Refusal:
    try:
        status = json.loads(error.body)
        causes = (status.get("details") or {}).get("causes") or []
        return Refusal(str(status["message"]), frozenset(str(c.get("field")) for c in causes))
    except (TypeError, ValueError, KeyError, AttributeError):
        return Refusal(str(error.reason), frozenset())


def _patch(kube: KubeRequests, cache: RunbookCache, name: str, patch: dict[str, Any]) -> dict[str, Any]:
    return kube.objects.patch_namespaced_custom_object(
        keys.GROUP,
        keys.VERSION,
        cache.namespace,
        keys.PLURAL,
        name,
        patch,
        _content_type="application/merge-patch+json",
        _request_timeout=REQUEST_TIMEOUT,
    )
