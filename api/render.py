"""What the REST API answers, rendered from :class:`~api.records.RunbookRecord`s: pure functions (and the
status body kept encoded for the cache version it was computed from).

Timestamps are shown in the configured zone, with its offset.
"""

from __future__ import annotations

import asyncio
import datetime
import heapq
import json
from dataclasses import dataclass, field
from typing import Any

from api import events
from api.cache import RunbookCache
from api.records import RunbookRecord
from runbooks.calendar import SessionCalendar, library_version
from runbooks.contract import Command, Reason, RunState, parse_time, requester


def iso(moment: datetime.datetime | None, zone: datetime.tzinfo) -> str | None:
    """ISO 8601 in the configured zone, with its offset (``2025-09-22T08:02:00+08:00``). A time no zone can
    hold (near the years 1 and 9999, which any writer of a status may put there) is shown as written:
    one odd Runbook never fails the answer."""
    if moment is None:
        return None
    try:
        return moment.astimezone(zone).isoformat(timespec="seconds")
    except OverflowError:
        return moment.isoformat(timespec="seconds")


def zoned(value: Any, zone: datetime.tzinfo) -> Any:
    """A timestamp string moved to ``zone``; anything that is not a timestamp is returned unchanged."""
    parsed = parse_time(value)
    return value if parsed is None else iso(parsed, zone)


def health_view(health: dict[str, Any] | None, zone: datetime.tzinfo) -> dict[str, Any] | None:
    if health is None:
        return None
    view = dict(health)
    if "generated_at" in view:
        view["generated_at"] = zoned(view["generated_at"], zone)
    return view


def runbook_result(record: RunbookRecord, zone: datetime.tzinfo) -> dict[str, Any]:
    """The spec's ``runbook`` object of the execute response."""
    return {
        "request_id": record.request_id,
        "command": record.command,
        "exit_code": record.exit_code if record.finished else None,
        "status": record.status,
        "finished_at": iso(record.finished_at, zone),
        "logs": record.logs,
    }


def execute_response(record: RunbookRecord, zone: datetime.tzinfo) -> dict[str, Any]:
    return {"runbook": runbook_result(record, zone), "health": health_view(record.health, zone)}


def runbook_summary(record: RunbookRecord, zone: datetime.tzinfo) -> dict[str, Any]:
    """A runbook in status' ``last_runbook`` and ``runbook_history``: the execute shape and more."""
    spec = record.spec
    return {
        **runbook_result(record, zone),
        "name": record.name,
        "uid": record.uid or None,
        "mode": spec.get("mode"),
        "window": record.window or spec.get("window"),
        "profile": spec.get("profile"),
        "config": spec.get("config"),
        "enforce": bool(spec.get("enforce", False)),
        "dry_run": record.dry_run,
        "reason": spec.get("reason", ""),
        "requested_by": spec.get("requestedBy") or None,
        "created_at": iso(record.created, zone),
        "started_at": iso(record.started_at, zone),
        "message": record.message,
    }


def state_view(record: RunbookRecord) -> dict[str, Any] | None:
    """The environment state a run reported, named as in status (never for dry runs)."""
    if record.state is None:
        return None
    return {
        "environment_mode": record.state.get("environmentMode"),
        "active_profile": record.state.get("activeProfile"),
        "active_window": record.state.get("activeWindow"),
    }


def log_view(lines: list[dict[str, str]] | tuple[dict[str, str], ...], zone: datetime.tzinfo) -> list[dict]:
    """Log lines with their times in the zone, to the millisecond (lines come many a second)."""
    return [{**line, "time": _millis(line["time"], zone)} for line in lines]


def _millis(value: str, zone: datetime.tzinfo) -> str:
    parsed = parse_time(value)
    return value if parsed is None else parsed.astimezone(zone).isoformat(timespec="milliseconds")


def run_view(record: RunbookRecord, zone: datetime.tzinfo) -> dict[str, Any]:
    """A run as ``GET /api/ops/runbooks/{request_id}`` answers it: execute's shape, its ``runbook``
    extended as in status' history (its parameters, ``created_at``, ``uid``, why it waits), with the
    resulting state (or that it may have changed the platform without reporting one), the status'
    conditions and the spec's cancel."""
    return {
        "runbook": runbook_summary(record, zone),
        "health": health_view(record.health, zone),
        "state": state_view(record),
        "conditions": [
            {**c, "last_transition_time": zoned(c["last_transition_time"], zone)} for c in record.conditions
        ],
        "cancel": cancel_view(record.spec.get("cancel")),
        "state_unreported": _left_state_unreported(record),
    }


