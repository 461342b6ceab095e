"""GET /api/ops/metrics/summary and /timeseries with a real Prometheus scraping the real simulator
and, for ``md_runbook_exit_code``, the real controller's /metrics after real runs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from api.prometheus import QUERY_WORKERS, SUMMARY_QUERIES
from devcluster.processes import free_port, wait_until
from devcluster.prometheus import Prometheus, ScrapeTarget
from sim.process import run_sim
from tests.api.conftest import ADMIN_TOKEN, METRICS_TOKEN, RECORD, auth, http, reporting

SUMMARY = "/api/ops/metrics/summary"
TIMESERIES = "/api/ops/metrics/timeseries"


def summary_when(api, check, what: str, timeout: float = 30) -> dict:
    def current():
        body = api.get(SUMMARY, headers=auth(METRICS_TOKEN)).json()
        return body if check(body) else None

    return wait_until(current, timeout, what)


@pytest.fixture
def metrics_api(start_api, prometheus):
    return start_api(prometheus_url=prometheus.url)


def test_summary_reports_the_simulator(metrics_api, sim, prometheus):
    summary = summary_when(metrics_api, lambda s: not s["coverage_ratio"]["stale"], "a coverage sample")
    state = sim.status()
    coverage = summary["coverage_ratio"]
    assert coverage == {
        "metric": "md_subscription_coverage_ratio",
        "value": pytest.approx(state["coverage_ratio"]),
        "unit": None,
        "stale": False,
        "context": {
            "expected_total": state["expected_total"],
            "active_total": state["active_total"],
            "matched_total": state["matched_total"],
            "ignored_total": state["ignored_total"],
        },
    }
    throughput = summary["throughput_mps"]
    assert throughput["metric"] == "md_throughput_mps"
    assert throughput["unit"] == "msg/s"
    assert throughput["stale"] is False
    assert throughput["context"] == {"window": "max_over_time[1m]"}
    assert throughput["value"] == pytest.approx(state["throughput_mps"], rel=0.25)
    backlog = summary["consumer_backlog_messages"]
    assert backlog == {
        "metric": "consumer_backlog_messages",
        "value": state["consumer_backlog_messages"],
        "unit": "messages",
        "stale": False,
    }


def test_summary_follows_a_failover_of_the_simulator(start_api, tmp_path):
    """Its own simulator and Prometheus: before any switch there is no latency sample (stale)."""
    with (
        run_sim(args=["--failover-ms", "400", "--failover-jitter", "0"]) as sim,
        Prometheus(tmp_path / "prom", [ScrapeTarget("sim", f"127.0.0.1:{sim.port}")]) as prometheus,
    ):
        api = start_api(prometheus_url=prometheus.url)
        summary = summary_when(api, lambda s: not s["throughput_mps"]["stale"], "a first scrape")
        assert summary["failover_latency_ms"] == {
            "metric": "md_failover_latency_ms",
            "value": None,
            "unit": "ms",
            "stale": True,
            "context": {"note": "no exporter sample"},
        }
        assert summary["runbook_exit_code"]["stale"] is True  # no controller scraped here

        code, state = sim.request("POST", "/admin/failover?wait=true")
        assert code == 200 and state["active_source"] == "backup"
        summary = summary_when(api, lambda s: not s["failover_latency_ms"]["stale"], "the failover's latency")
        assert summary["failover_latency_ms"]["value"] == pytest.approx(state["failover_latency_ms"], abs=1)

        # A slower failback: the reported latency changes with it.
        sim.request("POST", "/admin/faults", {"lose_instruments": 128})
        code, state = sim.request("POST", "/admin/failback?wait=true", {"latency_ms": 900})
        assert code == 200
        summary = summary_when(
            api,
            lambda s: (
                s["failover_latency_ms"]["value"] is not None and s["failover_latency_ms"]["value"] > 800
            ),
            "the failback's latency",
        )
        assert summary["failover_latency_ms"]["value"] == pytest.approx(state["failover_latency_ms"], abs=1)
        summary = summary_when(api, lambda s: s["coverage_ratio"]["value"] < 1, "the lost instruments")
        assert summary["coverage_ratio"]["context"]["matched_total"] == state["matched_total"]
        assert summary["coverage_ratio"]["value"] == pytest.approx(state["coverage_ratio"])


def test_runbook_exit_code_is_the_most_recent_runs(start_api, controller_prometheus, scripts):
    """Real runs, one after the other; the failover fails its enforced health gate (exit code 3)."""
    scripts.write("start", RECORD)
    scripts.write("failover", RECORD + reporting({"health": {"coverage_ratio": 0.5}}))
    scripts.write("health_check", RECORD)
    api = start_api(prometheus_url=controller_prometheus.url)

    def execute(exit_code: int, **body) -> None:
        response = api.post("/api/ops/runbooks/execute", json=body, headers=auth())
        assert response.status_code == 200 and response.json()["runbook"]["exit_code"] == exit_code

    execute(0, command="start")
    execute(3, command="failover", enforce=True)
    summary = summary_when(api, lambda s: s["runbook_exit_code"]["value"] == 3, "the failover's code")
    assert summary["runbook_exit_code"] == {
        "metric": "md_runbook_exit_code",
        "value": 3,
        "unit": None,
        "stale": False,
    }
    execute(0, command="health_check")
    summary_when(api, lambda s: s["runbook_exit_code"]["value"] == 0, "the health check's code")


def test_several_series_report_their_maximum_and_say_so(start_api, tmp_path):
    with (
        run_sim(args=["--seed", "1"]) as first,
        run_sim(args=["--seed", "2", "--stopped"]) as second,
        Prometheus(
            tmp_path / "prom",
            [ScrapeTarget("a", f"127.0.0.1:{first.port}"), ScrapeTarget("b", f"127.0.0.1:{second.port}")],
        ) as prometheus,
    ):
        wait_until(prometheus.targets_up, 60, "both simulators scraped")
        api = start_api(prometheus_url=prometheus.url)
        summary = summary_when(
            api, lambda s: (s["coverage_ratio"].get("context") or {}).get("series") == 2, "two series"
        )
        assert summary["coverage_ratio"]["value"] == pytest.approx(first.status()["coverage_ratio"])
        assert summary["coverage_ratio"]["context"]["aggregation"] == "max"
        assert summary["throughput_mps"]["context"] == {
            "window": "max_over_time[1m]",
            "aggregation": "max",
            "series": 2,
        }


def test_prometheus_down_makes_every_metric_stale_not_an_error(start_api, tmp_path, sim):
    with Prometheus(tmp_path / "prom", [ScrapeTarget("sim", f"127.0.0.1:{sim.port}")]) as prometheus:
        api = start_api(prometheus_url=prometheus.url, api_metrics_max_age_seconds=0)  # no answer reused
        summary_when(api, lambda s: not s["coverage_ratio"]["stale"], "a sample while Prometheus runs")
        prometheus.stop()
        response = api.get(SUMMARY, headers=auth(METRICS_TOKEN))
    assert response.status_code == 200
    for key, metric in response.json().items():
        assert metric["stale"] is True, key
        assert metric["value"] is None, key
        assert metric["context"]["note"].startswith("prometheus unreachable"), key
    series = api.get(TIMESERIES, params={"metric": "md_throughput_mps"}, headers=auth(METRICS_TOKEN))
    assert series.status_code == 503
    assert "prometheus unreachable" in series.json()["detail"]


def test_a_closed_port_is_stale_too(start_api):
    api = start_api(prometheus_url=f"http://127.0.0.1:{free_port()}")
    began = time.monotonic()
    response = api.get(SUMMARY, headers=auth(METRICS_TOKEN))
    assert response.status_code == 200
    assert time.monotonic() - began < 2  # no retries with back-off
    assert all(m["stale"] for m in response.json().values())


@contextlib.contextmanager
def answering(body: bytes) -> Iterator[str]:
    """An HTTP server that answers every request 200 with ``body`` as JSON (not Prometheus: a proxy's error,
    another service at its URL); its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()


