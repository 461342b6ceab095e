"""Platform metrics from Prometheus, through ``prometheus-api-client``.

Its calls block, so each query runs in a worker thread and the summary's queries run concurrently.
The threads are Prometheus' own (``QUERY_WORKERS`` of them), never the event loop's default pool, which
the rest of the API shares: a Prometheus that hangs holds only its own threads, never status' or execute's.
A query fails fast (no retries, a short timeout): an unreachable Prometheus makes the summary's
metrics stale, not the request slow. The timeout bounds a query's whole answer (``requests`` bounds each
read only: a Prometheus that sent its answer a byte at a time held the request for as long as it went on);
the thread of a query given up on goes on until it ends, and counts meanwhile. A query that would have to
wait for a thread (all of them held by queries in flight, e.g. while Prometheus hangs) is not queued: its
request is a prompt 503. Where a query returns several series (several exporters), the summary reports
their maximum and says so in the metric's ``context``.

Consoles poll the summary and the charts' timeseries: requests that arrive while an answer's queries run
share them (single flight), and the answer is reused for ``MDOPS_API_METRICS_MAX_AGE_SECONDS`` after it was
computed (at most a scrape interval, so that it is never older than the samples it shows), so that many
consoles cost Prometheus what one does. Both come from ``async-lru`` (``alru_cache``: one shielded task per
key, awaited by every caller; its TTL).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests
from async_lru import alru_cache
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from api.errors import PrometheusUnavailable
from api.render import iso

NO_SAMPLE = "no exporter sample"
# Threads for Prometheus' queries: one console's overview at once (the summary's three and four charts) and
# one more; as many queries in flight at most, the rest answered 503 at once rather than queued.
QUERY_WORKERS = 8
BUSY = "prometheus is slow or unreachable: its earlier queries have not answered yet; try again shortly"
MAX_POINTS = 11000  # Prometheus refuses range queries of more points
LAST_TIME = 253402300800  # 10000-01-01 in seconds since 1970: a sample's time is before it

# The metrics a chart may ask for (never raw PromQL), with their units.
TIMESERIES_UNITS: dict[str, str | None] = {
    "md_subscription_coverage_ratio": None,
    "md_subscription_expected_total": "instruments",
    "md_subscription_active_total": "instruments",
    "md_subscription_matched_total": "instruments",
    "md_subscription_ignored_total": "instruments",
    "md_throughput_mps": "msg/s",
    "md_failover_latency_ms": "ms",
    "consumer_backlog_messages": "messages",
    "md_feed_up": None,
    "md_runbook_exit_code": None,
}

COVERAGE_TOTALS = ("expected_total", "active_total", "matched_total", "ignored_total")
THROUGHPUT_WINDOW = "max_over_time[1m]"


@dataclass(frozen=True)
class SummaryMetric:
    key: str
    metric: str
    query: str | None  # None: a plain gauge, read from GAUGES_QUERY
    unit: str | None
    context: dict[str, Any] | None = None


SUMMARY = (
    SummaryMetric("coverage_ratio", "md_subscription_coverage_ratio", None, None),
    SummaryMetric(
        "throughput_mps",
        "md_throughput_mps",
        "max_over_time(md_throughput_mps[1m])",
        "msg/s",
        {"window": THROUGHPUT_WINDOW},
    ),
    SummaryMetric("failover_latency_ms", "md_failover_latency_ms", None, "ms"),
    # The exit code of the most recently finished runbook, whatever its command.
    SummaryMetric(
        "runbook_exit_code",
        "md_runbook_exit_code",
        "md_runbook_exit_code and on(command) topk(1, md_runbook_last_run_timestamp_seconds)",
        None,
    ),
    SummaryMetric("consumer_backlog_messages", "consumer_backlog_messages", None, "messages"),
)
# The plain gauges (and coverage's context) in one query: each query costs the API more CPU than it
# costs Prometheus, so fewer round trips make the summary faster on a small machine.
GAUGES = tuple(m.metric for m in SUMMARY if m.query is None) + tuple(
    f"md_subscription_{name}" for name in COVERAGE_TOTALS
)
GAUGES_QUERY = '{__name__=~"' + "|".join(GAUGES) + '"}'
SUMMARY_QUERIES = (GAUGES_QUERY, *(m.query for m in SUMMARY if m.query))


def number(text: Any) -> float | int | None:
    """A Prometheus sample value as JSON: an int when integral, None for NaN and infinities."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value):
        return None
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _checked(call: Callable[..., Any], *args: Any) -> list[dict[str, Any]]:
    """``call(*args)``'s series, in the shape Prometheus answers a query with (labels, and a sample or
    samples of ``[time, value]``); else a PrometheusApiClientException, as for a query Prometheus refused:
    what answers at its URL may be a proxy's error or another service, which must not fail the request."""
    try:
        result = call(*args)
        for series in result:
            samples = series["values"] if "values" in series else [series["value"]]
            if not isinstance(series["metric"], dict) or any(
                len(s) != 2 or not 0 <= float(s[0]) < LAST_TIME for s in samples
            ):
                raise ValueError("a series without labels, or a sample not [time, value]")
    except (LookupError, TypeError, ValueError) as error:
        raise PrometheusApiClientException(f"not a Prometheus answer ({type(error).__name__})") from error
    return result


class Late(TimeoutError):
    """A query whose whole answer did not come within the timeout."""


