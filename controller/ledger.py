"""The request ledger: which Runbook owns a request id, and how its run ended.

One Lease per request id (``mdops-req-<hash>``) in the Runbook's namespace. Creating it is the atomic
claim: whoever creates it first owns the request id, and every later Runbook with the same id (a
re-apply under another name, a re-creation after deletion) is a duplicate that shows the recorded
result instead of running. The result is written into the Lease the claim returned (no read first).

The ledger is bounded by one trimmer (:class:`Trimmer`), never by the runs themselves: it never deletes an
entry whose request id a Runbook still names (its owner or a duplicate of it still exists, or an unfinished
Runbook names it), and of the others (their Runbooks were deleted: by hand, or by retention, see
:mod:`controller.retention`) it keeps the newest ``size`` finished ones and deletes the older, each once.
So a Runbook that retention deleted and a GitOps tool re-creates is a duplicate, not a second run, as long
as fewer than ``size`` newer deleted request ids came after it; retention itself bounds the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from controller.kubeapi import Conflict, KubeApi, NamespaceTerminating
from runbooks import keys
from runbooks.contract import is_exit_code

log = logging.getLogger(__name__)

# What the ledger keeps of a run's status: enough for a duplicate to show the result.
KEPT = ("exitCode", "result", "message", "startedAt", "finishedAt", "health")
# What a claim keeps of its Runbook's spec, besides its command and lock group: what the audit line of a run
# whose Runbook went unseen says (controller/audit.py), the Runbook gone.
ASKED = ("requestedBy", "mode", "profile", "dryRun")
# The duplicates a ledger entry remembers (they protect it from the trimmer while they exist).
DUPLICATES_KEPT = 16
TRIM_INTERVAL_SECONDS = 60.0


def lease_name(request_id: str) -> str:
    return "mdops-req-" + hashlib.sha256(request_id.encode()).hexdigest()[:32]


def lease_body(name: str, holder: str, annotations: dict[str, str], version: str = "") -> dict[str, Any]:
    """A ledger Lease as written: all of it is the holder's uid and the annotations (a replace without
    managedFields keeps the server's). Labelled unfinished until its run's end is recorded, so that the
    claims of runs whose Runbook went unseen are found without reading the finished ones
    (:meth:`Ledger.unfinished`), in the writes that make and finish the claim."""
    labels = {keys.LEDGER_LABEL: "true", keys.MANAGED_BY: keys.MANAGER}
    if keys.RESULT not in annotations:
        labels[keys.UNFINISHED_LABEL] = "true"
    metadata: dict[str, Any] = {"name": name, "labels": labels, "annotations": annotations}
    if version:
        metadata["resourceVersion"] = version
    return {"metadata": metadata, "spec": {"holderIdentity": holder}}


@dataclass(frozen=True)
class Entry:
    """A ledger entry: what its Lease says, and the version the next write goes to. Only that is kept of
    the Lease (every waiting run holds its entry: a Lease as read is 6 KB in memory, this under 1 KB)."""

    uid: str
    runbook: str  # namespace/name
    result: dict[str, Any] | None
    arrival: int  # its Runbook's place in the queue, as the controller that first claimed it saw it
    name: str  # the Lease's
    version: str  # its resourceVersion as last read or written
    annotations: dict[str, str]
    lease_uid: str = ""  # the Lease's own uid (none for a claim without a Lease): what a Job run's Job names

    @classmethod
    def from_lease(cls, lease: dict[str, Any]) -> Entry:
        """The entry its Lease holds; :class:`UnreadableClaim` if its result or arrival is not as mdops writes
        them (the Lease edited by hand)."""
        meta = lease["metadata"]
        # Their names shared with every other entry's (each parsed Lease has its own copies).
        annotations = {sys.intern(key): value for key, value in (meta.get("annotations") or {}).items()}
        try:
            result = json.loads(annotations[keys.RESULT]) if annotations.get(keys.RESULT) else None
            if result is not None and not isinstance(result, dict):
                raise ValueError("not a JSON object")
            code = (result or {}).get("exitCode")  # none: cancelled before it started
            if code is not None and not is_exit_code(code):
                raise ValueError(f"its exitCode is not an exit code: {code!r}")
        except ValueError as error:
            raise UnreadableClaim(meta["name"], keys.RESULT, error) from None
        try:
            arrival = int(annotations.get(keys.ARRIVAL) or 0)
        except ValueError as error:
            raise UnreadableClaim(meta["name"], keys.ARRIVAL, error) from None
        return cls(
            (lease.get("spec") or {}).get("holderIdentity") or "",
            annotations.get(keys.RUNBOOK, ""),
            result,
            arrival,
            meta["name"],
            meta.get("resourceVersion", ""),
            annotations,
            meta.get("uid", ""),
        )

    def other_request(self, request: str) -> bool:
        """Whether the entry was claimed with other request fields than ``request`` (a fingerprint); an
        entry claimed before fingerprints were kept is taken as the same request."""
        return self.annotations.get(keys.REQUEST, request) != request

    @property
    def request_id(self) -> str:
        return self.annotations.get(keys.REQUEST_ID, "")

    @property
    def command(self) -> str:
        """Its Runbook's command ("" in a claim made before claims named it)."""
        return self.annotations.get(keys.COMMAND_LABEL, "")

    @property
    def asked(self) -> dict[str, Any]:
        """Who asked for its run, and with what mode, profile and dry run: the spec's :data:`ASKED` fields
        (none in a claim made before claims kept them), for the audit of a run whose Runbook went unseen."""
        try:
            asked = json.loads(self.annotations.get(keys.ASKED) or "{}")
        except ValueError:
            return {}
        return {key: asked[key] for key in ASKED if key in asked} if isinstance(asked, dict) else {}

    @property
    def unstarted(self) -> bool:
        """Whether its run has not started: its Runbook has had no finalizer since the claim, so it may have
        gone unseen (deleted while no controller ran), and its request id may be freed then."""
        return keys.UNSTARTED in self.annotations

    @property
    def recorded(self) -> bool:
        """Whether the entry's Lease exists (was read or written), not only claimed in a dying namespace."""
        return bool(self.version)

    def lease(self, annotations: dict[str, str]) -> dict[str, Any]:
        """The entry's Lease with ``annotations``, at the entry's version."""
        return lease_body(self.name, self.uid, annotations, self.version)