@contextlib.contextmanager
def dripping() -> Iterator[str]:
    """An HTTP server that answers every request 200 and then a byte of its body at a time, each well within
    any read timeout, without end (a Prometheus behind a congested link or a stuck proxy); its URL."""
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            with contextlib.suppress(OSError):
                while not stop.wait(0.2):
                    self.wfile.write(b" ")
                    self.wfile.flush()

        do_POST = do_GET

        def log_message(self, *args) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_port}"
        finally:
            stop.set()
            server.shutdown()


def test_a_prometheus_that_drips_its_answer_is_stale_and_503_once_the_timeout_is_up(start_server):
    """The timeout bounds a query's whole answer, not each read of it: a Prometheus that sends a byte at a
    time made the metrics requests wait for as long as it went on (here: the client gave up first)."""
    with dripping() as url:
        server = start_server(MDOPS_PROMETHEUS_URL=url, MDOPS_PROMETHEUS_TIMEOUT_SECONDS="1")
        code, _, text = http("GET", server.url + SUMMARY, headers=auth(METRICS_TOKEN))
        assert code == 200, text
        for key, metric in json.loads(text).items():
            assert (metric["stale"], metric["value"]) == (True, None), key
            assert metric["context"]["note"] == "prometheus unreachable: no whole answer within 1 s", key
        code, _, text = http(
            "GET", server.url + f"{TIMESERIES}?metric=md_feed_up", headers=auth(METRICS_TOKEN)
        )
        assert code == 503, text
        assert json.loads(text)["detail"] in (
            "prometheus unreachable: no whole answer within 1 s",
            "prometheus is slow or unreachable: its earlier queries have not answered yet; try again shortly",
        )


