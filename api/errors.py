"""Domain errors of the API; one exception handler (in :mod:`api.main`) turns them into HTTP answers."""

from __future__ import annotations


class ApiError(Exception):
    status_code = 500

    def __init__(self, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class Unauthorized(ApiError):
    status_code = 401

    def __init__(self, detail: str, error: str | None = None):
        challenge = "Bearer" if error is None else f'Bearer error="{error}"'
        super().__init__(detail, {"WWW-Authenticate": challenge})


class Forbidden(ApiError):
    status_code = 403


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    status_code = 409


class ScriptExecutionError(ApiError):
    """The runner could not execute the script (exit code 125): the spec's 500."""

    status_code = 500


class KubernetesUnavailable(ApiError):
    status_code = 503


class NotReady(ApiError):
    status_code = 503


class PrometheusUnavailable(ApiError):
    status_code = 503
