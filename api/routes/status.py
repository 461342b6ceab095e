"""``GET /api/ops/status``: served from the watch cache, recomputed only when the cache changed."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import CacheDep, SettingsDep, StatusMemoDep, StatusReader
from api.jsonbody import StrictJSONRoute
from api.openapi import PROTECTED, responses
from api.schemas import StatusResponse

router = APIRouter(prefix="/api/ops", tags=["status"], route_class=StrictJSONRoute)


@router.get(
    "/status",
    response_model=StatusResponse,
    summary="Current environment state, recent runbooks, last health report and audit entries",
    responses=responses(*PROTECTED, 503),
)
async def get_status(
    settings: SettingsDep, cache: CacheDep, memo: StatusMemoDep, principal: StatusReader
) -> Response:
    body = await memo.get(cache, settings.zone, settings.api_history)
    return Response(body, media_type="application/json")
