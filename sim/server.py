"""HTTP front of the simulator: ``/metrics``, ``/healthz`` and the JSON admin API, on a stdlib server.

A background ticker advances the model with the monotonic clock every ``tick_interval`` seconds, and wakes
up early when a switch falls due; every request also brings the model up to date first, so what a client
reads is current and a failover's latency is measured from the moment its request arrived.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .metrics import make_registry
from .model import SOURCES, UNSET, FeedModel, SimError

log = logging.getLogger("sim")

WAIT_BOUND_SECONDS = 30.0
MAX_BODY_BYTES = 64 * 1024
TRUE_VALUES = {"1", "true", "yes", "on"}
FALSE_VALUES = {"", "0", "false", "no", "off"}


class BadRequest(SimError):
    def __init__(self, detail: str) -> None:
        super().__init__(detail, 400)


class Simulator:
    """The model, its clock and its ticker thread; the HTTP handlers call this, never the model directly."""

    def __init__(
        self,
        model: FeedModel,
        *,
        tick_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        wait_bound: float = WAIT_BOUND_SECONDS,
    ) -> None:
        self.model = model
        self.tick_interval = tick_interval
        self.wait_bound = wait_bound
        self._clock = clock
        self._t0 = clock() - model.now  # model time = clock() - _t0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._log_lock = threading.Lock()
        self._logged_switch: dict[str, Any] | None = None
        self.registry = make_registry(model, before_collect=self.sync)

    def now(self) -> float:
        return self._clock() - self._t0

    def sync(self) -> None:
        self.model.advance_to(self.now())
        self._log_switch()

    def _log_switch(self) -> None:
        with self._log_lock:
            switch = self.model.last_switch
            if switch is not None and switch is not self._logged_switch:
                self._logged_switch = switch
                log.info("switch completed: %s", _describe_switch(switch))

    # -- ticker ------

    def start_ticker(self) -> None:
        self._thread = threading.Thread(target=self._run_ticker, name="sim-ticker", daemon=True)
        self._thread.start()

    def stop_ticker(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run_ticker(self) -> None:
        while not self._stopping.is_set():
            self.sync()
            nxt = self.model.seconds_to_next_event()
            timeout = self.tick_interval if nxt is None else min(self.tick_interval, nxt + 0.001)
            self._wake.wait(timeout)
            self._wake.clear()

    def _poke(self) -> None:
        self._wake.set()

    # -- actions ------

    def status(self) -> dict[str, Any]:
        self.sync()
        return self.model.status()

    def wait_idle(self, timeout: float | None = None) -> bool:
        bound = self.wait_bound if timeout is None else timeout
        return self.model.wait_for(lambda: self.model.transition is None, bound, self.now)

    def start(self) -> dict[str, Any]:
        self.sync()
        changed = self.model.start()
        log.info("admin start: %s", "subscribed" if changed else "already running")
        return self.model.status()

    def stop(self) -> dict[str, Any]:
        self.sync()
        changed = self.model.stop()
        log.info("admin stop: %s", "unsubscribed" if changed else "already stopped")
        return self.model.status()

    def restart(self) -> dict[str, Any]:
        self.sync()
        tr = self.model.restart()
        self._poke()
        log.info(
            "admin restart: stopped, starting again in %d ms", round((tr.due_at - tr.requested_at) * 1000)
        )
        self.wait_idle()
        return self.model.status()

    def switch(
        self, target: str, latency_ms: float | None, jitter: float | None, wait: bool
    ) -> dict[str, Any]:
        self.sync()
        before = self.model.active_source
        tr = self.model.switch(target, latency_ms, jitter)
        self._poke()
        log.info(
            "admin %s: %s -> %s (expected %d ms, wait=%s)",
            tr.action,
            before,
            target,
            round((tr.due_at - tr.requested_at) * 1000),
            wait,
        )
        if wait:
            self.wait_idle()
            self._log_switch()
        return self.model.status()

    def set_window(self, window: str) -> dict[str, Any]:
        self.sync()
        self.model.set_window(window)
        log.info("admin window: %s", window)
        return self.model.status()

    def set_faults(self, faults: dict[str, Any]) -> dict[str, Any]:
        self.sync()
        self.model.set_faults(**faults)
        log.info("admin faults: %s", self.model.faults.as_dict())
        return self.model.status()

    def clear_faults(self) -> dict[str, Any]:
        self.sync()
        self.model.clear_faults()
        log.info("admin faults cleared")
        return self.model.status()


def _describe_switch(switch: dict[str, Any]) -> str:
    return f"{switch['action']} {switch['from']} -> {switch['to']} in {switch['latency_ms']} ms"


# -- request parsing ------


def _int_field(body: dict[str, Any], key: str) -> int | None:
    if key not in body or body[key] is None:
        return None
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{key} must be an integer")
    return value


def _number_field(body: dict[str, Any], key: str) -> float | None:
    if key not in body or body[key] is None:
        return None
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{key} must be a number")
    return float(value)


def _reject_unknown(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _parse_faults(body: dict[str, Any]) -> dict[str, Any]:
    _reject_unknown(body, {"lose_instruments", "stall_source", "grow_backlog"})
    stall: Any = UNSET
    if "stall_source" in body:
        stall = body["stall_source"]
        if stall is not None and stall not in SOURCES:
            raise BadRequest(f"stall_source must be one of {list(SOURCES)} or null")
    return {
        "lose_instruments": _int_field(body, "lose_instruments"),
        "stall_source": stall,
        "grow_backlog": _int_field(body, "grow_backlog"),
    }


def _flag(query: dict[str, list[str]], key: str) -> bool:
    raw = (query.get(key) or [""])[-1].strip().lower()
    if raw in TRUE_VALUES:
        return True
    if raw in FALSE_VALUES:
        return False
    raise BadRequest(f"query parameter {key} must be true or false")


class Handler(BaseHTTPRequestHandler):
    server: SimHTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "mdsim/1"

    # routes: path -> {method: function(handler, body, query) -> (status, payload)}
    def _routes(self) -> dict[str, dict[str, Callable[..., tuple[int, Any]]]]:
        sim = self.server.sim

        def switch(target: str) -> Callable[..., tuple[int, Any]]:
            def run(body: dict[str, Any], query: dict[str, list[str]]) -> tuple[int, Any]:
                _reject_unknown(body, {"latency_ms", "jitter"})
                wait = _flag(query, "wait")
                latency = _number_field(body, "latency_ms")
                status = sim.switch(target, latency, _number_field(body, "jitter"), wait)
                done = status["transition"] is None
                return (HTTPStatus.OK if done else HTTPStatus.ACCEPTED), status

            return run

        def window(body: dict[str, Any], query: dict[str, list[str]]) -> tuple[int, Any]:
            _reject_unknown(body, {"window"})
            if "window" not in body:
                raise BadRequest("window is required")
            return HTTPStatus.OK, sim.set_window(body["window"])

        def no_body(action: Callable[[], dict[str, Any]]) -> Callable[..., tuple[int, Any]]:
            def run(body: dict[str, Any], query: dict[str, list[str]]) -> tuple[int, Any]:
                _reject_unknown(body, set())
                return HTTPStatus.OK, action()

            return run

        return {
            "/healthz": {"GET": lambda body, query: (HTTPStatus.OK, {"ok": True})},
            "/admin/status": {"GET": lambda body, query: (HTTPStatus.OK, sim.status())},
            "/admin/start": {"POST": no_body(sim.start)},
            "/admin/stop": {"POST": no_body(sim.stop)},
            "/admin/restart": {"POST": no_body(sim.restart)},
            "/admin/failover": {"POST": switch("backup")},
            "/admin/failback": {"POST": switch("primary")},
            "/admin/window": {"POST": window},
            "/admin/faults": {
                "GET": lambda body, query: (HTTPStatus.OK, sim.status()["faults"]),
                "POST": lambda body, query: (HTTPStatus.OK, sim.set_faults(_parse_faults(body))),
                "DELETE": no_body(sim.clear_faults),
            },
        }

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        try:
            body = self._read_body()
            if path == "/metrics" and method == "GET":
                self._send(HTTPStatus.OK, generate_latest(self.server.sim.registry), CONTENT_TYPE_LATEST)
                return
            routes = self._routes()
            if path == "/metrics":
                methods = {"GET": None}
            elif path in routes:
                methods = routes[path]
            else:
                self._send_json(HTTPStatus.NOT_FOUND, {"detail": f"not found: {path}"})
                return
            if method not in methods:
                allow = ", ".join(sorted(methods))
                self._send_json(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    {"detail": f"method {method} not allowed on {path}; allowed: {allow}"},
                    headers={"Allow": allow},
                )
                return
            status, payload = routes[path][method](body, parse_qs(url.query))
            self._send_json(status, payload)
        except SimError as exc:
            log.warning("admin %s %s refused (%d): %s", method, path, exc.status, exc.detail)
            self._send_json(exc.status, {"detail": exc.detail})
        except Exception:  # the handler must answer, whatever went wrong
            log.exception("error handling %s %s", method, path)
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"detail": "internal error"})

    def _read_body(self) -> dict[str, Any]:
        length_header = self.headers.get("Content-Length")
        try:
            length = int(length_header) if length_header else 0
        except ValueError:
            self.close_connection = True
            raise BadRequest("invalid Content-Length") from None
        if length > MAX_BODY_BYTES or length < 0:
            self.close_connection = True
            raise BadRequest("request body too large")
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"invalid JSON body: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest("the JSON body must be an object")
        return body

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode() + b"\n", "application/json", headers)

    def _send(
        self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class SimHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sim: Simulator) -> None:
        self.sim = sim
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def make_server(sim: Simulator, host: str = "127.0.0.1", port: int = 0) -> SimHTTPServer:
    """Bind (``port=0`` picks a free port; see ``server.url``); the caller runs ``serve_forever``."""
    return SimHTTPServer((host, port), sim)
