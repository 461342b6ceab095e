"""``GET /api/ops/metrics/summary`` and ``/timeseries``: platform metrics from Prometheus."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.deps import BEARER, MetricsReader, PrometheusDep, SettingsDep, request_permitted
from api.jsonbody import StrictJSONRoute
from api.openapi import PROTECTED, responses
from api.prometheus import MAX_POINTS, TIMESERIES_UNITS, MetricsSource
from api.schemas import DECIMAL, SummaryResponse, TimeseriesResponse
from runbooks.contract import METRICS_READ

router = APIRouter(prefix="/api/ops/metrics", tags=["metrics"], route_class=StrictJSONRoute)


@router.get(
    "/summary",
    response_model=SummaryResponse,
    summary="The console overview's metrics; stale (value null) when there is no sample or no Prometheus",
    responses=responses(
        *PROTECTED,
        503,
        c503="Prometheus is slow or unreachable: the queries asked of it earlier have not answered yet "
        "(an unreachable Prometheus that refuses at once makes the metrics stale instead).",
    ),
    openapi_extra={"security": [{BEARER: []}]},
)
async def summary(request: Request) -> Response:
    # Every open console polls this: the answer is reused bytes, and the route asks for no dependencies
    # (FastAPI's injection of the usual two would double its time; bench/api_latency.py).
    request_permitted(request, METRICS_READ)
    prometheus: MetricsSource = request.app.state.prometheus
    return Response(await prometheus.summary(), media_type="application/json", headers=_reused(prometheus))


@router.get(
    "/timeseries",
    response_model=TimeseriesResponse,
    summary="Samples of one allowed metric (its maximum over series) for charts",
    responses=responses(
        *PROTECTED,
        422,
        503,
        c503="Prometheus cannot be reached, or is slow: the queries asked of it earlier have not answered.",
    ),
)
async def timeseries(
    settings: SettingsDep,
    prometheus: PrometheusDep,
    principal: MetricsReader,
    metric: Annotated[
        str,
        Query(description="A metric name (never PromQL).", json_schema_extra={"enum": [*TIMESERIES_UNITS]}),
    ],
    minutes: Annotated[int, Query(ge=1, le=10080, description="Lookback window."), DECIMAL] = 60,
    step_seconds: Annotated[
        int,
        Query(
            ge=1,
            le=3600,
            description=f"Sampling step; raised to minutes * 60 / {MAX_POINTS} (rounded up) when it would "
            f"ask for more than {MAX_POINTS} points, Prometheus' limit.",
        ),
        DECIMAL,
    ] = 60,
) -> JSONResponse:
    if metric not in TIMESERIES_UNITS:
        # Never the value asked for: a 422 does not echo the request back.
        message = f"this metric is not allowed; allowed metrics: {', '.join(TIMESERIES_UNITS)}"
        raise RequestValidationError([{"loc": ("query", "metric"), "msg": message, "type": "enum"}])
    step = max(step_seconds, -(-minutes * 60 // MAX_POINTS))  # every valid query has an answer
    points = await prometheus.timeseries(metric, minutes, step, settings.zone)
    body = {"metric": metric, "unit": TIMESERIES_UNITS[metric], "points": points}
    return JSONResponse(body, headers=_reused(prometheus))


def _reused(prometheus: MetricsSource) -> dict[str, str]:
    """How long this answer stays current (the API reuses it that long): the console refreshes then."""
    return {"Cache-Control": f"private, max-age={prometheus.max_age:g}"}