@pytest.mark.parametrize(
    "body",
    [
        b'{"status": "success", "data": {}}',
        b'{"status": "error", "errorType": "bad_data", "error": "a proxy says no"}',
        b'{"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}}',
        b'{"status": "success", "data": {"result": [{"metric": {}, "values": [["x", "1"]]}]}}',
        b"[]",
    ],
)
def test_an_answer_not_of_prometheus_shape_is_stale_and_503_not_500(start_api, body):
    with answering(body) as url:
        api = start_api(prometheus_url=url)
        response = api.get(SUMMARY, headers=auth(METRICS_TOKEN))
        assert response.status_code == 200, response.text
        for key, metric in response.json().items():
            assert (metric["stale"], metric["value"]) == (True, None), key
            assert metric["context"]["note"].startswith("prometheus query failed: not a Prometheus answer"), (
                key
            )
        series = api.get(TIMESERIES, params={"metric": "md_throughput_mps"}, headers=auth(METRICS_TOKEN))
        assert series.status_code == 503, series.text
        assert series.json()["detail"].startswith("prometheus query failed: not a Prometheus answer")


def test_concurrent_summaries_share_one_batch_of_queries_reused_for_the_max_age(start_server, prometheus):
    """50 consoles at once over real sockets: one batch of the summary's queries, then none while it is
    fresh enough (MDOPS_API_METRICS_MAX_AGE_SECONDS)."""
    server = start_server(MDOPS_API_METRICS_MAX_AGE_SECONDS="30")
    wait_until(lambda: prometheus.query("md_throughput_mps"), 30, "a first scrape")
    before = prometheus.queries_answered()
    with ThreadPoolExecutor(50) as pool:
        answers = list(
            pool.map(lambda _: http("GET", server.url + SUMMARY, headers=auth(METRICS_TOKEN)), range(50))
        )
        assert {code for code, _, _ in answers} == {200}
        assert len({text for _, _, text in answers}) == 1
        assert prometheus.queries_answered() - before == len(SUMMARY_QUERIES)
        list(pool.map(lambda _: http("GET", server.url + SUMMARY, headers=auth(METRICS_TOKEN)), range(50)))
    assert prometheus.queries_answered() - before == len(SUMMARY_QUERIES)


def test_a_summary_is_never_reused_past_its_max_age(start_api, prometheus):
    api = start_api(prometheus_url=prometheus.url, api_metrics_max_age_seconds=0)
    wait_until(lambda: prometheus.query("md_throughput_mps"), 30, "a first scrape")
    before = prometheus.queries_answered()
    for _ in range(3):
        assert api.get(SUMMARY, headers=auth(METRICS_TOKEN)).status_code == 200
    assert prometheus.queries_answered() - before == 3 * len(SUMMARY_QUERIES)