class UnreadableClaim(ValueError):
    """A ledger Lease whose annotation is not as mdops writes it (edited by hand): which run it records, and
    how that ended, cannot be told. Nothing of its request id runs until a person mends the Lease, or
    deletes it to free the request id."""

    def __init__(self, lease: str, annotation: str, error: ValueError):
        super().__init__(
            f"the ledger's Lease {lease} cannot be read, its annotation {annotation} is not as mdops "
            f"writes it ({error}): mend that Lease, or delete it to free its request id"
        )


class ClaimGone(Exception):
    """An entry's Lease is gone, or another Runbook's: it was freed (another controller replica saw its
    Runbook deleted before the run started) and may have been claimed again since."""


def summary(status: dict[str, Any]) -> dict[str, Any]:
    """What the ledger records of a finished status (camelCase, as the Runbook shows it)."""
    return {key: status.get(key) for key in KEPT}


class Ledger:
    def __init__(self, kube: KubeApi):
        self.kube = kube

    async def claim(
        self,
        namespace: str,
        request_id: str,
        uid: str,
        name: str,
        arrival: int,
        request: str,
        group: str,
        spec: dict[str, Any],
    ) -> Entry:
        """Claim ``request_id`` for the Runbook ``uid``, which arrived at ``arrival`` asking ``request`` (the
        fingerprint of its request fields) to run its ``spec``'s command under the lock of ``group`` (the
        claim keeps that command, and :attr:`Entry.asked` of the spec); return the entry of whoever owns it (a
        claim made before a restart keeps its arrival). The claim says that its run has not started
        (:attr:`Entry.unstarted`) from the write that makes it: a run that waits (for its lock, a slot, the
        gate) has no finalizer, and deleted while no controller runs it goes unseen. Its command and group are
        what a controller needs to end a run whose Runbook went unseen
        (:meth:`controller.dispatcher.Dispatcher.take_orphan`), and what was asked is what that end's audit
        line says. In a namespace being deleted, whose Leases went with it and where no Lease can be created,
        the claim is the Runbook's without a Lease (:attr:`Entry.recorded` false): no other Runbook can come
        there any more."""
        annotations = {
            keys.REQUEST_ID: request_id,
            keys.RUNBOOK: f"{namespace}/{name}",
            keys.ARRIVAL: str(arrival),
            keys.REQUEST: request,
            keys.COMMAND_LABEL: spec["command"],
            keys.LOCK_GROUP: group,
            keys.ASKED: json.dumps({key: spec[key] for key in ASKED if key in spec}, separators=(",", ":")),
            keys.UNSTARTED: "true",
        }
        body = lease_body(lease_name(request_id), uid, annotations)
        while True:
            try:
                return Entry.from_lease(await self.kube.create_lease(namespace, body))
            except Conflict:
                lease = await self.kube.get_lease(namespace, body["metadata"]["name"])
                if lease is not None:  # else deleted meanwhile: claim again
                    return Entry.from_lease(lease)
            except NamespaceTerminating:
                return Entry.from_lease(body)

    async def lookup(self, namespace: str, request_id: str) -> Entry | None:
        lease = await self.kube.get_lease(namespace, lease_name(request_id))
        return Entry.from_lease(lease) if lease else None

    async def unfinished(self, namespace: str) -> AsyncIterator[Entry]:
        """The entries whose run's end is not recorded (their label says so), page by page: the runs going
        on or waiting, not the finished ones."""
        params = {"labelSelector": f"{keys.LEDGER_LABEL}=true,{keys.UNFINISHED_LABEL}=true"}
        async for items in self.kube.pages(self.kube.lease_path(namespace), params=params):
            for lease in items:
                try:
                    entry = Entry.from_lease(lease)
                except UnreadableClaim as error:  # the others are still looked at
                    log.warning("a claim is passed over: %s", error)
                    continue
                yield entry

    async def release(self, entry: Entry, namespace: str) -> None:
        """Give up an unfinished claim (its Runbook was deleted before it ran, or the gate ended it). The
        Lease may have changed since the claim (a duplicate noted in it while the gate held the run): read
        again, it goes if it is still the entry's and unfinished, else a re-created request id would be a
        duplicate of a run that never ran. Not if its "not started" mark came off meanwhile: another
        controller replica (peering settling) is starting its run, and the request id stays taken."""
        while entry.result is None:
            if await self.kube.delete_lease(namespace, entry.name, entry.version):
                return
            current = await self.kube.get_lease(namespace, entry.name)
            if current is None or (current.get("spec") or {}).get("holderIdentity") != entry.uid:
                return  # gone, or another's now
            marked, entry = entry.unstarted, Entry.from_lease(current)
            if marked and not entry.unstarted:
                log.warning(
                    "%s: its claim's mark came off since it was read: its request id is kept", entry.runbook
                )
                return

    async def finish(
        self, entry: Entry, namespace: str, status: dict[str, Any], *, unstarted: bool = False
    ) -> Entry:
        """Record the result of the owner's run (``status``: the finished status, camelCase), unless one
        is recorded already: the first stands (a second controller replica that ran the same Runbook as
        kopf's peering settled finds it here). The entry as recorded: its ``result`` is the run's.

        ``unstarted``: the end of a run cancelled before it started, recorded only while the entry's mark
        says that its run has not started, and the mark goes with the same write: a controller that takes
        the mark off to start the run meanwhile keeps it from being recorded (the entry's ``result`` stays
        None), and one that takes it off after finds the result and starts nothing. The request id stays
        used up (a Runbook that meets a marked claim whose Runbook is gone frees it). A claim gone then
        raises :class:`ClaimGone`: it was freed (its Runbook seen deleted), and no run of it started."""
        recorded = summary(status)

        def record(annotations: dict[str, str]) -> dict[str, str]:
            if keys.RESULT in annotations or (unstarted and keys.UNSTARTED not in annotations):
                return annotations
            kept = {
                key: value for key, value in annotations.items() if not unstarted or key != keys.UNSTARTED
            }
            return {
                **kept,
                keys.RESULT: json.dumps(recorded, separators=(",", ":")),
                keys.FINISHED_AT: recorded["finishedAt"] or "",
            }

        try:
            return await self._update(entry, namespace, record)
        except ClaimGone:
            if unstarted:
                raise
        # Freed while the run ran (another replica took its Runbook for one deleted before the start): the
        # request id ran, and stays taken. Claimed again meanwhile, it is that claim's.
        body = lease_body(entry.name, entry.uid, record(entry.annotations))
        try:
            return Entry.from_lease(await self.kube.create_lease(namespace, body))
        except Conflict:
            lease = await self.kube.get_lease(namespace, entry.name)
            return Entry.from_lease(lease) if lease is not None else entry
        except NamespaceTerminating:
            return Entry.from_lease(body)

    async def mark_unstarted(self, entry: Entry, namespace: str, unstarted: bool) -> Entry:
        """Say in the entry whether its run has not started (``unstarted``), or may start from now on. An
        unstarted run has no finalizer: deleted while no controller runs, it goes at once, and a Runbook
        that meets its claim frees it (:meth:`controller.runs.Runs.admit`). No write when the entry says so
        already. The mark taken off a claim that is gone or another's raises :class:`ClaimGone`: the request
        id was freed, and the run must not start (it could run again under that id); put on such a claim,
        it changes nothing."""

        def mark(annotations: dict[str, str]) -> dict[str, str]:
            kept = {key: value for key, value in annotations.items() if key != keys.UNSTARTED}
            return {**kept, keys.UNSTARTED: "true"} if unstarted else kept

        try:
            return await self._update(entry, namespace, mark)
        except ClaimGone:
            if not unstarted:
                raise
            return entry

    async def note_duplicate(self, entry: Entry, namespace: str, uid: str) -> None:
        """Remember a duplicate of the entry: while it exists, the trimmer keeps the entry."""

        def add(annotations: dict[str, str]) -> dict[str, str]:
            known = [u for u in annotations.get(keys.DUPLICATES, "").split(",") if u]
            if uid in known:
                return annotations
            return {**annotations, keys.DUPLICATES: ",".join([*known, uid][-DUPLICATES_KEPT:])}

        with contextlib.suppress(ClaimGone):  # the earlier run's claim freed: nothing to protect
            await self._update(entry, namespace, add)

    async def _update(
        self, entry: Entry, namespace: str, change: Callable[[dict[str, str]], dict[str, str]]
    ) -> Entry:
        """Apply ``change`` to the entry's annotations, at the Lease's version (read again on a conflict);
        :class:`ClaimGone` if the Lease is gone or another's."""
        while True:
            changed = change(entry.annotations)
            if changed == entry.annotations:
                return entry
            try:
                return Entry.from_lease(await self.kube.replace_lease(namespace, entry.lease(changed)))
            except Conflict:
                current = await self.kube.get_lease(namespace, entry.name)
                if current is None or (current.get("spec") or {}).get("holderIdentity") != entry.uid:
                    raise ClaimGone(entry.runbook) from None
                entry = Entry.from_lease(current)


