"""``/healthz`` (the process answers), ``/readyz`` (the cache has synced), ``/metrics`` (the API's own)
and ``/openapi.json`` (for any valid token: only the health endpoints are open)."""

from __future__ import annotations

import datetime

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import AnyCacheDep, MetricsDep, MetricsReader, PrincipalDep, SettingsDep
from api.jsonbody import StrictJSONRoute
from api.openapi import COMMON, PROTECTED, responses
from api.schemas import Readiness
from runbooks.calendar import library_version

router = APIRouter(tags=["health"], route_class=StrictJSONRoute)


@router.get("/healthz", summary="The process is alive (no token)", responses=responses(*COMMON))
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The Runbook cache has synced and its watch is open (no token); the venue's session beside",
    response_model=Readiness,
    responses={**responses(*COMMON), 503: {"model": Readiness, "description": "Not ready, and why."}},
)
def readyz(cache: AnyCacheDep, settings: SettingsDep) -> JSONResponse:
    """Open to probes, so it says nothing about the Runbooks themselves. The venue's session is detail:
    the API is ready without it (the status says why it is missing)."""
    now, venue = datetime.datetime.now(datetime.UTC), settings.calendar
    calendar = venue.loaded(now)
    session = {
        "venue": venue.venue,
        "session": calendar.state(now).value if calendar is not None else None,
        "calendar": library_version(),
    }
    if not cache.synced.is_set():
        reason = "the Runbook cache has not listed the Runbooks yet"
    elif cache.down_for() > settings.api_watch_grace_seconds:
        reason = f"the Runbook watch has been down for {cache.down_for():.0f}s"
    else:
        return JSONResponse({"status": "ready", **session})
    return JSONResponse({"status": "not ready", "reason": reason, **session}, status_code=503)


@router.get(
    "/metrics",
    summary="The API's own metrics, Prometheus text format (metrics:read)",
    response_class=Response,
    responses={
        200: {
            "description": "The Prometheus text format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **responses(*PROTECTED),
    },
)
def metrics(own_metrics: MetricsDep, principal: MetricsReader) -> Response:
    return Response(generate_latest(own_metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request, principal: PrincipalDep) -> JSONResponse:
    return JSONResponse(request.app.openapi())