def test_no_answer_or_log_line_shows_prometheus_url_or_its_password(start_server):
    server = start_server(MDOPS_PROMETHEUS_URL=f"http://mdops:hunter2-secret@127.0.0.1:{free_port()}")
    code, _, text = http(
        "GET", server.url + TIMESERIES + "?metric=md_throughput_mps", headers=auth(METRICS_TOKEN)
    )
    assert code == 503 and json.loads(text)["detail"].startswith("prometheus unreachable")
    code, _, text = http("GET", server.url + SUMMARY, headers=auth(METRICS_TOKEN))
    assert code == 200 and "hunter2" not in text
    server.stop()
    log = server.log.read_text()
    assert "metrics of http://127.0.0.1:" in log  # said where, without the credentials
    assert "hunter2" not in log and "127.0.0.1" not in text


def test_timeseries_returns_points_in_the_configured_zone(metrics_api):
    def points():
        response = metrics_api.get(
            TIMESERIES,
            params={"metric": "md_throughput_mps", "minutes": 1, "step_seconds": 1},
            headers=auth(METRICS_TOKEN),
        )
        assert response.status_code == 200
        body = response.json()
        return body if len([p for p in body["points"] if p["value"] is not None]) >= 3 else None

    body = wait_until(points, 30, "three seconds of throughput samples")
    assert body["metric"] == "md_throughput_mps"
    assert body["unit"] == "msg/s"
    stamps = [datetime.datetime.fromisoformat(p["timestamp"]) for p in body["points"]]
    assert all(p["timestamp"].endswith("+08:00") for p in body["points"])
    assert stamps == sorted(stamps)
    assert all((b - a).total_seconds() == 1 for a, b in itertools.pairwise(stamps))
    assert all(isinstance(p["value"], int | float) and p["value"] > 0 for p in body["points"])
    assert len(body["points"]) <= 61


def test_timeseries_units_are_per_metric(metrics_api):
    for metric, unit in (("md_subscription_ignored_total", "instruments"), ("md_feed_up", None)):
        response = metrics_api.get(
            TIMESERIES, params={"metric": metric, "minutes": 5}, headers=auth(METRICS_TOKEN)
        )
        assert response.status_code == 200
        assert (response.json()["metric"], response.json()["unit"]) == (metric, unit)


def test_timeseries_of_a_metric_without_samples_has_no_points(start_api, tmp_path):
    with Prometheus(tmp_path / "prom", []) as empty:
        api = start_api(prometheus_url=empty.url)
        response = api.get(TIMESERIES, params={"metric": "md_throughput_mps"}, headers=auth(METRICS_TOKEN))
    assert response.status_code == 200
    assert response.json() == {"metric": "md_throughput_mps", "unit": "msg/s", "points": []}


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({}, "metric"),
        ({"metric": "up"}, "allowed metrics: md_subscription_coverage_ratio"),
        ({"metric": "sum(md_throughput_mps)"}, "is not allowed"),
        ({"metric": 'md_throughput_mps{job="sim"}'}, "is not allowed"),
        ({"metric": "md_throughput_mps", "minutes": 0}, "minutes"),
        ({"metric": "md_throughput_mps", "minutes": 10081}, "minutes"),
        ({"metric": "md_throughput_mps", "minutes": "an hour"}, "minutes"),
        ({"metric": "md_throughput_mps", "step_seconds": 0}, "step_seconds"),
        ({"metric": "md_throughput_mps", "step_seconds": 3601}, "step_seconds"),
    ],
)
def test_timeseries_validation_is_422(api, params, fragment):
    response = api.get(TIMESERIES, params=params, headers=auth(METRICS_TOKEN))
    assert response.status_code == 422, response.text
    assert fragment in response.text


def test_a_metric_not_allowed_is_not_echoed_back(api):
    response = api.get(
        TIMESERIES, params={"metric": "<script>alert(1)</script>"}, headers=auth(METRICS_TOKEN)
    )
    assert response.status_code == 422
    assert "<script>" not in response.text and "alert(1)" not in response.text
    [issue] = response.json()["detail"]
    assert issue["loc"] == ["query", "metric"]
    assert issue["msg"].startswith(
        "this metric is not allowed; allowed metrics: md_subscription_coverage_ratio"
    )


