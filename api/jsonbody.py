"""Request bodies as strict JSON: UTF-8, finite numbers, no lone surrogate and no NUL in any string, no
name twice in an object.

Python's ``json`` accepts ``NaN``, ``Infinity`` and ``1e999`` (an infinite float), lone surrogates
(``"\\ud800"``, which cannot be encoded again), NUL characters and a name given twice (the last one
wins: ``{"command": "health_check", "command": "failover"}`` would run a failover), and fails with other
exceptions than ``JSONDecodeError`` on invalid UTF-8, numbers of more than 4300 digits and deep nesting,
which FastAPI turns into a 400. :class:`StrictJSONRoute` (FastAPI's documented way to change how a route
reads its request) makes every one of these a ``JSONDecodeError``: FastAPI's usual 422 with a JSON body.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
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


class StrictJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler
