"""Pure functions from Runbook objects (as the Kubernetes API returns them) to what the REST API shows.

A :class:`RunbookRecord` is extracted once per object version (by the cache's watch thread), so that
requests only render. Nothing here does I/O.
"""

from __future__ import annotations

import datetime
import heapq
from dataclasses import dataclass, field
from typing import Any

from runbooks import keys
from runbooks.contract import Command, ExitCode, parse_time
from runbooks.models import RunbookStatus

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def iso(moment: datetime.datetime | None, zone: datetime.tzinfo) -> str | None:
    """ISO 8601 in the configured zone, with its offset (``2025-09-22T08:02:00+08:00``)."""
    return None if moment is None else moment.astimezone(zone).isoformat(timespec="seconds")


def zoned(value: Any, zone: datetime.tzinfo) -> Any:
    """A timestamp string moved to ``zone``; anything that is not a timestamp is returned unchanged."""
    parsed = parse_time(value)
    return value if parsed is None else iso(parsed, zone)


def request_id_of(obj: dict[str, Any]) -> str:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    return spec.get("requestId") or status.get("requestId") or obj["metadata"]["name"]


@dataclass(slots=True)
class RunbookRecord:
    """What the API needs of one Runbook, extracted once per version of the object."""

    name: str
    uid: str
    resource_version: str
    request_id: str
    spec: dict[str, Any]
    created: datetime.datetime
    status: str  # a RunState: pending | queued | running | success | failed
    reason: str | None
    finished: bool
    exit_code: int | None
    message: str | None
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    logs: list[dict[str, str]]
    health: dict[str, Any] | None
    state: dict[str, Any] | None
    window: str | None
    duplicate_of: str | None
    updated: datetime.datetime
    requested: datetime.datetime | None = field(repr=False, default=None)
    seen: int = field(repr=False, default=0)
    created_key: tuple = field(repr=False, default=())
    finished_key: tuple = field(repr=False, default=())

    @property
    def command(self) -> str:
        return self.spec.get("command", "")

    @property
    def dry_run(self) -> bool:
        return bool(self.spec.get("dryRun", False))

    @property
    def execution_error(self) -> bool:
        return self.finished and self.exit_code == ExitCode.NOT_EXECUTED


def record_of(obj: dict[str, Any]) -> RunbookRecord:
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = RunbookStatus.read(obj.get("status"))
    succeeded = status.succeeded
    finished = status.finished
    created = parse_time(metadata.get("creationTimestamp")) or _EPOCH
    started_at = parse_time(status.started_at)
    finished_at = parse_time(status.finished_at) if finished else None
    transitions = [parse_time(c.last_transition_time) for c in status.conditions]
    updated = max(t for t in (created, started_at, finished_at, *transitions) if t is not None)
    name = metadata.get("name", "")
    record = RunbookRecord(
        name=name,
        uid=metadata.get("uid", ""),
        resource_version=metadata.get("resourceVersion", ""),
        request_id=request_id_of(obj),
        spec=spec,
        created=created,
        status=status.run_state.value,
        reason=succeeded.reason if succeeded else None,
        finished=finished,
        exit_code=status.exit_code,
        message=status.message or (succeeded.message if succeeded else None) or None,
        started_at=started_at,
        finished_at=finished_at,
        logs=[{"level": line.level, "message": line.message} for line in status.logs],
        health=status.health,
        state=status.state.model_dump(by_alias=True) if status.state else None,
        window=status.window,
        duplicate_of=status.duplicate_of,
        updated=updated,
    )
    record.requested = parse_time((metadata.get("annotations") or {}).get(keys.REQUESTED_AT)) or created
    order(record, 0)
    return record


def order(record: RunbookRecord, seen: int) -> None:
    """Set the record's sort keys. ``creationTimestamp`` has a resolution of one second: within a second,
    the API's own annotation (microseconds), then ``seen``, the order in which the cache first saw the
    objects (a watch delivers creations in the order the API server made them), break ties."""
    record.seen = seen
    record.created_key = (record.created, record.requested, seen, record.name)
    record.finished_key = (record.finished_at or record.created, record.created_key)


# -- rendering -------------------------------------------------------------------------------------


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


def audit_entry(record: RunbookRecord, zone: datetime.tzinfo) -> dict[str, Any]:
    spec = record.spec
    what = f"{record.command} profile={spec.get('profile', '')} mode={spec.get('mode', '')}"
    what += f" window={record.window or spec.get('window', '')}"
    if record.dry_run:
        what += " dry_run"
    outcome = f"{record.status} (exit code {record.exit_code})" if record.finished else record.status
    return {
        "request_id": record.request_id,
        "who": spec.get("requestedBy") or "unknown",
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
    """
    last_state: RunbookRecord | None = None
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
        if record.health is not None and (last_health is None or key > last_health.finished_key):
            last_health = record
        if record.exit_code is not None:
            best = last_by_command.get(record.command)
            if best is None or key > best.finished_key:
                last_by_command[record.command] = record
    recent = heapq.nlargest(history, records, key=lambda r: r.created_key)
    state = last_state.state if last_state is not None else {}
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
        "audit": [audit_entry(r, zone) for r in recent],
    }
