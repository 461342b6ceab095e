"""The controller's Prometheus metrics (its own registry, served on ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry()

EXIT_CODE = Gauge(
    "md_runbook_exit_code",
    "Exit code of the last finished (non-dry) run, by command.",
    ["command"],
    registry=REGISTRY,
)
LAST_RUN = Gauge(
    "md_runbook_last_run_timestamp_seconds",
    "When the last (non-dry) run of a command ended.",
    ["command"],
    registry=REGISTRY,
)
RUNS = Counter("md_runbook_runs_total", "Finished runs.", ["command", "result"], registry=REGISTRY)
DURATION = Histogram(
    "md_runbook_duration_seconds",
    "Run duration, from start to finish.",
    ["command", "result"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600),
    registry=REGISTRY,
)
# One series per lock target (namespace/lock group): bounded by the lock groups the settings name.
QUEUE_DEPTH = Gauge(
    "md_runbook_queue_depth", "Runbooks waiting for their target's lock.", ["target"], registry=REGISTRY
)
RUNNING = Gauge("md_runbook_running", "Runs executing now.", registry=REGISTRY)


def serve(host: str, port: int) -> None:
    if port:
        start_http_server(port, addr=host, registry=REGISTRY)


def record_finish(command: str, result: dict, duration: float, *, dry_run: bool) -> None:
    outcome = result.get("result", "failed")
    RUNS.labels(command, outcome).inc()
    DURATION.labels(command, outcome).observe(max(duration, 0.0))
    if not dry_run:
        EXIT_CODE.labels(command).set(int(result["exitCode"]))
        LAST_RUN.labels(command).set_to_current_time()
