"""``POST /api/ops/runbooks/execute`` and ``GET /api/ops/runbooks/{request_id}``."""

from __future__ import annotations

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse

from api import auth
from api.deps import CacheDep, ClientsDep, Executing, ExecutorDep, RunbookReader
from api.errors import Forbidden, NotFound
from api.execution import object_name
from api.schemas import ErrorResponse, ExecuteRequest, ExecuteResponse
from api.views import execute_response

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
    body: ExecuteRequest, clients: ClientsDep, executor: ExecutorDep, principal: Executing
) -> JSONResponse:
    permission = auth.execute_permission(body.command)
    if not principal.allows(permission):
        raise Forbidden(f"token {principal.name!r} lacks the permission {permission!r}")
    outcome = await executor.execute(body, principal)
    record = outcome.record
    code = status.HTTP_200_OK if record.finished else status.HTTP_202_ACCEPTED
    headers = {"Location": f"/api/ops/runbooks/{record.request_id}"}
    return JSONResponse(execute_response(record, clients.settings.zone), status_code=code, headers=headers)


@router.get(
    "/{request_id}",
    response_model=ExecuteResponse,
    summary="One run by request id, in the execute response's shape (a finished 125 is status failed)",
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
)
async def get_runbook(
    request_id: str, clients: ClientsDep, cache: CacheDep, principal: RunbookReader
) -> JSONResponse:
    record = cache.find(request_id)
    if record is None:
        byname = cache.get(object_name(request_id))
        record = byname if byname is not None and byname.request_id == request_id else None
    if record is None:
        raise NotFound(f"no runbook with request_id {request_id!r}")
    return JSONResponse(execute_response(record, clients.settings.zone))
