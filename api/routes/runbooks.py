"""``POST /api/ops/runbooks/execute``, ``GET /api/ops/runbooks/{request_id}`` and the runs list,
``GET /api/ops/runbooks``."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from kubernetes import client
from pydantic import AfterValidator

from api import auth, listing
from api.auth import Principal, reads
from api.cache import RunbookCache
from api.deps import CacheDep, Executing, KubeDep, RunbookReader, SettingsDep, StatusReader, SubmitterDep
from api.errors import NotFound
from api.jsonbody import StrictJSONRoute
from api.kube import REQUEST_TIMEOUT, KubeRequests
from api.openapi import LOCATION, PROTECTED, responses
from api.records import RunbookRecord, record_of
from api.render import execute_response, run_view, runbook_summary
from api.schemas import DECIMAL, DateTime, ExecuteRequest, ExecuteResponse, RunbooksPage, RunView
from api.submission import object_name
from runbooks import keys
from runbooks.contract import Command, RunState
from runbooks.models import RequestId

router = APIRouter(prefix="/api/ops/runbooks", tags=["runbooks"], route_class=StrictJSONRoute)
MAX_PAGE = 200


def _cursor(text: str | None) -> listing.Key | None:
    return None if text is None else listing.decode_cursor(text)


@router.get(
    "",
    response_model=RunbooksPage,
    summary="The runs, newest first, filtered, a page at a time (status:read)",
    responses=responses(*PROTECTED, 422, 503),
)
async def list_runbooks(
    settings: SettingsDep,
    cache: CacheDep,
    principal: StatusReader,
    command: Annotated[Command | None, Query(description="Only this command's runs.")] = None,
    status: Annotated[RunState | None, Query(description="Only runs in this state.")] = None,
    requested_by: Annotated[
        str | None,
        Query(max_length=253, description="Only runs whose requester's name contains this, in any case."),
    ] = None,
    since: Annotated[
        DateTime | None,
        Query(description="Only runs created at or after this time (with a UTC offset)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Runs per page."), DECIMAL] = 50,
    cursor: Annotated[
        str | None,
        Query(
            max_length=300,
            pattern=listing.CURSOR_PATTERN,
            description="The previous page's next_cursor: the runs that come after its last.",
        ),
        AfterValidator(_cursor),
    ] = None,
) -> JSONResponse:
    filters = listing.Filters(command, status, requested_by or None, since)
    found = listing.page(cache.ordered(), filters, limit, cursor)  # type: ignore[arg-type]
    return JSONResponse(
        {
            "runbooks": [runbook_summary(r, settings.zone) for r in found.records],
            "matched": found.matched,
            "next_cursor": None if found.next_cursor is None else listing.encode_cursor(found.next_cursor),
        }
    )


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
        **responses(
            *PROTECTED,
            409,
            415,
            422,
            429,
            503,
            c409="The request_id was already used with other parameters, or by another requester for a "
            "token without status:read, or its Runbook was deleted before the run finished (deleting a "
            "Runbook cancels its run).",
        ),
    },
)
async def execute(
    body: ExecuteRequest, settings: SettingsDep, submitter: SubmitterDep, principal: Executing
) -> JSONResponse:
    auth.permission(auth.execute_permission(body.command)).check(principal)
    record = await submitter.submit(body, principal)
    code = HTTPStatus.OK if record.finished else HTTPStatus.ACCEPTED
    headers = {"Location": f"/api/ops/runbooks/{record.request_id}"}
    return JSONResponse(execute_response(record, settings.zone), status_code=code, headers=headers)


@router.get(
    "/{request_id}",
    response_model=RunView,
    summary="One run by request id: the execute response's shape and more (a finished 125 is status failed)",
    responses=responses(*PROTECTED, 404, 422, 503, c404="No run has this request_id."),
)
async def get_runbook(
    request_id: Annotated[RequestId, Path(description="The run's request id.")],
    settings: SettingsDep,
    cache: CacheDep,
    kube: KubeDep,
    principal: RunbookReader,
) -> JSONResponse:
    return JSONResponse(run_view(await find_run(cache, kube, request_id, principal), settings.zone))


async def find_run(
    cache: RunbookCache, kube: KubeRequests, request_id: str, reader: Principal | None = None
) -> RunbookRecord:
    """The run of ``request_id``, or a 404; also when ``reader`` may not read it (its existence is not told
    either). A run the cache does not hold is asked of the API server (by the name the API gives its request
    id) before the 404 that says there is none: the cache may be behind its create (the watch stalled, or
    down while the kube-apiserver restarts; another API replica made it), and a client takes a 404 for
    final."""
    record = cached(cache, request_id)
    if record is None:
        try:
            found = record_of(await kube(read_runbook, kube, cache, object_name(request_id)))
        except client.ApiException as error:
            if error.status != 404:
                raise
        else:
            record = found if found.request_id == request_id else None
    return readable(record, request_id, reader)


def cached(cache: RunbookCache, request_id: str) -> RunbookRecord | None:
    """The run of ``request_id`` in the cache: by its request id, else by the name the API gives it."""
    record = cache.find(request_id)
    if record is None:
        byname = cache.get(object_name(request_id))
        record = byname if byname is not None and byname.request_id == request_id else None
    return record


def readable(record: RunbookRecord | None, request_id: str, reader: Principal | None) -> RunbookRecord:
    """``record``, or a 404 when there is none or ``reader`` may not read it."""
    if record is None or (reader is not None and not reads(reader, record)):
        raise NotFound(f"no runbook with request_id {request_id!r}")
    return record


def read_runbook(kube: KubeRequests, cache: RunbookCache, name: str) -> dict[str, Any]:
    """The Runbook ``name`` as the API server has it now (an ApiException 404: there is none)."""
    return kube.objects.get_namespaced_custom_object(
        keys.GROUP, keys.VERSION, cache.namespace, keys.PLURAL, name, _request_timeout=REQUEST_TIMEOUT
    )
