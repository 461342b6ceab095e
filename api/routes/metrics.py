"""``GET /api/ops/metrics/summary`` and ``/timeseries``: platform metrics from Prometheus."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api.deps import MetricsReader, PrometheusDep, SettingsDep
from api.errors import ApiError
from api.prometheus import MAX_POINTS, TIMESERIES_UNITS, MetricsSource
from api.schemas import ErrorResponse, SummaryResponse, TimeseriesResponse

router = APIRouter(prefix="/api/ops/metrics", tags=["metrics"])
AUTH_ERRORS = {401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}}


class InvalidQuery(ApiError):
    status_code = 422


@router.get(
    "/summary",
    response_model=SummaryResponse,
    summary="The console overview's metrics; stale (value null) when there is no sample or no Prometheus",
    responses=AUTH_ERRORS,
)
async def summary(prometheus: PrometheusDep, principal: MetricsReader) -> JSONResponse:
    return JSONResponse(await prometheus.summary(), headers=_reused(prometheus))


@router.get(
    "/timeseries",
    response_model=TimeseriesResponse,
    summary="Samples of one allowed metric (its maximum over series) for charts",
    responses={**AUTH_ERRORS, 503: {"model": ErrorResponse, "description": "Prometheus unreachable"}},
)
async def timeseries(
    settings: SettingsDep,
    prometheus: PrometheusDep,
    principal: MetricsReader,
    metric: Annotated[str, Query(description=f"One of: {', '.join(TIMESERIES_UNITS)}.", max_length=100)],
    minutes: Annotated[int, Query(ge=1, le=10080, description="Lookback window.")] = 60,
    step_seconds: Annotated[int, Query(ge=1, le=3600, description="Sampling step.")] = 60,
) -> JSONResponse:
    if metric not in TIMESERIES_UNITS:
        raise InvalidQuery(
            f"metric {metric!r} is not allowed; allowed metrics: {', '.join(TIMESERIES_UNITS)}"
        )
    if minutes * 60 / step_seconds > MAX_POINTS:
        raise InvalidQuery(
            f"minutes={minutes} with step_seconds={step_seconds} asks for {minutes * 60 // step_seconds} "
            f"points; at most {MAX_POINTS}: use a step of at least {-(-minutes * 60 // MAX_POINTS)} seconds"
        )
    points = await prometheus.timeseries(metric, minutes, step_seconds, settings.zone)
    body = {"metric": metric, "unit": TIMESERIES_UNITS[metric], "points": points}
    return JSONResponse(body, headers=_reused(prometheus))


def _reused(prometheus: MetricsSource) -> dict[str, str]:
    """How long this answer stays current (the API reuses it that long): the console refreshes then."""
    return {"Cache-Control": f"private, max-age={prometheus.reuse_seconds:g}"}