def cancel_view(cancel: dict[str, Any] | None) -> dict[str, Any] | None:
    """The Runbook's ``spec.cancel`` as the API shows it."""
    if cancel is None:
        return None
    return {"requested_by": cancel.get("requestedBy") or None, "reason": cancel.get("reason", "")}


def run_detail(record: RunbookRecord, zone: datetime.tzinfo) -> dict[str, Any]:
    """A run as a ``runbook`` event shows it (the console's run page): :func:`run_view` with the log lines
    with their times (``lines``; execute's ``logs`` has none)."""
    return {**run_view(record, zone), "lines": log_view(record.lines, zone)}


def event_data(change: events.Change, zone: datetime.tzinfo) -> dict[str, Any]:
    """The ``data`` of one live-update event."""
    if change.kind == events.RUNBOOK:
        return run_detail(change.record, zone)
    ids = {"request_id": change.record.request_id, "name": change.record.name}
    if change.kind == events.LOG:
        return {**ids, "lines": log_view(change.lines, zone)}
    return ids


def audit_entry(record: RunbookRecord, zone: datetime.tzinfo) -> dict[str, Any]:
    spec = record.spec
    what = f"{record.command} profile={spec.get('profile', '')} mode={spec.get('mode', '')}"
    what += f" window={record.window or spec.get('window', '')}"
    if record.dry_run:
        what += " dry_run"
    outcome = record.status
    if record.finished:  # a run refused without executing has no exit code: its reason says why
        outcome += (
            f" (exit code {record.exit_code})" if record.exit_code is not None else f" ({record.reason})"
        )
    return {
        "request_id": record.request_id,
        "who": requester(spec),
        "what": what,
        "why": spec.get("reason", ""),
        "when": iso(record.created, zone),
        "outcome": outcome,
    }


def status_response(records: list[RunbookRecord], zone: datetime.tzinfo, history: int) -> dict[str, Any]:
    """``GET /api/ops/status`` from every cached Runbook, in one pass plus a bounded heap.

    - ``environment_mode`` / ``active_profile`` / ``active_window``: the state after the most recently
      finished run that reported one (never a dry run: dry runs report no state); null if none did.
    - ``last_runbook``: the most recently created Runbook, whatever its state; ``runbook_history``: the
      ``history`` most recent, newest first; ``audit``: the same runs as audit entries.
    - ``last_exit_codes``: per command, the exit code of its most recently finished run (not dry runs).
    - ``last_health``: the health report of the most recently finished run with one (not dry runs);
      ``health_by_request``: the reports of the runs in the history, by request id.
    - ``last_updated_at``: the latest creation, start, finish or condition change of any Runbook.
    - ``state_reported_by``: the run whose state the three environment fields show; ``state_stale_by``: the
      newest run that finished after it and may have changed the platform without reporting the state it
      left (:func:`_left_state_unreported`), or null: the three fields may be stale.
    """
    last_state: RunbookRecord | None = None
    last_unreported: RunbookRecord | None = None
    last_health: RunbookRecord | None = None
    last_by_command: dict[str, RunbookRecord] = {}
    updated: datetime.datetime | None = None
    for record in records:
        if updated is None or record.updated > updated:
            updated = record.updated
        if not record.finished or record.dry_run:
            continue
        key = record.finished_key
        if record.state is not None and (last_state is None or key > last_state.finished_key):
            last_state = record
        if _left_state_unreported(record) and (last_unreported is None or key > last_unreported.finished_key):
            last_unreported = record
        if record.health is not None and (last_health is None or key > last_health.finished_key):
            last_health = record
        if record.exit_code is not None:
            best = last_by_command.get(record.command)
            if best is None or key > best.finished_key:
                last_by_command[record.command] = record
    recent = heapq.nlargest(history, records, key=lambda r: r.created_key)
    state = last_state.state if last_state is not None else {}
    if (
        last_unreported is not None
        and last_state is not None
        and last_state.finished_key > last_unreported.finished_key
    ):
        last_unreported = None
    commands = [c.value for c in Command]
    return {
        "environment_mode": state.get("environmentMode"),
        "active_profile": state.get("activeProfile"),
        "active_window": state.get("activeWindow"),
        "last_runbook": runbook_summary(recent[0], zone) if recent else None,
        "runbook_history": [runbook_summary(r, zone) for r in recent],
        "health_by_request": {
            r.request_id: health_view(r.health, zone) for r in reversed(recent) if r.health is not None
        },
        "last_health": health_view(last_health.health, zone) if last_health is not None else None,
        "last_exit_codes": {
            c: last_by_command[c].exit_code
            for c in sorted(last_by_command, key=lambda c: commands.index(c) if c in commands else 99)
        },
        "last_updated_at": iso(updated, zone),
        "state_reported_by": run_reference(last_state, zone),
        "state_stale_by": run_reference(last_unreported, zone),
        "audit": [audit_entry(r, zone) for r in recent],
    }


