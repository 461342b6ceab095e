"""The OpenAPI document: every answer a route can give, and ``python -m api.openapi``, which prints the
document that ``make generate`` commits as ``docs/openapi.json`` (a test checks it for drift).

Each route lists its status codes through :func:`responses`; the descriptions, bodies and headers of the
error answers are written once, here.
"""

from __future__ import annotations

import json
from typing import Any

from api.schemas import ErrorResponse, ValidationErrorResponse


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


LOCATION = {"Location": _header("Where to read the run: /api/ops/runbooks/{request_id}.")}
ERRORS: dict[int, dict[str, Any]] = {
    400: {"description": "Not a valid HTTP/1.1 request; the connection is closed."},
    401: {
        "description": "No valid bearer token (checked before the body is read).",
        "headers": {"WWW-Authenticate": _header('Bearer, or Bearer error="invalid_token".')},
    },
    403: {"description": "The token lacks the permission."},
    404: {"description": "Unknown."},
    405: {
        "description": "A method this path does not serve, or one the API does not know.",
        "headers": {"Allow": _header("The methods this path serves.")},
    },
    408: {
        "description": "The request was not received whole within MDOPS_API_READ_TIMEOUT_SECONDS of its "
        "first byte (or of its connection's start); the connection is closed."
    },
    409: {"description": "The request_id was already used with other parameters."},
    413: {"description": "The request body is larger than MDOPS_API_MAX_BODY_BYTES."},
    415: {"description": "A body not sent as JSON (Content-Type: application/json), or encoded (gzip)."},
    422: {"model": ValidationErrorResponse, "description": "Invalid request: not strict JSON, or invalid."},
    429: {
        "description": "Too many Runbooks for this token: its rate (Retry-After says when to retry), or "
        "its unfinished ones; or the namespace held as many unfinished Runbooks as the controller allows.",
        "headers": {"Retry-After": _header("Seconds until the token's rate allows a new Runbook.")},
    },
    500: {"description": "Internal error; for execute, also a script execution error (exit code 125)."},
    503: {
        "description": "A dependency is unavailable (the Kubernetes API, its watch, or Prometheus); when the "
        "Kubernetes API sheds load (its 429), Retry-After says when to retry.",
        "headers": {"Retry-After": _header("Seconds until the Kubernetes API may take the request again.")},
    },
}
# What any route may answer whatever it does: a request that is not HTTP or too slow to arrive, a method
# it does not serve, a body too large, a failure.
COMMON = (400, 405, 408, 413, 500)
# ... and any route that needs a token (every one under /api/, /metrics).
PROTECTED = (*COMMON, 401, 403)


def responses(*codes: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """The error answers ``codes`` (a description of ``described["c404"]`` replaces the usual one)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in sorted(set(codes)):
        entry = {"model": ErrorResponse, **ERRORS[code]}
        if f"c{code}" in described:
            entry["description"] = described[f"c{code}"]
        out[code] = entry
    return out


def document() -> dict[str, Any]:
    from api.main import create_app  # the app imports this module's table

    return create_app().openapi()


if __name__ == "__main__":
    print(json.dumps(document(), indent=2, ensure_ascii=False))
