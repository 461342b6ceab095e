"""The API's edge: what every HTTP request goes through before FastAPI sees it, as one pure ASGI middleware,
so that it acts on the headers alone and before anything reads the body:

1. **methods**: a method outside :data:`KNOWN_METHODS` is a 405 (so it never becomes a metric label); HEAD
   is served as GET is, without the body (:func:`head_only`), wherever GET is: FastAPI's routes serve GET
   alone, and adding HEAD to them would list a HEAD operation for each in the OpenAPI document;
2. **authentication**: a protected path (:func:`protected`: every ``/api/`` route, ``/metrics`` and
   ``/openapi.json``) without a valid bearer token is a 401 with ``WWW-Authenticate: Bearer``, before a
   byte of the body is read; the principal goes to ``scope["state"]`` for the routes' permission checks;
   a request with a body whose token lacks what its route requires of every token (:func:`requirements`:
   execute's any execute permission, approve's ``runbooks:approve``) is a 403 before its body is read too:
   such a client learns nothing of how the body would have been judged, and makes the server read none;
3. **body size**: a body larger than ``MDOPS_API_MAX_BODY_BYTES`` is a 413, at once when its
   ``Content-Length`` says so, else as soon as the streamed (chunked) body passes the limit. The body is
   read here, never more than the limit plus one chunk, and handed on to the route. A request with both
   a ``Content-Length`` and a ``Transfer-Encoding`` is a 400 (:class:`BadFraming`), before its token is
   looked at.

A request refused with its body unread is answered with ``Connection: close``: uvicorn would otherwise
read and discard the rest of it to keep the connection. A request whose client goes away before its body
is whole (it disconnected, or ran out of time: :mod:`api.server`) is not handed on: no route acts on
part of a request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.routing import RouteContext, iter_route_contexts
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Match

from api.auth import Principal, Requirement, TokenStore
from api.errors import ApiError, Unauthorized

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# RFC 9110's methods and PATCH: anything else is refused before routing and counted as "other".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
MOUNTED = frozenset({"GET"})  # what a mount serves: the console's static files
OTHER = "other"
UNMATCHED = "unmatched"


def protected(path: str) -> bool:
    """Paths that need a token: the REST API, the API's own metrics and its OpenAPI document. Others (the
    health probes, unknown paths: 404) are open; a route added under ``/api/`` is protected by being there."""
    return path.startswith("/api/") or path in ("/metrics", "/openapi.json")


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else OTHER


def route_of(routes: list[BaseRoute], scope: Scope) -> RouteContext | None:
    """The route a request's path belongs to (whatever its method), as the router would find it."""
    for route in iter_route_contexts(routes):
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return route
    return None


def allowed(routes: list[BaseRoute], scope: Scope) -> list[str]:
    """The methods of the request's route; of the whole API when the path is none of its routes'. A mount
    (the console's files) has no methods of its own: it serves GET. HEAD is served wherever GET is."""
    route = route_of(routes, scope)
    chosen = [route] if route is not None else list(iter_route_contexts(routes))
    return served(set().union(*(MOUNTED if r.methods is None else r.methods for r in chosen)))


def served(methods: set[str]) -> list[str]:
    """The methods served where a route's are: HEAD too wherever GET is (:class:`EdgeMiddleware`)."""
    return sorted(methods | {"HEAD"} if "GET" in methods else methods)


def requirements(routes: list[BaseRoute], scope: Scope) -> list[Requirement]:
    """What the route that serves the request requires of its token before anything else (its
    dependencies made by :func:`api.deps.require`)."""
    for route in iter_route_contexts(routes):
        if route.matches(scope)[0] is Match.FULL:
            dependant = getattr(route, "dependant", None)  # a mount (the console's files) has none
            calls = (dependency.call for dependency in dependant.dependencies) if dependant else ()
            return [found for call in calls if (found := getattr(call, "requirement", None))]
    return []


def route_label(routes: list[BaseRoute], scope: Scope) -> str:
    """The route template of a request (bounded: never the raw path), or ``unmatched``."""
    route = scope.get("route") or route_of(routes, scope)
    return getattr(route, "path", None) or UNMATCHED


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length (uvicorn has already refused a malformed one), or None."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            return int(value)
    return None


def chunked(scope: Scope) -> bool:
    return any(name == b"transfer-encoding" for name, _ in scope.get("headers", []))


def has_body(scope: Scope) -> bool:
    return chunked(scope) or (declared_length(scope) or 0) > 0


class BadFraming(ApiError):
    """Both Content-Length and Transfer-Encoding: the server reads the body by the latter (RFC 9112, 6.3),
    a proxy in front of it may have read it by the former. Refused, as the RFC allows, and the connection
    closed, as it requires."""

    status_code = 400

    def __init__(self) -> None:
        super().__init__(
            "a request with both Content-Length and Transfer-Encoding is refused (RFC 9112, 6.3)"
        )


class MethodNotAllowed(ApiError):
    status_code = 405


class ClientGone(Exception):
    """The client went away before its request's body was whole."""


class ContentTooLarge(ApiError):
    status_code = 413

    def __init__(self, limit: int):
        super().__init__(f"request body larger than {limit} bytes (MDOPS_API_MAX_BODY_BYTES)")


async def refuse(scope: Scope, receive: Receive, send: Send, error: ApiError) -> None:
    headers = dict(error.headers or {})
    if has_body(scope):
        headers["Connection"] = "close"
    response = JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=headers)
    await response(scope, receive, send)


class EdgeMiddleware:
    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = scope["app"]  # the FastAPI application (Starlette puts itself there)
        try:
            if scope["method"] not in KNOWN_METHODS:
                raise MethodNotAllowed("Method Not Allowed", {"Allow": ", ".join(allowed(api.routes, scope))})
            if chunked(scope) and declared_length(scope) is not None:
                raise BadFraming
            if protected(scope["path"]):
                principal = authenticate(api.state.tokens, scope)
                scope.setdefault("state", {})["principal"] = principal
                if has_body(scope):
                    for requirement in requirements(api.routes, scope):
                        requirement.check(principal)
            if has_body(scope):
                limit = api.state.settings.api_max_body_bytes
                length = declared_length(scope)
                body = None if length is not None and length > limit else await read_body(receive, limit)
                if body is None:
                    raise ContentTooLarge(limit)
                receive = replay(body, receive)
        except ApiError as error:
            await refuse(scope, receive, send, error)
            return
        except ClientGone:
            return  # nobody to answer, and nothing to act on
        if scope["method"] == "HEAD":  # a copy: the server and the metrics still see a HEAD
            scope, send = {**scope, "method": "GET"}, head_only(send)
        await self.app(scope, receive, send)


def head_only(send: Send) -> Send:
    """A ``send`` for HEAD served as GET: the answer's head, and its end at once; the body is never sent.
    An event stream ends there too: once the answer is whole, the server tells the route the client has
    gone, as it does when a stream's client disconnects."""

    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.start":
            await send(message)
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    return send_head


def authenticate(tokens: TokenStore, scope: Scope) -> Principal:
    """The principal of the request's bearer token; 401 without one."""
    token = bearer_token(scope)
    if token is None:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    principal = tokens.authenticate(token)
    if principal is None:
        raise Unauthorized("invalid bearer token", error="invalid_token")
    return principal


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it is longer than ``limit`` (the rest is left unread);
    :class:`ClientGone` if the client goes away before its end."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the body read already, then what the server sends (e.g. a disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive_again() -> Message:
        return pending.pop() if pending else await receive()

    return receive_again
