"""Dependencies, as ``Annotated`` aliases: the settings, what the lifespan made (kept on ``app.state``: the
Runbook cache, the submitter, the Prometheus source, the status memo, the API's own metrics, the
requests of approvals and schedules to the Kubernetes API), and the principal the edge authenticated
(:mod:`api.edge`) with its permissions."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api import auth
from api.auth import Principal
from api.cache import RunbookCache
from api.errors import NotReady, Unauthorized
from api.kube import KubeRequests
from api.prometheus import MetricsSource
from api.render import StatusMemo
from api.settings import ApiSettings
from api.submission import Submitter
from api.telemetry import ApiMetrics
from runbooks.contract import APPROVE, EXECUTE, METRICS_READ, STATUS_READ


async def get_app_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


async def get_cache(request: Request) -> RunbookCache:
    return request.app.state.cache


async def get_synced_cache(cache: Annotated[RunbookCache, Depends(get_cache)]) -> RunbookCache:
    if not cache.synced.is_set():
        raise NotReady("the Runbook cache has not synced with the Kubernetes API yet")
    return cache


async def get_submitter(request: Request) -> Submitter:
    return request.app.state.submitter


async def get_prometheus(request: Request) -> MetricsSource:
    return request.app.state.prometheus


async def get_status_memo(request: Request) -> StatusMemo:
    return request.app.state.status_memo


async def get_metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


async def get_kube(request: Request) -> KubeRequests:
    return request.app.state.kube


SettingsDep = Annotated[ApiSettings, Depends(get_app_settings)]
AnyCacheDep = Annotated[RunbookCache, Depends(get_cache)]  # synced or not (readiness)
CacheDep = Annotated[RunbookCache, Depends(get_synced_cache)]
SubmitterDep = Annotated[Submitter, Depends(get_submitter)]
PrometheusDep = Annotated[MetricsSource, Depends(get_prometheus)]
StatusMemoDep = Annotated[StatusMemo, Depends(get_status_memo)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
KubeDep = Annotated[KubeRequests, Depends(get_kube)]  # approvals, schedules

BEARER = "bearer"  # the security scheme's name in the OpenAPI document
bearer = HTTPBearer(
    auto_error=False,
    scheme_name=BEARER,
    description="OPS_API_TOKEN, or a token of the tokens file (MDOPS_API_TOKENS_FILE).",
)


def principal_of(request: Request) -> Principal:
    """Who the edge (:mod:`api.edge`) authenticated, before the body was read."""
    principal = request.scope.get("state", {}).get("principal")
    if principal is None:  # a route outside the edge's protected paths asked for a principal
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    return principal


async def current_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    """:func:`principal_of`, as a dependency. ``credentials`` is not read again: it declares the bearer
    scheme in the OpenAPI document."""
    return principal_of(request)


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require(requirement: auth.Requirement):
    """A dependency that checks ``requirement`` (403); the edge finds it as the dependency's
    ``requirement`` and checks it before it reads a body (:func:`api.edge.requirements`)."""

    async def check(principal: PrincipalDep) -> Principal:
        return requirement.check(principal)

    check.requirement = requirement  # type: ignore[attr-defined]
    return check


def request_permitted(request: Request, permission: str) -> Principal:
    """The request's principal, with ``permission`` (else 403), read without dependency injection: for an
    endpoint every open console polls, where FastAPI's injection would cost as much as the answer."""
    return auth.permission(permission).check(principal_of(request))


ANY_EXECUTE = auth.Requirement(Principal.may_execute_something, f"{EXECUTE!r} (or {EXECUTE}:<command>)")
# Reading one run: status:read, or the right to execute something (to follow one's own 202: the runs such a
# token may read are its own, :func:`api.auth.reads`).
RUNBOOK_READ = auth.Requirement(
    lambda p: p.allows(STATUS_READ) or p.may_execute_something(), repr(STATUS_READ)
)
StatusReader = Annotated[Principal, Depends(require(auth.permission(STATUS_READ)))]
MetricsReader = Annotated[Principal, Depends(require(auth.permission(METRICS_READ)))]
Approving = Annotated[Principal, Depends(require(auth.permission(APPROVE)))]
Executing = Annotated[Principal, Depends(require(ANY_EXECUTE))]
RunbookReader = Annotated[Principal, Depends(require(RUNBOOK_READ))]