@dataclass(frozen=True)
class Row:
    """A ledger entry as the trimmer sees it."""

    name: str
    version: str
    request_id: str
    finished_at: str  # "" while its run has not finished
    owners: frozenset[str]  # the uids of the owner and the duplicates it knows

    @classmethod
    def from_lease(cls, lease: dict[str, Any]) -> Row:
        meta = lease["metadata"]
        annotations = meta.get("annotations") or {}
        owners = {(lease.get("spec") or {}).get("holderIdentity") or ""}
        owners.update(u for u in annotations.get(keys.DUPLICATES, "").split(",") if u)
        return cls(
            meta["name"],
            meta.get("resourceVersion", ""),
            annotations.get(keys.REQUEST_ID, ""),
            annotations.get(keys.FINISHED_AT, ""),
            frozenset(owners - {""}),
        )


def trimmable(rows: list[Row], size: int, existing: set[str], named: Callable[[str], bool]) -> list[Row]:
    """The entries to delete, oldest first: of the finished entries that no Runbook names, those beyond
    the newest ``size``. An entry is named while its owner or a duplicate still exists (``existing``: the
    uids of the Runbooks, finished or not) or an unfinished Runbook names its request id (``named``); named
    entries are kept and do not count towards ``size``, so retained Runbooks never push out the request
    ids of deleted ones. Unfinished entries are never deleted (their runs may be going on)."""
    forgotten = sorted(
        (
            row
            for row in rows
            if row.finished_at and not (row.owners & existing) and not named(row.request_id)
        ),
        key=lambda row: row.finished_at,
    )
    return forgotten[: max(0, len(forgotten) - size)]


