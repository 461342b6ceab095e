"""The health gate: the health report checked against thresholds after the commands that change health."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Thresholds:
    min_coverage: float = 0.99
    max_backlog: int = 10000
    max_failover_latency_ms: int = 5000


def evaluate(health: dict[str, Any], thresholds: Thresholds, *, enforced: bool) -> dict[str, Any]:
    """The gate record ``{"passed", "enforced", "failures"}``; a missing or null value is not checked."""
    failures = []
    coverage = health.get("coverage_ratio")
    if coverage is not None and coverage < thresholds.min_coverage:
        failures.append(f"coverage_ratio {_show(coverage)} < {_show(thresholds.min_coverage)}")
    backlog = health.get("consumer_backlog_messages")
    if backlog is not None and backlog > thresholds.max_backlog:
        failures.append(f"consumer_backlog_messages {_show(backlog)} > {_show(thresholds.max_backlog)}")
    latency = health.get("failover_latency_ms")
    if latency is not None and latency > thresholds.max_failover_latency_ms:
        failures.append(f"failover_latency_ms {_show(latency)} > {_show(thresholds.max_failover_latency_ms)}")
    return {"passed": not failures, "enforced": enforced, "failures": failures}


def _show(number: float) -> str:
    """A number as written, unless that is long (a huge integer): then 6 significant digits."""
    text = repr(number)
    return text if len(text) <= 20 else format(Decimal(number), ".6g")