@pytest.mark.parametrize(
    ("minutes", "step_seconds", "step"),
    [(183, 1, 1), (184, 1, 2), (367, 1, 3), (367, 2, 3), (367, 4, 4)],
)
def test_a_step_too_fine_for_prometheus_is_raised(metrics_api, minutes, step_seconds, step):
    """Every valid query has an answer: past Prometheus' 11000 points, the step is raised just enough."""

    def answered():
        response = metrics_api.get(
            TIMESERIES,
            params={"metric": "md_throughput_mps", "minutes": minutes, "step_seconds": step_seconds},
            headers=auth(METRICS_TOKEN),
        )
        assert response.status_code == 200, response.text
        points = response.json()["points"]
        return points if len(points) >= 3 else None

    points = wait_until(answered, 30, "three points")
    stamps = [datetime.datetime.fromisoformat(p["timestamp"]) for p in points]
    assert {(b - a).total_seconds() for a, b in itertools.pairwise(stamps)} == {step}


def test_many_readers_cost_one_summary_per_interval(start_api, prometheus):
    """Concurrent and repeated summaries within the reuse interval: one computation, by Prometheus' count."""
    api = start_api(prometheus_url=prometheus.url, api_metrics_max_age_seconds=60)
    before = prometheus.queries_answered()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: api.get(SUMMARY, headers=auth(METRICS_TOKEN)), range(24)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.text for a in answers}) == 1
    assert answers[0].headers["cache-control"] == "private, max-age=60"
    assert prometheus.queries_answered() - before == len(SUMMARY_QUERIES)


def timed(
    method: str, url: str, body: dict | None = None, token: str = ADMIN_TOKEN
) -> tuple[int, str, float]:
    """One request over a real socket: (status, body, seconds it took)."""
    began = time.monotonic()
    code, _, text = http(method, url, body, auth(token))
    return code, text, time.monotonic() - began


def test_a_hung_prometheus_holds_up_nothing_but_its_own_queries(start_server, tmp_path, sim):
    """Prometheus stopped (SIGSTOP: its port accepts, it answers nothing) under many concurrent metrics
    requests: status and execute still answer at once, and a metrics request that would wait behind the
    queries in flight is a prompt 503, not an answer after a queue of timeouts."""
    with Prometheus(tmp_path / "prom", [ScrapeTarget("sim", f"127.0.0.1:{sim.port}")]) as hung:
        server = start_server(
            MDOPS_PROMETHEUS_URL=hung.url,
            MDOPS_PROMETHEUS_TIMEOUT_SECONDS="5",
            MDOPS_API_METRICS_MAX_AGE_SECONDS="0",
            MDOPS_API_EXECUTE_WAIT_SECONDS="0",  # 202 once created: no controller here
        )
        os.kill(hung.process.popen.pid, signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(48) as pool:
                # Distinct windows: distinct queries, none shared; and summaries besides.
                urls = [f"{TIMESERIES}?metric=md_throughput_mps&minutes={m}" for m in range(1, 41)]
                urls += [SUMMARY] * 4
                load = [pool.submit(timed, "GET", server.url + u, None, METRICS_TOKEN) for u in urls]

                def busy() -> tuple[int, str, float] | None:  # every Prometheus thread holds a query
                    code, text, took = timed("GET", server.url + f"{TIMESERIES}?metric=md_feed_up")
                    return (code, text, took) if code == 503 else None

                code, text, took = wait_until(busy, 15, "a metrics request refused while Prometheus hangs")
                assert "prometheus is slow or unreachable" in json.loads(text)["detail"]
                assert took < 3, took

                code, text, took = timed("GET", server.url + "/api/ops/status")
                assert code == 200, text
                assert took < 3, took
                execute = server.url + "/api/ops/runbooks/execute"
                code, text, took = timed("POST", execute, {"command": "start"})
                assert code == 202, text
                assert took < 3, took

                answers = [f.result() for f in load]
        finally:
            os.kill(hung.process.popen.pid, signal.SIGCONT)
    # As many as the threads ran into Prometheus' timeout; the others were refused at once.
    refused = [a for a in answers if a[0] == 503 and "slow or unreachable" in a[1]]
    assert len(answers) - len(refused) <= QUERY_WORKERS + 4  # the summaries share their queries
    assert all(took < 3 for _, _, took in refused), [round(a[2], 1) for a in refused]
    for code, text, _ in answers:
        assert code in (200, 503), text
        if code == 200 and text.startswith('{"coverage_ratio"'):  # a summary that ran: stale, as before
            assert all(m["stale"] for m in json.loads(text).values())