class Trimmer:
    """The one task that keeps the ledger of a namespace bounded (see :func:`trimmable`).

    A pass lists the ledger and, when some entries are beyond the bound, the Runbooks' uids (metadata
    only, page by page); it runs when ``size // 10`` runs finished since the last one, at most every
    ``TRIM_INTERVAL_SECONDS``."""

    def __init__(self, kube: KubeApi, namespace: str, size: int, named: Callable[[str], bool]):
        self.kube = kube
        self.namespace = namespace
        self.size = size
        self.named = named
        self.finished = 0
        self.due = asyncio.Event()

    def note_finished(self) -> None:
        self.finished += 1
        if self.finished >= max(1, self.size // 10):
            self.due.set()

    async def run(self) -> None:
        # A first pass once the start is over: a ledger left beyond its bound by an earlier controller.
        await asyncio.sleep(TRIM_INTERVAL_SECONDS)
        self.due.set()
        while True:
            await self.due.wait()
            self.due.clear()
            self.finished = 0
            began = time.monotonic()
            try:
                deleted = await self.trim()
            except Exception:  # a failed pass is retried with the next one
                log.exception("trimming the ledger of %s failed", self.namespace)
            else:
                if deleted:
                    log.info("ledger of %s: %d finished entries deleted", self.namespace, deleted)
            await asyncio.sleep(max(0.0, TRIM_INTERVAL_SECONDS - (time.monotonic() - began)))

    async def trim(self) -> int:
        rows: list[Row] = []
        params = {"labelSelector": f"{keys.LEDGER_LABEL}=true"}
        async for items in self.kube.pages(self.kube.lease_path(self.namespace), params=params):
            rows.extend(Row.from_lease(lease) for lease in items)
        if not trimmable(rows, self.size, set(), lambda _: False):
            return 0
        existing = await self.kube.runbook_uids(self.namespace)
        doomed = trimmable(rows, self.size, existing, self.named)
        for row in doomed:
            if not self.named(row.request_id):  # asked again: a Runbook may have come meanwhile
                await self.kube.delete_lease(self.namespace, row.name, row.version)
        return len(doomed)
