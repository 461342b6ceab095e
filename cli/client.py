"""The REST API over httpx: one method per endpoint, each returning the decoded JSON body.

An answer other than a success becomes a :class:`CliError` with the API's own message
(:func:`cli.errors.answer_error`); an API that cannot be reached or does not answer within the timeouts
is ``Exit.UNAVAILABLE``. The token goes in the ``Authorization`` header only, never in a message.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any
from urllib.parse import quote

import httpx

from cli.config import Connection
from cli.errors import CliError, Exit, answer_error

CONNECT_TIMEOUT = 5.0


class Api:
    def __init__(self, connection: Connection, timeout: float):
        self.connection = connection
        self.timeout = timeout
        self.http = httpx.Client(
            base_url=connection.url,
            headers={
                "Authorization": f"Bearer {connection.token}",
                "User-Agent": f"mdops/{version('mdops')}",
            },
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
        )  # shared by the threads of `mdops run`: httpx's Client may be

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def status(self) -> dict[str, Any]:
        return self._json(self._call("GET", "/api/ops/status"))

    def summary(self) -> dict[str, Any]:
        return self._json(self._call("GET", "/api/ops/metrics/summary"))

    def timeseries(self, metric: str, minutes: int, step_seconds: int) -> dict[str, Any]:
        params = {"metric": metric, "minutes": minutes, "step_seconds": step_seconds}
        return self._json(self._call("GET", "/api/ops/metrics/timeseries", params=params))

    def schedules(self, slots: int) -> dict[str, Any]:
        return self._json(self._call("GET", "/api/ops/schedules", params={"slots": slots}))

    def runbook(self, request_id: str) -> dict[str, Any]:
        return self._json(self._call("GET", _runbook_path(request_id)))

    def find(self, request_id: str) -> dict[str, Any] | None:
        """The run of this request id, or None while the API knows none."""
        response = self._call("GET", _runbook_path(request_id))
        return None if response.status_code == 404 else self._json(response)

    def execute(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """200 and the finished run, or 202 and its state so far (the API waits a bounded time)."""
        response = self._call("POST", "/api/ops/runbooks/execute", json=body)
        return response.status_code, self._json(response)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = self.connection.url
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.TimeoutException as error:
            raise CliError(
                f"no answer from the API at {url} within {self.timeout:g} s ({type(error).__name__})",
                Exit.UNAVAILABLE,
                "--request-timeout waits longer",
            ) from error
        except httpx.HTTPError as error:
            raise CliError(
                f"cannot reach the API at {url}: {error}",
                Exit.UNAVAILABLE,
                f"is the API running at this URL? ({self.connection.source})",
            ) from error

    def _json(self, response: httpx.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not response.is_success:
            raise answer_error(response.status_code, body, self.connection.source)
        if body is None:
            raise CliError(
                f"the API's answer to {response.request.url.path} is not JSON ({response.status_code})",
                Exit.API_FAILED,
                "is the URL the mdops API's?",
            )
        return body


def _runbook_path(request_id: str) -> str:
    return f"/api/ops/runbooks/{quote(request_id, safe='')}"
