"""The API's own Prometheus metrics (``GET /metrics``), on a registry of its own.

Requests are counted by method (a known one, else ``other``), route template (not the raw path) and
status, so the label values are bounded whatever clients send; their latency goes to a histogram. The
Runbook cache's counters are read at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from api.edge import method_label, route_label

CLIENT_GONE = 499  # nginx's status for a request whose client went away before it was answered


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "mdops_api_requests_total",
            "HTTP requests, by method, route and status code (499: the client went away before the answer).",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mdops_api_request_duration_seconds",
            "Time to answer an HTTP request, by method and route.",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )

    def watch_cache(self, cache_getter: Callable[[], Any]) -> None:
        self.registry.register(_CacheCollector(cache_getter))


class _CacheCollector(Collector):
    def __init__(self, cache_getter: Callable[[], Any]):
        self.cache_getter = cache_getter

    def describe(self) -> list:
        return []

    def collect(self):
        cache = self.cache_getter()
        if cache is None:
            return
        yield GaugeMetricFamily("mdops_api_cache_runbooks", "Runbooks in the watch cache.", value=len(cache))
        yield GaugeMetricFamily(
            "mdops_api_cache_synced",
            "1 once the cache has listed the Runbooks.",
            value=int(cache.synced.is_set()),
        )
        yield GaugeMetricFamily(
            "mdops_api_cache_watch_connected",
            "1 while the Runbook watch is open.",
            value=int(cache.connected),
        )
        yield CounterMetricFamily("mdops_api_cache_lists", "Full lists of the Runbooks.", value=cache.lists)
        yield CounterMetricFamily("mdops_api_cache_watches", "Watch connections opened.", value=cache.watches)
        yield CounterMetricFamily("mdops_api_cache_errors", "List or watch failures.", value=cache.errors)
        yield CounterMetricFamily(
            "mdops_api_cache_gone", "Watches refused with 410 Gone (then listed again).", value=cache.gone
        )


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request (never looks at its headers)."""

    def __init__(self, app: Any, metrics: ApiMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status: dict[str, int] = {}

        async def record_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["answered"] = message["status"]
            await send(message)

        async def note_gone() -> dict:
            message = await receive()
            if message["type"] == "http.disconnect":
                status["gone"] = CLIENT_GONE
            return message

        try:
            await self.app(scope, note_gone, record_status)
        finally:
            template = route_label(scope["app"].routes, scope)
            method = method_label(scope["method"])
            code = status.get("answered", status.get("gone", 500))  # an answer begun: its status stands
            self.metrics.requests.labels(method, template, str(code)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - began)
