"""The API's read model: what it needs of a Runbook, extracted once per object version.

The cache's watch thread turns each Runbook (as the Kubernetes API returns it) into a :class:`RunbookRecord`,
so that requests only render (:mod:`api.render`). Nothing here does I/O.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from runbooks import keys
from runbooks.contract import ExitCode, parse_time
from runbooks.models import RunbookStatus

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


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
    lines: list[dict[str, str]]  # the status' last log lines: time, level, message
    conditions: list[dict[str, Any]]
    health: dict[str, Any] | None
    state: dict[str, Any] | None
    window: str | None
    duplicate_of: str | None
    updated: datetime.datetime
    api_made: bool = False  # created by this API (its managed-by label), not by kubectl or GitOps
    requested: datetime.datetime | None = field(repr=False, default=None)
    seen: int = field(repr=False, default=0)
    created_key: tuple = field(repr=False, default=())
    finished_key: tuple = field(repr=False, default=())
    list_key: tuple[int, int, str] = field(repr=False, default=(0, 0, ""))

    @property
    def command(self) -> str:
        return self.spec.get("command", "")

    @property
    def requested_by(self) -> str:
        return self.spec.get("requestedBy") or ""

    @property
    def logs(self) -> list[dict[str, str]]:
        """The log lines as the REST API shows them (level and message: the spec's shape)."""
        return [{"level": line["level"], "message": line["message"]} for line in self.lines]

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
        lines=[{"time": line.time, "level": line.level, "message": line.message} for line in status.logs],
        conditions=[
            {
                "type": c.type,
                "status": c.status,
                "reason": c.reason,
                "message": c.message,
                "last_transition_time": c.last_transition_time,
            }
            for c in status.conditions
        ],
        health=status.health,
        state=status.state.model_dump(by_alias=True) if status.state else None,
        window=status.window,
        duplicate_of=status.duplicate_of,
        updated=updated,
        api_made=(metadata.get("labels") or {}).get(keys.MANAGED_BY) == keys.API_MANAGER,
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
    record.list_key = (micros(record.created), micros(record.requested or record.created), record.name)


def micros(moment: datetime.datetime) -> int:
    """Microseconds since 1970, in 0..10**17-1 (17 digits: past the year 5000)."""
    since = moment - _EPOCH
    return min(max((since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds, 0), 10**17 - 1)
