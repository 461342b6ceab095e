"""The Ops Console REST API: ``create_app()`` builds it; its lifespan creates the clients and the cache."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import urllib3.exceptions
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from kubernetes import client
from starlette.exceptions import HTTPException

from api.auth import TokenStore
from api.cache import RunbookCache
from api.edge import EdgeMiddleware, served
from api.errors import ApiError
from api.events import EventLog, StreamLimiter
from api.kube import KubeRequests, requests_client
from api.prometheus import MetricsSource
from api.render import StatusMemo
from api.routes import approvals, cancel, console, events, health, metrics, runbooks, schedules, status
from api.settings import ApiSettings, get_settings
from api.submission import Submitter
from api.telemetry import ApiMetrics, MetricsMiddleware
from runbooks.kube import api_client

log = logging.getLogger("api")

DESCRIPTION = """The Ops Console REST API of mdops (`docs/ops-console-api.md`).

Every endpoint but `/healthz`, `/readyz` and the Ops Console's files (`/console/`) needs
`Authorization: Bearer <token>`: 401 without a valid token, 403 without the permission. Timestamps are
ISO 8601 with the configured zone's offset."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = app.state.settings = app.state.settings or get_settings()
    tokens = TokenStore.load(settings.api_token, settings.api_tokens_file)
    if not len(tokens):
        log.warning("no token configured (OPS_API_TOKEN, MDOPS_API_TOKENS_FILE): every request gets 401")
    kube_requests = requests_client(settings.kubeconfig, settings.in_cluster)  # api.kube: prompt 503s
    kube_watch = api_client(settings.kubeconfig, settings.in_cluster)
    cache = RunbookCache(
        kube_watch, settings.namespace, events=EventLog(settings.api_events_buffer), probe=kube_requests
    ).start()
    prometheus = MetricsSource(
        settings.prometheus_url, settings.prometheus_timeout_seconds, settings.api_metrics_max_age_seconds
    )
    app.state.tokens = tokens
    app.state.cache = cache
    app.state.kube = kube = KubeRequests(kube_requests)  # execute's, approvals', schedules'
    app.state.submitter = Submitter(kube, cache, settings)
    app.state.prometheus = prometheus
    app.state.status_memo = StatusMemo()
    app.state.streams = StreamLimiter(settings.api_events_streams_per_token)
    settings.calendar.prefetch(datetime.datetime.now(datetime.UTC))  # status' session, schedules' slots
    log.info(
        "serving Runbooks of namespace %s, metrics of %s, %d token(s)",
        settings.namespace,
        without_credentials(settings.prometheus_url),
        len(tokens),
    )
    try:
        yield
    finally:
        await asyncio.to_thread(cache.stop)
        prometheus.close()
        kube.close()
        kube_requests.close()
        kube_watch.close()


def without_credentials(url: str) -> str:
    """``url`` without a user and password, for logs."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


async def _api_error(request: Request, error: ApiError) -> JSONResponse:
    return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=error.headers)


async def _http_error(request: Request, error: HTTPException) -> Response:
    """The router's own errors, as FastAPI answers them; but its 405 (a method the path does not serve)
    lists HEAD wherever it lists GET, as the edge's 405 does: the edge serves HEAD as GET."""
    if error.status_code == 405 and "Allow" in (error.headers or {}):
        methods = ", ".join(served(set(error.headers["Allow"].split(", "))))
        error = HTTPException(405, error.detail, headers={**error.headers, "Allow": methods})
    return await http_exception_handler(request, error)


# What the API server's message says of a refusal by the cluster's own rules, not of the API's rights.
ADMISSION_DENIALS = ("denied request", "denied the request", "exceeded quota")


