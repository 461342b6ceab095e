"""``POST /api/ops/runbooks/execute`` and ``GET /api/ops/runbooks/{request_id}``."""

from __future__ import annotations

from http import HTTPStatus

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api import auth
from api.cache import RunbookCache
from api.deps import CacheDep, Executing, RunbookReader, SettingsDep, SubmitterDep
from api.errors import Forbidden, NotFound
from api.records import RunbookRecord
from api.render import execute_response
from api.schemas import ErrorResponse, ExecuteRequest, ExecuteResponse
from api.submission import object_name

router = APIRouter(prefix="/api/ops/runbooks", tags=["runbooks"])


@router.post(
    "/execute",
    response_model=ExecuteResponse,
    summary="Run a command (as a Runbook) and wait, bounded, for its end",
    responses={
        202: {"model": ExecuteResponse, "description": "Still pending, queued or running past the wait"},
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        409: {"model": ErrorResponse, "description": "request_id already used with other parameters"},
        500: {"model": ErrorResponse, "description": "Script execution error (runner exit code 125)"},
        503: {"model": ErrorResponse},
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
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
)
async def get_runbook(
    request_id: str, settings: SettingsDep, cache: CacheDep, principal: RunbookReader
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
