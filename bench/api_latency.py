"""Benchmark: the REST API's status and summary latencies, side by side with what they replace.

1. ``GET /api/ops/status`` with 10,000 finished Runbooks in the namespace (served from the API's
   watch-fed cache) against listing those Runbooks from the API server (what a naive status does).
2. ``GET /api/ops/metrics/summary`` over HTTP against one instant query sent straight to Prometheus over
   HTTP (what a console would cost without the API), with ``GET /healthz`` beside them: one of each per
   round, in a new (seeded) order each round, since the first request a server gets after the other's
   is the slower one; and, in process through the API's own client, the summary's queries (run
   concurrently) against the slowest of them alone.
3. 50 concurrent clients polling the summary for a while: how many batches of its queries reached
   Prometheus (Prometheus' own request counter), against the number of reuse intervals
   (``MDOPS_API_METRICS_MAX_AGE_SECONDS``) in that time.

Targets on a 2-core machine: status p99 < 20 ms and >= 20x faster than the list; summary p50 <= 1.0x one
instant query; its queries within 1.5x the slowest alone; 50 pollers cause one batch per interval.

    python -m bench.api_latency [--runbooks 10000] [--requests 500] [--summary-max-age 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from kubernetes import client

from api.prometheus import SUMMARY_QUERIES, MetricsSource
from devcluster.controlplane import ControlPlane
from devcluster.processes import Process, answers_200, free_port, wait_until
from devcluster.prometheus import Prometheus, ScrapeTarget
from runbooks import keys, models
from runbooks.contract import Command
from runbooks.kube import api_client

NAMESPACE = "bench"
INSTANT = {"query": "md_throughput_mps"}  # one instant query, what a console would send without the API
COMMANDS = [c.value for c in Command]


def timings(call: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        began = time.perf_counter()
        call()
        samples.append((time.perf_counter() - began) * 1000)
    return samples


def async_timings(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    async def run() -> list[float]:
        samples = []
        for _ in range(count):
            began = time.perf_counter()
            await call()
            samples.append((time.perf_counter() - began) * 1000)
        return samples

    return asyncio.run(run())


def describe(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))], 2),
    }


def create_history(custom: client.CustomObjectsApi, count: int, namespace: str = NAMESPACE) -> None:
    """``count`` finished Runbooks, as the controller would have left them."""

    def one(index: int) -> None:
        name = f"hist-{index:05d}"
        command = COMMANDS[index % len(COMMANDS)]
        body = models.manifest(name, {"command": command, "reason": "bench history", "requestedBy": "bench"})
        custom.create_namespaced_custom_object(keys.GROUP, keys.VERSION, namespace, keys.PLURAL, body)
        stamp = f"2026-11-26T{index // 3600 % 24:02d}:{index // 60 % 60:02d}:{index % 60:02d}Z"
        status = {"status": {
            "requestId": name, "window": "day", "exitCode": 0, "result": "success", "message": "ok",
            "startedAt": stamp, "finishedAt": stamp,
            "logs": [{"time": stamp, "level": "INFO", "message": f"{command} done"}],
            "health": {"coverage_ratio": 0.999, "generated_at": stamp},
            "state": {"environmentMode": "live", "activeProfile": "primary", "activeWindow": "day"},
            "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded", "message": "ok",
                            "lastTransitionTime": stamp, "observedGeneration": 1}],
        }}  # fmt: skip
        custom.patch_namespaced_custom_object_status(
            keys.GROUP, keys.VERSION, namespace, keys.PLURAL, name, status
        )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(count)))


def poll(http: httpx.Client, prometheus: Prometheus, clients: int, seconds: float) -> dict[str, float]:
    """``clients`` threads, each a console with its own connection, polling the summary as fast as they are
    answered for ``seconds``: the requests answered, and the batches of the summary's queries Prometheus
    received."""
    before = prometheus.queries_answered()
    deadline = time.monotonic() + seconds

    def client_loop(_: int) -> int:
        answered = 0
        with httpx.Client(base_url=http.base_url, headers=http.headers, timeout=60) as console:
            while time.monotonic() < deadline:
                console.get("/api/ops/metrics/summary").raise_for_status()
                answered += 1
        return answered

    began = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        answered = sum(pool.map(client_loop, range(clients)))
    elapsed = time.monotonic() - began
    batches = (prometheus.queries_answered() - before) / len(SUMMARY_QUERIES)
    return {"clients": clients, "seconds": round(elapsed, 1), "requests": answered, "query_batches": batches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runbooks", type=int, default=10000)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--lists", type=int, default=20)
    parser.add_argument(
        "--summary-max-age", type=float, default=1.0, help="MDOPS_API_METRICS_MAX_AGE_SECONDS"
    )
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--poll-seconds", type=float, default=10.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mdops-bench-api-"))
    token = secrets.token_urlsafe(16)
    with ControlPlane(work / "cluster") as cluster:
        cluster.install_crds()
        cluster.kubectl("create", "namespace", NAMESPACE)
        kube = api_client(cluster.kubeconfig)
        kube.configuration.connection_pool_maxsize = 16
        custom = client.CustomObjectsApi(kube)
        began = time.monotonic()
        create_history(custom, args.runbooks)
        print(f"created {args.runbooks} Runbooks in {time.monotonic() - began:.0f}s", file=sys.stderr)

        sim_port = free_port()
        sim = Process("sim", [sys.executable, "-m", "sim", "--port", str(sim_port)], work)
        prometheus = Prometheus(work / "prometheus", [ScrapeTarget("sim", f"127.0.0.1:{sim_port}")]).start()
        api_port = free_port()
        api = Process("api", [sys.executable, "-m", "api"], work, env={
            **os.environ, "MDOPS_KUBECONFIG": str(cluster.kubeconfig), "MDOPS_NAMESPACE": NAMESPACE,
            "OPS_API_TOKEN": token, "MDOPS_PROMETHEUS_URL": prometheus.url, "MDOPS_API_PORT": str(api_port),
            "MDOPS_API_LOG_LEVEL": "warning", "MDOPS_API_METRICS_MAX_AGE_SECONDS": str(args.summary_max_age),
        })  # fmt: skip
        try:
            base = f"http://127.0.0.1:{api_port}"

            wait_until(lambda: answers_200(f"{base}/readyz"), 300, "the API's cache to sync", [api])
            wait_until(lambda: prometheus.query("md_throughput_mps"), 60, "a first scrape", [sim])
            with httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
            ) as http:
                status_ms = timings(lambda: http.get("/api/ops/status").raise_for_status(), args.requests)
                history = len(http.get("/api/ops/status").json()["runbook_history"])
                list_ms = timings(
                    lambda: custom.list_namespaced_custom_object(
                        keys.GROUP, keys.VERSION, NAMESPACE, keys.PLURAL
                    ),
                    args.lists,
                )
                with httpx.Client(base_url=prometheus.url, timeout=60) as direct:
                    calls = {
                        "instant": lambda: direct.get("/api/v1/query", params=INSTANT).raise_for_status(),
                        "summary": lambda: http.get("/api/ops/metrics/summary").raise_for_status(),
                        "healthz": lambda: http.get("/healthz").raise_for_status(),
                    }
                    samples: dict[str, list[float]] = {name: [] for name in calls}
                    order = random.Random(0)
                    # One of each in turn, all under the same load, in a new order each round: the first
                    # request a process gets after the other's is slower (it was idle), whichever it is.
                    for _ in range(args.requests):
                        for name in order.sample(list(calls), len(calls)):
                            samples[name] += timings(calls[name], 1)
                polling = poll(http, prometheus, args.pollers, args.poll_seconds)
            # The summary's queries concurrently against each alone, in process, through the API's own
            # client: what concurrency buys, without the HTTP layer on one side only.
            source = MetricsSource(prometheus.url, timeout=5, max_age=0)
            in_process = describe(async_timings(source.query_summary, args.requests // 5))

            async def one_by_one() -> None:
                for query in SUMMARY_QUERIES:
                    await source._query(query)

            serial = describe(async_timings(one_by_one, args.requests // 5))
            alone = {
                q: describe(async_timings(lambda q=q: source._query(q), args.requests // 5))
                for q in SUMMARY_QUERIES
            }
            source.close()
        finally:
            api.stop()
            prometheus.stop()
            sim.stop()

    status, listing, summary = describe(status_ms), describe(list_ms), describe(samples["summary"])
    instant = describe(samples["instant"])
    slowest = max(alone.values(), key=lambda d: d["p50_ms"])
    report = {
        "runbooks": args.runbooks,
        "status": {**status, "history_entries": history},
        "list_from_apiserver": listing,
        "status_speedup_p50": round(listing["p50_ms"] / status["p50_ms"], 1),
        "summary_over_http": summary,
        "instant_query_straight_to_prometheus": instant,
        "summary_over_instant_query_p50": round(summary["p50_ms"] / instant["p50_ms"], 2),
        "healthz_over_http": describe(samples["healthz"]),  # the API's floor: its smallest answer
        "summary_max_age_seconds": args.summary_max_age,
        "pollers": polling,
        "summary_in_process": in_process,
        "summary_queries_one_by_one": serial,
        "slowest_query_alone": slowest,
        "summary_over_slowest_p50": round(in_process["p50_ms"] / slowest["p50_ms"], 2),
        "queries_alone": alone,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
