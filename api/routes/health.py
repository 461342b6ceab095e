"""``/healthz`` (the process answers), ``/readyz`` (the cache has synced), ``/metrics`` (the API's own)
and ``/openapi.json`` (for any valid token: only the health endpoints are open)."""

from __future__ import annotations

import datetime

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import AnyCacheDep, MetricsDep, MetricsReader, PrincipalDep, SettingsDep
from runbooks.calendar import library_version

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive (no token)")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The Runbook cache has synced (no token); the venue's session beside")
def readyz(cache: AnyCacheDep, settings: SettingsDep) -> JSONResponse:
    ready = cache.synced.is_set()
    now, venue = datetime.datetime.now(datetime.UTC), settings.calendar
    calendar = venue.loaded(now)
    body = {
        "status": "ready" if ready else "not ready",
        "runbooks": len(cache),
        "watch_connected": cache.connected,
        "venue": venue.venue,
        "session": calendar.state(now).value if calendar is not None else None,  # not needed to be ready
        "calendar": library_version(),
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", summary="The API's own metrics, Prometheus text format (metrics:read)")
def metrics(own_metrics: MetricsDep, principal: MetricsReader) -> Response:
    return Response(generate_latest(own_metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request, principal: PrincipalDep) -> JSONResponse:
    return JSONResponse(request.app.openapi())
