"""The result JSON: exit codes, building it within the termination message's 4 KiB, writing and parsing it."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from runbooks.contract import LOG_LEVELS, ExitCode, is_exit_code, parse_time
from runner.logs import dumps
from runner.report import HEALTH_KEYS

RESULT_PREFIX = "MDOPS_RESULT "
MAX_RESULT_BYTES = 4096  # a container's termination message
MAX_SUMMARY_CHARS = 200
_LOG_KEYS = {"time", "level", "message"}
_RESULT_KEYS = {
    "exitCode",
    "result",
    "message",
    "startedAt",
    "finishedAt",
    "dryRun",
    "health",
    "state",
    "logs",
}


def build_result(
    *,
    exit_code: int,
    message: str,
    started_at: str,
    finished_at: str,
    dry_run: bool,
    health: dict[str, Any] | None,
    state: dict[str, Any] | None,
    logs: Sequence[dict[str, str]],
) -> dict[str, Any]:
    """The result, at most ``MAX_RESULT_BYTES`` serialized.

    What does not fit goes in this order: the oldest log lines, then the health report's extra keys
    (the last ones first), then, as a last resort, the rest of the health report (``{"truncated": true}``
    and the gate stay) and the state.
    """
    result: dict[str, Any] = {
        "exitCode": int(exit_code),
        "result": "success" if exit_code == ExitCode.SUCCESS else "failed",
        "message": message[:MAX_SUMMARY_CHARS],
        "startedAt": started_at,
        "finishedAt": finished_at,
        "dryRun": dry_run,
        "health": health,
        "state": state,
        "logs": [],
    }
    if health is not None and not _fits(result):
        result["health"] = _without_extras(result, health)
    if health is not None and not _fits(result):
        gate = {"gate": health["gate"]} if "gate" in health else {}
        result["health"] = {**gate, "truncated": True}
    if not _fits(result):
        result["state"] = None
    kept = _largest(len(logs), lambda count: _fits({**result, "logs": logs[len(logs) - count :]}))
    result["logs"] = list(logs[len(logs) - kept :])
    return result


def _without_extras(result: dict[str, Any], health: dict[str, Any]) -> dict[str, Any]:
    extras = [key for key in health if key not in HEALTH_KEYS and key != "gate"]

    def trimmed(count: int) -> dict[str, Any]:
        dropped = set(extras[count:])
        return {key: value for key, value in health.items() if key not in dropped}

    return trimmed(_largest(len(extras), lambda count: _fits({**result, "health": trimmed(count)})))


def _fits(result: dict[str, Any]) -> bool:
    return len(dumps(result).encode()) <= MAX_RESULT_BYTES


def _largest(upper: int, fits: Callable[[int], bool]) -> int:
    """The largest count in 0..upper that fits (fitting is monotonic; 0 is taken even if it does not)."""
    low, high = 0, upper
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def write_result_file(path: str, text: str) -> None:
    """Write atomically (temporary file, then rename) where possible, else in place.

    In place is for ``/dev/termination-log`` and the like: a file in a directory we may not write, a
    mount point (rename fails), or something that is not a regular file (never replaced by one). Not for
    a full disk, where it would leave an empty file (OSError).
    """
    try:
        regular = stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        regular = True
    if regular:
        try:
            write_atomically(path, text)
            return
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)


def write_atomically(path: str, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to a new file beside ``path`` (created 0600), give it ``mode``, rename it over
    ``path``: readers see the old or the new file, never a part, and never a mode wider than ``mode``."""
    descriptor, temporary = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".mdops-")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def parse_log_line(line: str) -> dict[str, str] | None:
    """A log line as streamed by the runner, or None if the line is not one (e.g. the result line)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if _log_problem(entry) is not None:
        return None
    return entry


def parse_result(text: str) -> dict[str, Any]:
    """A result JSON (with or without the ``MDOPS_RESULT `` prefix), validated; ValueError if invalid."""
    text = text.strip()
    text = text.removeprefix(RESULT_PREFIX)
    try:
        result = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"result is not JSON: {exc}") from None
    if not isinstance(result, dict):
        raise ValueError("result is not a JSON object")
    if set(result) != _RESULT_KEYS:
        raise ValueError(f"result keys are {sorted(result)}, expected {sorted(_RESULT_KEYS)}")
    code = result["exitCode"]
    if not is_exit_code(code):
        raise ValueError(f"result exitCode is not an exit code: {code!r}")
    if result["result"] != ("success" if code == 0 else "failed"):
        raise ValueError(f"result {result['result']!r} does not match exitCode {code}")
    if not isinstance(result["message"], str):
        raise ValueError("result message is not a string")
    for key in ("startedAt", "finishedAt"):
        if not parse_time(result[key]) is not None:
            raise ValueError(f"result {key} is not an ISO 8601 timestamp: {result[key]!r}")
    if not isinstance(result["dryRun"], bool):
        raise ValueError("result dryRun is not a boolean")
    for key in ("health", "state"):
        if not isinstance(result[key], dict | None):
            raise ValueError(f"result {key} is neither an object nor null")
    if not isinstance(result["logs"], list):
        raise ValueError("result logs is not a list")
    for index, entry in enumerate(result["logs"]):
        problem = _log_problem(entry)
        if problem is not None:
            raise ValueError(f"result logs[{index}]: {problem}")
    return result


def _log_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict) or set(entry) != _LOG_KEYS:
        return "not a {time, level, message} object"
    if entry["level"] not in LOG_LEVELS:
        return f"unknown level {entry['level']!r}"
    if not isinstance(entry["message"], str):
        return "message is not a string"
    if not parse_time(entry["time"]) is not None:
        return f"time is not an ISO 8601 timestamp: {entry['time']!r}"
    return None
