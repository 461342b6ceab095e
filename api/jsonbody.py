"""Request bodies as strict JSON: UTF-8, finite numbers, no lone surrogate and no NUL in any string, no
name twice in an object.

Python's ``json`` accepts ``NaN``, ``Infinity`` and ``1e999`` (an infinite float), lone surrogates
(``"\\ud800"``, which cannot be encoded again), NUL characters and a name given twice (the last one
wins: ``{"command": "health_check", "command": "failover"}`` would run a failover), and fails with other
exceptions than ``JSONDecodeError`` on invalid UTF-8, numbers of more than 4300 digits and deep nesting,
which FastAPI turns into a 400. :class:`StrictJSONRoute` (FastAPI's documented way to change how a route
reads its request) makes every one of these a ``JSONDecodeError``: FastAPI's usual 422 with a JSON body.
A body not sent as JSON, or encoded (gzip), is a 415 that says so (FastAPI reads no such body, and its 422
would say only that the field is missing).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute


def _constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for a number")
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) < len(pairs):
        twice = next(name for name, count in Counter(name for name, _ in pairs).items() if count > 1)
        raise ValueError(f"the name {json.dumps(twice)} is given twice in an object")
    return value


def _check_strings(value: Any) -> None:
    """Refuse lone surrogates and NUL in any string, keys included (iteratively: nesting may be deep)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ValueError("a string holds a NUL character")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("a string holds a lone surrogate (\\ud800-\\udfff)") from None
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def loads(body: bytes) -> Any:
    """``body`` as strict JSON; any fault is a ``json.JSONDecodeError``."""
    text = body.decode("utf-8", "replace")
    try:
        body.decode("utf-8")  # json.loads would guess UTF-16 or UTF-32 from bytes; the API takes UTF-8
        value = json.loads(text, parse_constant=_constant, parse_float=_finite, object_pairs_hook=_object)
        _check_strings(value)
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        message = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise json.JSONDecodeError(message, text, 0) from None
    return value


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


def unsupported(request: Request) -> str | None:
    """Why a request's body is not one the API reads (a 415), or None: a body that is not sent as JSON
    (``Content-Type: application/json``, or another ``+json`` type), or that is encoded (gzip)."""
    if request.headers.get("content-length", "0") == "0" and "transfer-encoding" not in request.headers:
        return None  # no body
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        return f"a body with Content-Encoding {encoding} is not read: send it as it is"
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        given = media or "none"
        return f"the body is read as JSON only: send it with Content-Type: application/json, not {given}"
    return None


class StrictJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        reads_body = self.body_field is not None

        async def strict_handler(request: Request) -> Response:
            if reads_body and (problem := unsupported(request)):
                return JSONResponse({"detail": problem}, status_code=415)
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler
