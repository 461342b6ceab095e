"""The controller's Prometheus metrics (its own registry, served on ``/metrics``)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from runbooks.contract import Command, RunState, parse_time
from runbooks.schedule import RunbookScheduleStatus

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
# Each command's counts exist from the start, at 0: a series born at 1 shows Prometheus no increase, and the
# first failed run after a controller's start would raise no alert (MdopsFailoverFailed, MdopsRunbookFailed).
for _command in Command:
    for _result in (RunState.SUCCESS, RunState.FAILED):
        RUNS.labels(_command, _result)
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
# The gate (RunbookPolicies, RunbookApprovals): what it decided, and the runs it holds now.
GATE = Counter(
    "md_runbook_gate_total",
    "Decisions of the gate by outcome: held (outside the change window), awaiting (approvals), approved, "
    "refused (outside the change window, Reject), rejected, expired (approvals).",
    ["command", "outcome"],
    registry=REGISTRY,
)
HELD = Gauge(
    "md_runbook_held",
    "Runs held now: at the gate (outside their change window or awaiting approvals), or until a person "
    "mends their request id's claim.",
    registry=REGISTRY,
)
# Per schedule (namespace, schedule): as many series as schedules, removed with them.
SCHEDULE_NEXT_SLOT = Gauge(
    "md_schedule_next_slot_timestamp_seconds",
    "When the schedule's next slot runs (absent while suspended or with none within 31 days).",
    ["namespace", "schedule"],
    registry=REGISTRY,
)
SCHEDULE_LAST_RESULT = Gauge(
    "md_schedule_last_result",
    "Result of the schedule's latest finished run: 1 success, 0 failed.",
    ["namespace", "schedule"],
    registry=REGISTRY,
)
SCHEDULE_SLOTS = Counter(
    "md_schedule_slots_total",
    "Slots of the schedule by outcome: created (its Runbook), missed, skipped.",
    ["namespace", "schedule", "outcome"],
    registry=REGISTRY,
)
SLOT_OUTCOMES = ("created", "missed", "skipped")


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


def record_schedule(namespace: str, name: str, status: RunbookScheduleStatus, counts: dict[str, int]) -> None:
    """A schedule's recorded step: its status and the slots it handled."""
    next_slot = parse_time(status.next_slot)
    if next_slot is None:
        _remove(SCHEDULE_NEXT_SLOT, namespace, name)
    else:
        SCHEDULE_NEXT_SLOT.labels(namespace, name).set(next_slot.timestamp())
    if status.last_result is not None:  # kept while the next run goes on
        SCHEDULE_LAST_RESULT.labels(namespace, name).set(1 if status.last_result == "success" else 0)
    for outcome, count in counts.items():
        SCHEDULE_SLOTS.labels(namespace, name, outcome).inc(count)


def forget_schedule(namespace: str, name: str) -> None:
    _remove(SCHEDULE_NEXT_SLOT, namespace, name)
    _remove(SCHEDULE_LAST_RESULT, namespace, name)
    for outcome in SLOT_OUTCOMES:
        _remove(SCHEDULE_SLOTS, namespace, name, outcome)


def _remove(metric, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never set
        metric.remove(*labels)