# A finished run's reasons that come with an exit code though no script of its own ran: a duplicate shows
# its original's result, and a Runbook over its namespace's cap is refused with 125.
RAN_NOTHING = frozenset({Reason.DUPLICATE, Reason.QUOTA_EXCEEDED})
MUTATING = frozenset(command.value for command in Command if command.mutating)


def _left_state_unreported(record: RunbookRecord) -> bool:
    """Whether a finished run may have changed the platform and left no report of the state it left: a
    command that changes it, not a dry run, that ran (it has an exit code: a run refused before it started
    has none; not a duplicate, nor one over the cap) and failed without reporting a state (stopped at its
    timeout, cancelled, its runner dead). The status' environment is then the state a run before it left."""
    return (
        record.finished
        and record.status == RunState.FAILED
        and record.exit_code is not None
        and record.reason not in RAN_NOTHING
        and record.state is None
        and not record.dry_run
        and record.command in MUTATING
    )


def run_reference(record: RunbookRecord | None, zone: datetime.tzinfo) -> dict[str, Any] | None:
    if record is None:
        return None
    return {
        "request_id": record.request_id,
        "command": record.command,
        "exit_code": record.exit_code,
        "finished_at": iso(record.finished_at, zone),
    }


def session_view(
    venue: str,
    calendar: SessionCalendar | None,
    at: datetime.datetime,
    zone: datetime.tzinfo,
    note: str | None = None,
) -> dict[str, Any]:
    """Status' ``session``: the venue's state at ``at`` and its next open and close, from ``calendar`` (None:
    not loaded, ``note`` says why)."""
    view: dict[str, Any] = {"venue": venue, "state": None, "next_open": None, "next_close": None}
    view["calendar"] = library_version()
    if calendar is None:
        return {**view, "note": note or f"the {venue} calendar is loading"}
    return {
        **view,
        "state": calendar.state(at).value,
        "next_open": iso(calendar.next_open(at), zone),
        "next_close": iso(calendar.next_close(at), zone),
        "note": None,
    }


@dataclass
class StatusMemo:
    """``GET /api/ops/status`` is recomputed only when the Runbook cache changed (its version moved) or the
    venue's session did; otherwise the body encoded last time is answered as is."""

    version: int = -1
    session: dict[str, Any] = field(default_factory=dict)
    body: bytes = b""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get(
        self, cache: RunbookCache, zone: datetime.tzinfo, history: int, session: dict[str, Any]
    ) -> bytes:
        if (self.version, self.session) == (cache.version, session):
            return self.body
        async with self.lock:  # one recomputation at a time; the requests queued behind it reuse it
            if (self.version, self.session) != (cache.version, session):
                # CPU work over every cached Runbook: off the event loop.
                self.version, self.body = await asyncio.to_thread(_render, cache, zone, history, session)
                self.session = session
        return self.body


def _render(
    cache: RunbookCache, zone: datetime.tzinfo, history: int, session: dict[str, Any]
) -> tuple[int, bytes]:
    version, records = cache.snapshot()
    body = {**status_response(records, zone, history), "session": session}
    return version, json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
