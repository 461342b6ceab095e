"""``POST /api/ops/runbooks/execute`` and ``GET /api/ops/runbooks/{request_id}``."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from api import auth
from api.cache import RunbookCache
from api.deps import CacheDep, Executing, RunbookReader, SettingsDep, SubmitterDep
from api.errors import Forbidden, NotFound
from api.jsonbody import StrictJSONRoute
from api.openapi import LOCATION, PROTECTED, responses
from api.records import RunbookRecord
from api.render import execute_response
from api.schemas import ExecuteRequest, ExecuteResponse
from api.submission import object_name
from runbooks.models import RequestId

router = APIRouter(prefix="/api/ops/runbooks", tags=["runbooks"], route_class=StrictJSONRoute)


@router.post(
    "/execute",
    response_model=ExecuteResponse,
    summary="Run a command (as a Runbook) and wait, bounded, for its end",
    responses={
        200: {"description": "The run has finished (success or failed)", "headers": LOCATION},
        202: {
            "model": ExecuteResponse,
            "description": "Still pending, queued or running past the wait",
            "headers": LOCATION,
        },
        **responses(*PROTECTED, 409, 422, 429, 503),
    },
)
async def execute(
    body: ExecuteRequest, settings: SettingsDep, submitter: SubmitterDep, principal: Executing
) -> JSONResponse:
    permission = auth.execute_permission(body.command)
    if not principal.allows(permission):
        raise Forbidden(f"token {principal.name!r} lacks the permission {permission!r}")
    record = await submitter.submit(body, principal)
    code = HTTPStatus.OK if record.finished else HTTPStatus.ACCEPTED
    headers = {"Location": f"/api/ops/runbooks/{record.request_id}"}
    return JSONResponse(execute_response(record, settings.zone), status_code=code, headers=headers)


@router.get(
    "/{request_id}",
    response_model=ExecuteResponse,
    summary="One run by request id, in the execute response's shape (a finished 125 is status failed)",
    responses=responses(*PROTECTED, 404, 422, 503, c404="No run has this request_id."),
)
async def get_runbook(
    request_id: Annotated[RequestId, Path(description="The run's request id.")],
    settings: SettingsDep,
    cache: CacheDep,
    principal: RunbookReader,
) -> JSONResponse:
    return JSONResponse(execute_response(lookup(cache, request_id), settings.zone))


def lookup(cache: RunbookCache, request_id: str) -> RunbookRecord:
    """The run of ``request_id``, or a 404."""
    record = cache.find(request_id)
    if record is None:
        byname = cache.get(object_name(request_id))
        record = byname if byname is not None and byname.request_id == request_id else None
    if record is None:
        raise NotFound(f"no runbook with request_id {request_id!r}")
    return record
