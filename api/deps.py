"""Dependencies, as ``Annotated`` aliases: settings, the clients the lifespan created, and auth."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api import auth
from api.auth import Principal, TokenStore
from api.cache import RunbookCache
from api.errors import Forbidden, NotReady, Unauthorized
from api.execution import Executor
from api.prometheus import MetricsSource
from api.settings import ApiSettings, get_settings
from api.status import StatusMemo
from api.telemetry import ApiMetrics


@dataclass
class Clients:
    """What the lifespan creates, kept on ``app.state.clients``."""

    settings: ApiSettings
    tokens: TokenStore
    cache: RunbookCache
    executor: Executor
    prometheus: MetricsSource
    metrics: ApiMetrics
    status_memo: StatusMemo = field(default_factory=StatusMemo)


async def get_clients(request: Request) -> Clients:
    return request.app.state.clients


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
ClientsDep = Annotated[Clients, Depends(get_clients)]


async def get_cache(clients: ClientsDep) -> RunbookCache:
    return clients.cache


async def get_synced_cache(clients: ClientsDep) -> RunbookCache:
    if not clients.cache.synced.is_set():
        raise NotReady("the Runbook cache has not synced with the Kubernetes API yet")
    return clients.cache


async def get_prometheus(clients: ClientsDep) -> MetricsSource:
    return clients.prometheus


async def get_executor(clients: ClientsDep) -> Executor:
    return clients.executor


CacheDep = Annotated[RunbookCache, Depends(get_synced_cache)]
PrometheusDep = Annotated[MetricsSource, Depends(get_prometheus)]
ExecutorDep = Annotated[Executor, Depends(get_executor)]

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="OPS_API_TOKEN, or a token of the tokens file (MDOPS_API_TOKENS_FILE).",
)


async def current_principal(
    clients: ClientsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    principal = clients.tokens.authenticate(credentials.credentials)
    if principal is None:
        raise Unauthorized("invalid bearer token", error="invalid_token")
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require(permission: str):
    async def check(principal: PrincipalDep) -> Principal:
        if not principal.allows(permission):
            raise Forbidden(f"token {principal.name!r} lacks the permission {permission!r}")
        return principal

    return check


async def require_any_execute(principal: PrincipalDep) -> Principal:
    if not principal.may_execute_something():
        raise Forbidden(
            f"token {principal.name!r} lacks the permission {auth.EXECUTE!r} (or {auth.EXECUTE}:<command>)"
        )
    return principal


async def require_runbook_read(principal: PrincipalDep) -> Principal:
    """Reading one run: status:read, or the right to execute something (to follow one's own 202)."""
    if not (principal.allows(auth.STATUS_READ) or principal.may_execute_something()):
        raise Forbidden(f"token {principal.name!r} lacks the permission {auth.STATUS_READ!r}")
    return principal


StatusReader = Annotated[Principal, Depends(require(auth.STATUS_READ))]
MetricsReader = Annotated[Principal, Depends(require(auth.METRICS_READ))]
Executing = Annotated[Principal, Depends(require_any_execute)]
RunbookReader = Annotated[Principal, Depends(require_runbook_read)]
