"""``GET /api/ops/status``: served from the watch cache, recomputed only when the cache or the venue's session
changed."""

from __future__ import annotations

import datetime

from fastapi import APIRouter, Response

from api.deps import CacheDep, SettingsDep, StatusMemoDep, StatusReader
from api.jsonbody import StrictJSONRoute
from api.openapi import PROTECTED, responses
from api.render import session_view
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
    now, venue = datetime.datetime.now(datetime.UTC), settings.calendar
    session = session_view(venue.venue, venue.loaded(now), now, settings.zone, venue.note(now))
    body = await memo.get(cache, settings.zone, settings.api_history, session)
    return Response(body, media_type="application/json")