def _failure_note(error: BaseException) -> str:
    if isinstance(error, PrometheusApiClientException):
        return f"prometheus query failed: {str(error)[:200]}"
    if isinstance(error, Late):
        return f"prometheus unreachable: {error}"
    return f"prometheus unreachable: {type(error).__name__}"


class MetricsSource:
    def __init__(self, url: str, timeout: float, max_age: float):
        self.client = PrometheusConnect(
            url=url.rstrip("/"), retry=Retry(total=0, raise_on_status=False), timeout=timeout
        )
        self.timeout = timeout
        self.max_age = max_age
        self._pool = ThreadPoolExecutor(QUERY_WORKERS, thread_name_prefix="prometheus")
        self._lock = threading.Lock()
        self._in_flight = 0  # queries given a thread of the pool, not finished yet
        # Failures are not kept (timeseries' 503): the next request tries again.
        self.summary = alru_cache(maxsize=1, ttl=max_age)(self._encoded_summary)
        self.timeseries = alru_cache(maxsize=64, ttl=max_age)(self._timeseries)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def _reserve(self, queries: int) -> None:
        """Threads for ``queries`` queries, all or none: none is a 503 (PrometheusUnavailable) at once."""
        with self._lock:
            if self._in_flight + queries > QUERY_WORKERS:
                raise PrometheusUnavailable(BUSY)
            self._in_flight += queries

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _start(self, call: Callable[..., Any], *args: Any) -> Coroutine[Any, Any, Any]:
        """``call(*args)`` started now in a thread reserved for it (``_reserve``), which it releases when
        it returns, even if the request that asked went away meanwhile or stopped waiting; its answer, to
        await within the timeout (else :class:`Late`)."""

        def run() -> Any:
            try:
                return _checked(call, *args)
            finally:
                self._release()

        try:
            answer = asyncio.wrap_future(self._pool.submit(run))
        except BaseException:
            self._release()
            raise
        return self._within_timeout(answer)

    async def _within_timeout(self, answer: asyncio.Future[Any]) -> Any:
        try:
            return await asyncio.wait_for(answer, self.timeout)
        except TimeoutError:
            raise Late(f"no whole answer within {self.timeout:g} s") from None

    async def _encoded_summary(self) -> bytes:
        """The summary as the answer's body: encoded once, however many clients it is reused for."""
        return json.dumps(await self.query_summary(), separators=(",", ":")).encode()

    async def query_summary(self) -> dict[str, dict[str, Any]]:
        """The summary's queries, run now and concurrently (``summary``: shared and reused, encoded); a 503
        when the pool has no thread for each of them."""
        self._reserve(len(SUMMARY_QUERIES))
        started = [self._start(self.client.custom_query, q) for q in SUMMARY_QUERIES]
        gauges, *answers = await asyncio.gather(*started, return_exceptions=True)
        own = dict(zip((m.query for m in SUMMARY if m.query), answers, strict=True))

        def answer(metric: SummaryMetric) -> list[dict[str, Any]] | BaseException:
            if metric.query is not None:
                return own[metric.query]
            if isinstance(gauges, BaseException):
                return gauges
            return [series for series in gauges if series["metric"].get("__name__") == metric.metric]

        out = {m.key: self._sample(m, answer(m)) for m in SUMMARY}
        coverage = out["coverage_ratio"]
        if not coverage["stale"]:
            context = {name: None for name in COVERAGE_TOTALS}
            for series in gauges:
                name = series["metric"].get("__name__", "").removeprefix("md_subscription_")
                value = number(series["value"][1])
                if name in context and value is not None:
                    context[name] = value if context[name] is None else max(context[name], value)
            coverage["context"] = {**context, **(coverage.get("context") or {})}
        return out

    @staticmethod
    def _sample(metric: SummaryMetric, answer: list[dict[str, Any]] | BaseException) -> dict[str, Any]:
        sample: dict[str, Any] = {"metric": metric.metric, "value": None, "unit": metric.unit, "stale": True}
        if isinstance(answer, BaseException):
            sample["context"] = {"note": _failure_note(answer)}
            return sample
        values = [v for v in (number(series["value"][1]) for series in answer) if v is not None]
        if not values:
            sample["context"] = {"note": NO_SAMPLE}
            return sample
        sample["value"] = max(values)
        sample["stale"] = False
        context = dict(metric.context or {})
        if len(values) > 1:
            context.update({"aggregation": "max", "series": len(values)})
        if context:
            sample["context"] = context
        return sample

    async def _timeseries(
        self, metric: str, minutes: int, step_seconds: int, zone: datetime.tzinfo
    ) -> list[dict[str, Any]]:
        """Samples of ``metric`` (its maximum over series) over the last ``minutes``."""
        end = datetime.datetime.now(datetime.UTC)
        start = end - datetime.timedelta(minutes=minutes)
        self._reserve(1)
        try:
            result = await self._start(
                self.client.custom_query_range, f"max({metric})", start, end, f"{step_seconds}s"
            )
        except (requests.RequestException, PrometheusApiClientException, Late) as error:
            # Never Prometheus' URL: it may hold a password.
            raise PrometheusUnavailable(_failure_note(error)) from error
        if not result:
            return []
        return [
            {
                "timestamp": iso(datetime.datetime.fromtimestamp(float(t), datetime.UTC), zone),
                "value": number(v),
            }
            for t, v in result[0]["values"]
        ]
