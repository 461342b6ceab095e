"""Pure functions from what happened to a Runbook's status: conditions per the Kubernetes API conventions.

``Succeeded`` is the condition users wait on (``kubectl wait --for=condition=Succeeded``): Unknown while
the run is pending, queued or running, then True or False. ``Ready``, ``Reconciling`` and ``Stalled`` are
the summary kstatus (Flux) and Argo CD understand. ``Queued`` and ``Running`` say what is happening now.
"""

from __future__ import annotations

import datetime
from typing import Any

# Succeeded=False reasons by runner exit code.
FAILURE_REASONS = {
    1: "Failed",
    2: "InvalidArguments",
    3: "HealthGateFailed",
    124: "TimedOut",
    125: "ExecutionError",
    130: "Cancelled",
}
LOG_LINES = 50


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def is_finished(status: dict[str, Any] | None) -> bool:
    return condition(status, "Succeeded") in ("True", "False")


def condition(status: dict[str, Any] | None, kind: str) -> str | None:
    for entry in (status or {}).get("conditions") or []:
        if entry.get("type") == kind:
            return entry.get("status")
    return None


def _conditions(old: list[dict], generation: int, updates: dict[str, tuple[str, str, str]]) -> list[dict]:
    """Merge ``{type: (status, reason, message)}`` into ``old``; keep lastTransitionTime when status holds."""
    by_type = {c["type"]: c for c in old}
    stamp = now()
    for kind, (status, reason, message) in updates.items():
        previous = by_type.get(kind)
        changed = previous is None or previous.get("status") != status
        by_type[kind] = {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message[:1024],
            "lastTransitionTime": stamp if changed else previous["lastTransitionTime"],
            "observedGeneration": generation,
        }
    return list(by_type.values())


def _in_progress(
    reason: str, message: str, *, queued: bool, running: bool
) -> dict[str, tuple[str, str, str]]:
    return {
        "Succeeded": ("Unknown", reason, message),
        "Queued": (
            "True" if queued else "False",
            reason if queued else "NotQueued",
            message if queued else "",
        ),
        "Running": (
            "True" if running else "False",
            "Running" if running else reason,
            message if running else "",
        ),
        "Ready": ("False", reason, message),
        "Reconciling": ("True", reason, message),
        "Stalled": ("False", reason, ""),
    }


def pending(old: dict, generation: int, resolved: dict[str, Any]) -> dict[str, Any]:
    return {
        **resolved,
        "observedGeneration": generation,
        "conditions": _conditions(
            old.get("conditions") or [],
            generation,
            _in_progress("Pending", "accepted", queued=False, running=False),
        ),
    }


def queued(old: dict, generation: int, message: str) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "conditions": _conditions(
            old.get("conditions") or [],
            generation,
            _in_progress("Queued", message, queued=True, running=False),
        ),
    }


def running(old: dict, generation: int, execution: dict[str, str], started_at: str) -> dict[str, Any]:
    message = f"running as {execution['executor']} {execution['name']}"
    return {
        "observedGeneration": generation,
        "execution": execution,
        "attempts": 1,
        "startedAt": started_at,
        "conditions": _conditions(
            old.get("conditions") or [],
            generation,
            _in_progress("Running", message, queued=False, running=True),
        ),
    }


def finished(old: dict, generation: int, result: dict[str, Any], *, dry_run: bool) -> dict[str, Any]:
    """The terminal status from a runner result (see runner/README.md)."""
    code = int(result["exitCode"])
    success = code == 0
    reason = "Succeeded" if success else FAILURE_REASONS.get(code, "Failed")
    message = result.get("message") or ("succeeded" if success else f"failed with exit code {code}")
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "exitCode": code,
        "result": "success" if success else "failed",
        "message": message[:1024],
        "startedAt": result.get("startedAt") or old.get("startedAt") or now(),
        "finishedAt": result.get("finishedAt") or now(),
        "logs": [_log_line(line) for line in (result.get("logs") or [])[-LOG_LINES:]],
        "health": result.get("health"),
        "state": None if dry_run else _state(result.get("state")),
        "conditions": _conditions(
            old.get("conditions") or [],
            generation,
            {
                "Succeeded": ("True" if success else "False", reason, message),
                "Queued": ("False", "NotQueued", ""),
                "Running": ("False", reason, ""),
                "Ready": ("True" if success else "False", reason, message),
                "Reconciling": ("False", reason, ""),
                "Stalled": ("False" if success else "True", reason, "" if success else message),
            },
        ),
    }
    return status


def duplicate(
    old: dict, generation: int, earlier: dict[str, Any], resolved: dict[str, Any]
) -> dict[str, Any]:
    """A Runbook whose request id already ran: it shows the earlier result and never runs."""
    result = {**earlier.get("result", {})}
    result["message"] = f"request id already ran as {earlier['runbook']}; not run again"
    status = finished(old, generation, result, dry_run=True)
    status["conditions"] = [
        {**c, "reason": "Duplicate"} if c["type"] in ("Succeeded", "Ready") else c
        for c in status["conditions"]
    ]
    return {**status, **resolved, "duplicateOf": earlier["runbook"]}


def _log_line(line: dict[str, Any]) -> dict[str, str]:
    level = str(line.get("level", "INFO")).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        level = "INFO"
    return {"time": str(line.get("time", "")), "level": level, "message": str(line.get("message", ""))[:1024]}


def _state(state: dict[str, Any] | None) -> dict[str, str] | None:
    if not state:
        return None
    keys = {
        "environment_mode": "environmentMode",
        "active_profile": "activeProfile",
        "active_window": "activeWindow",
    }
    return {camel: str(state[snake]) for snake, camel in keys.items() if state.get(snake) is not None}


def progress_logs(lines: list[dict[str, Any]]) -> dict[str, Any]:
    return {"logs": [_log_line(line) for line in lines[-LOG_LINES:]]}