def refused_by_cluster(status: int, message: str) -> bool:
    """Whether the API server refused an object for the request's sake, so that asking again changes nothing
    until the cluster's rules do: as invalid (400, 422), or by an admission policy, a webhook or a quota of
    the cluster's own (a 403 that says it denied the request, or that a quota is exceeded). Not another
    403: the API's own ServiceAccount lacks a right, a namespace is being deleted, a quota not counted yet."""
    return status in (400, 422) or (status == 403 and any(mark in message for mark in ADMISSION_DENIALS))


async def _kubernetes_error(request: Request, error: Exception) -> JSONResponse:
    headers: dict[str, str] = {}
    if isinstance(error, client.ApiException):
        if error.status == 429:  # the API server is overloaded (its priority and fairness): say when to retry
            after = str((error.headers or {}).get("Retry-After", ""))
            headers["Retry-After"] = after if after.isdigit() else "1"
        if error.status in (400, 403, 422):
            try:
                message = str(json.loads(error.body)["message"])
            except (TypeError, ValueError, KeyError):
                message = str(error.reason)
            if refused_by_cluster(error.status, message):
                issue = {"loc": ["body"], "msg": f"the Kubernetes API server refused it: {message}"}
                return JSONResponse({"detail": [{**issue, "type": "kubernetes_refused"}]}, status_code=422)
        detail = f"Kubernetes API error: {error.status} {error.reason}"
    else:
        detail = f"Kubernetes API unreachable: {type(error).__name__}"
    log.warning("%s %s: %s", request.method, request.url.path, detail)
    return JSONResponse({"detail": detail}, status_code=503, headers=headers)


MAX_ISSUES = 20  # a 422 lists this many problems, then says how many more


def issues(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Validation errors as the 422's ``detail``: where (``loc``), what (``msg``) and which kind (``type``).
    The client's input is never echoed back, so no input can make the answer fail to encode. The first
    ``MAX_ISSUES`` only, then one that says how many more: a body of thousands of unknown fields got an
    answer nine times its size."""
    out = []
    for error in errors[:MAX_ISSUES]:
        message = str(error.get("msg", ""))
        reason = (error.get("ctx") or {}).get("error")
        if isinstance(reason, str):  # e.g. why the JSON did not parse
            message = f"{message}: {reason}"
        loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
        out.append({"loc": loc, "msg": message, "type": str(error.get("type", ""))})
    if (more := len(errors) - MAX_ISSUES) > 0:
        out.append(
            {"loc": [], "msg": f"and {more} more problem{'s' * (more > 1)}", "type": "too_many_errors"}
        )
    return out


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": issues(error.errors())}, status_code=422)


async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    """Any other failure: a 500 with the usual JSON body (uvicorn logs the traceback)."""
    return JSONResponse({"detail": f"internal error: {type(error).__name__}"}, status_code=500)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    app = FastAPI(
        title="mdops Ops Console API",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url=None,  # served by api.routes.health for a valid token; no interactive docs
        docs_url=None,
        redoc_url=None,
        # A path with one more slash than a route's is unknown (a JSON 404), not a redirect: Starlette's had
        # no body, and its Location was made from the request's Host header.
        redirect_slashes=False,
        # No OpenTelemetry: the API's metrics are its own (api.telemetry), and FastAPI's native telemetry
        # would look for a configured provider on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    # The routes read the settings from here (api.deps), never through dependency_overrides: with any
    # override, FastAPI analyses every dependency's signature again on each request (3 ms of CPU here).
    app.state.settings = settings  # None: from the environment, as the app starts
    app.state.metrics = ApiMetrics()
    app.state.metrics.watch_cache(lambda: getattr(app.state, "cache", None))
    app.add_middleware(EdgeMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # the outermost: counts the edge's too
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(client.ApiException, _kubernetes_error)
    app.add_exception_handler(urllib3.exceptions.HTTPError, _kubernetes_error)
    app.add_exception_handler(Exception, _internal_error)
    routers = (status, metrics, runbooks, cancel, approvals, schedules, events, console, health)
    for router in (module.router for module in routers):
        app.include_router(router)
    app.mount(console.PATH, console.files(), name="console")
    return app


app = create_app()
