"""The Ops Console: its files at ``/console/`` (no token: they hold no data) and ``GET /api/ops/whoami``
(what the signed-in token may do, so that the page offers only that).

The files are package data of ``api`` (``api/console/``): the page's own ES modules and style sheet, and
in ``api/console/vendor/`` the front-end libraries copied from ``node_modules`` by ``make console``
(``tools/build-console.sh``; the Dockerfile runs it too). They are served with a strict
Content-Security-Policy: scripts, styles and connections from this origin only, nothing inline, no framing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import RedirectResponse
from starlette.datastructures import URL
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from api import auth
from api.deps import PrincipalDep, SettingsDep
from api.openapi import PROTECTED, responses
from api.schemas import WhoamiResponse
from runbooks.contract import Command

log = logging.getLogger("api.console")

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
PATH = "/console"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",  # revalidated (ETag) on every load: an upgrade reaches every browser
}

router = APIRouter(tags=["console"])


@router.get("/", include_in_schema=False)
@router.get(PATH, include_in_schema=False)
async def home() -> RedirectResponse:
    return RedirectResponse(f"{PATH}/")


@router.get(
    "/api/ops/whoami",
    response_model=WhoamiResponse,
    summary="The token's name and permissions, the commands it may run, execute's defaults and wait, the "
    "time zone and the event stream's heartbeat",
    responses=responses(*PROTECTED),
)
async def whoami(settings: SettingsDep, principal: PrincipalDep) -> dict:
    return {
        "name": principal.name,
        "permissions": sorted(principal.permissions),
        "commands": [c.value for c in Command if principal.allows(auth.execute_permission(c))],
        "mutating_commands": [c.value for c in Command if c.mutating],
        "execute_defaults": {
            "mode": settings.api_default_mode,
            "window": settings.api_default_window,
            "profile": settings.api_default_profile,
            "config": settings.api_default_config,
            "enforce": settings.api_default_enforce,
            "timeout_seconds": settings.api_default_timeout_seconds,
        },
        "time_zone": settings.timezone,
        "events_heartbeat_seconds": settings.api_events_heartbeat_seconds,
        "execute_wait_seconds": settings.api_execute_wait_seconds,
    }


class ConsoleFiles(StaticFiles):
    """The console's files, each answer with the security headers, and whole: they are small, and Starlette
    answers a Range it cannot serve in plain text (400, 416), where the API's errors are JSON. A server may
    ignore a Range (RFC 9110, 14.2), and this one offers none."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(name, value) for name, value in scope["headers"] if name not in (b"range", b"if-range")]
        await super().__call__({**scope, "headers": headers}, receive, send)

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if isinstance(response, RedirectResponse):  # a folder without its slash (``/console/.``): add it
            # to the path alone; Starlette's Location names the server of the request's Host header.
            response = RedirectResponse(URL(scope=scope).path + "/")
        response.headers.update(SECURITY_HEADERS)
        del response.headers["accept-ranges"]
        return response


def files() -> ConsoleFiles:
    if not (CONSOLE_DIR / "vendor").is_dir():
        log.warning("the console's libraries are missing (%s/vendor): run `make console`", CONSOLE_DIR)
    return ConsoleFiles(directory=CONSOLE_DIR, html=True)
