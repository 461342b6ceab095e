"""The report file a script may write: ``{"health": {...}, "state": {...}}``, checked against the contract."""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runbooks.contract import EARLIEST, LATEST, parse_time

HEALTH_NUMBERS = (
    "coverage_ratio",
    "expected_total",
    "active_total",
    "matched_total",
    "ignored_total",
    "consumer_backlog_messages",
    "failover_latency_ms",
)
HEALTH_KEYS = (*HEALTH_NUMBERS, "generated_at")
STATE_KEYS = ("environment_mode", "active_profile", "active_window")
MAX_REPORT_BYTES = 1024 * 1024
# Deeper values are refused: a health report is flat, and whatever nests must still fit the status (and the
# JSON encoders on its way there, whose recursion is bounded).
MAX_DEPTH = 32


class ReportError(ValueError):
    """The report file breaks the contract."""


@dataclass(frozen=True)
class Report:
    health: dict[str, Any] | None = None
    state: dict[str, str | None] | None = None


def read_report(path: Path) -> Report:
    """The script's report; an empty ``Report`` when the script wrote none.

    Whatever the script left at the path, this returns or raises ``ReportError`` at once: a FIFO is not
    waited on, a directory or a device is not read.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return Report()
    except OSError as error:
        raise ReportError(f"cannot be opened: {error.strerror}") from None
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise ReportError(f"not a regular file but {_kind(mode)}")
        data = os.read(descriptor, MAX_REPORT_BYTES + 1)  # a regular file gives all that is asked for
    except OSError as error:
        raise ReportError(f"cannot be read: {error.strerror}") from None
    finally:
        os.close(descriptor)
    if len(data) > MAX_REPORT_BYTES:
        raise ReportError(f"larger than {MAX_REPORT_BYTES} bytes")
    try:
        document = json.loads(data.decode(), parse_constant=_reject_constant)
    except ValueError as exc:  # also UnicodeDecodeError
        raise ReportError(f"not JSON: {exc}") from None
    except RecursionError:
        raise ReportError(f"nested deeper than {MAX_DEPTH} levels") from None
    if _depth(document) > MAX_DEPTH:
        raise ReportError(f"nested deeper than {MAX_DEPTH} levels")
    if not isinstance(document, dict):
        raise ReportError(f"expected a JSON object, got {type(document).__name__}")
    unknown = sorted(set(document) - {"health", "state"})
    if unknown:
        raise ReportError(f"unknown keys {unknown} (expected 'health' and/or 'state')")
    return Report(health=_health(document.get("health")), state=_state(document.get("state")))


def _kind(mode: int) -> str:
    kinds = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket"}
    return next((name for test, name in kinds.items() if test(mode)), "a device")


def _depth(document: Any) -> int:
    """How deep arrays and objects nest in ``document`` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(document, 0)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is not None:
            deepest = max(deepest, depth + 1)
            if deepest > MAX_DEPTH:
                return deepest
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _health(health: Any) -> dict[str, Any] | None:
    if health is None:
        return None
    if not isinstance(health, dict):
        raise ReportError(f"'health' must be an object, got {type(health).__name__}")
    if "gate" in health:  # the runner's verdict: one written by a script would be shown as the gate's
        raise ReportError("health.gate is the health gate's verdict, written by the runner, not the script")
    for key in HEALTH_NUMBERS:
        if not _is_number_or_null(health.get(key)):
            raise ReportError(f"health.{key} must be a number or null")
    if not 0 <= (health.get("coverage_ratio") or 0) <= 1:
        raise ReportError("health.coverage_ratio must be between 0 and 1")
    _timestamp(health.get("generated_at"))
    return health


def _timestamp(value: Any) -> None:
    """``generated_at``: null, or an ISO 8601 time between :data:`EARLIEST` and :data:`LATEST`."""
    if value is None:
        return
    if not isinstance(value, str):
        raise ReportError("health.generated_at must be a string or null")
    moment = parse_time(value)
    if moment is None:
        raise ReportError(f"health.generated_at {value[:64]!r} is not an ISO 8601 time")
    if not EARLIEST <= moment < LATEST:
        raise ReportError(
            f"health.generated_at {value[:64]!r} is not between {EARLIEST.year} and {LATEST.year}"
        )


def _state(state: Any) -> dict[str, str | None] | None:
    if state is None:
        return None
    if not isinstance(state, dict):
        raise ReportError(f"'state' must be an object, got {type(state).__name__}")
    unknown = sorted(set(state) - set(STATE_KEYS))
    if unknown:
        raise ReportError(f"unknown state keys {unknown} (expected {list(STATE_KEYS)})")
    for key, value in state.items():
        if not isinstance(value, str | None):
            raise ReportError(f"state.{key} must be a string or null")
    return state


def _is_number_or_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False
