"""Submitting a runbook request through the API: create the Runbook (idempotently), then wait for its end.

- The object's name is the request id when that is a valid DNS-1123 label, else ``req-`` and the first
  20 hex digits of its SHA-256, so the same request id always names the same object; when another
  request's Runbook has that name (its request id is that name, or kubectl named it so), ours is made
  under a name the API server derives from it (``generateName``).
- A request id already known (to the cache, or to the API server when the create answers 409
  AlreadyExists: a concurrent identical request won) is the same run, not a second one; with other
  parameters it is a conflict, unless the API server no longer has that Runbook: the cache may be moments
  behind a deletion, which frees the request id.
- A new Runbook is made within the token's quota (:mod:`api.quota`), one at a time per token, and the token's
  next request waits until the cache holds it, so that what the cap counts is never behind.
- The wait is on the watch cache (woken by its events), bounded by ``MDOPS_API_EXECUTE_WAIT_SECONDS``; a
  Runbook deleted meanwhile (its run cancelled) ends it with a conflict that says so.
- The answer is always the original run's: when a Runbook with the same request id was created moments
  before (by kubectl, unseen by the cache yet), the controller's ledger makes ours a duplicate of it, and the
  answer follows it there.
- A Runbook of ours that ended without running for a reason that binds nothing is replaced by a new one (its
  Runbook deleted, a new one created): refused by the namespace's cap (its request id unused, so the request
  is asked again, and runs once the cap allows), or refused by the ledger for other parameters than the
  request id's first run (whose Runbook had the same name), when this request's parameters are not those
  refused (they may be the first run's, whose result the new one then shows).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from typing import Any

from kubernetes import client

from api.auth import Principal, reads
from api.cache import RunbookCache
from api.errors import Conflict, KubernetesUnavailable, NotReady, ScriptExecutionError
from api.kube import REQUEST_TIMEOUT, KubeRequests
from api.quota import Quota, TooManyRequests
from api.records import RunbookRecord, record_of
from api.schemas import ExecuteRequest
from api.settings import ApiSettings
from runbooks import keys, models
from runbooks.contract import ExitCode, Reason, now

DNS_LABEL = re.compile(keys.DNS_LABEL)


def object_name(request_id: str) -> str:
    if len(request_id) <= 63 and DNS_LABEL.match(request_id):
        return request_id
    return "req-" + hashlib.sha256(request_id.encode()).hexdigest()[:20]


def runbook_spec(body: ExecuteRequest, settings: ApiSettings, principal: Principal) -> dict[str, Any]:
    """The Runbook's spec (camelCase), every field given: the body's, else the settings' defaults."""

    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    spec = models.RunbookSpec(
        command=body.command,
        mode=pick(body.mode, settings.api_default_mode),
        window=pick(body.window, settings.api_default_window),
        profile=pick(body.profile, settings.api_default_profile),
        config=pick(body.config, settings.api_default_config),
        request_id=body.request_id or str(uuid.uuid4()),
        enforce=pick(body.enforce, settings.api_default_enforce),
        dry_run=pick(body.dry_run, False),
        reason=pick(body.reason, ""),
        timeout_seconds=pick(body.timeout_seconds, settings.api_default_timeout_seconds),
        requested_by=principal.name,
    )
    return spec.to_k8s()


class Submitter:
    """Turns an execute request into its Runbook and waits, bounded, for the run's end."""

    def __init__(self, kube: KubeRequests, cache: RunbookCache, settings: ApiSettings):
        self.kube = kube
        self.objects = kube.objects
        self.cache = cache
        self.settings = settings
        self.quota = Quota(settings.api_execute_rate, settings.api_max_unfinished_per_token, cache)
        self._creating: dict[str, asyncio.Lock] = {}  # by token name: one Runbook made at a time

    async def submit(self, body: ExecuteRequest, principal: Principal) -> RunbookRecord:
        """The run of this request: created now, or the one already made for its request id."""
        if not await self.cache.wait_synced(self.settings.api_sync_wait_seconds):
            raise NotReady("the Runbook cache has not synced with the Kubernetes API yet")
        spec = runbook_spec(body, self.settings, principal)
        request_id = spec["requestId"]
        record = self.cache.find(request_id)
        if record is not None and not self._replaceable(record, spec):
            record = await self._still_there(record, spec, principal)
        if record is None or self._replaceable(record, spec):
            async with self._creating.setdefault(principal.name, asyncio.Lock()):
                record = self.cache.find(request_id)
                if record is not None and self._replaceable(record, spec):
                    await self.kube(self._delete, record)
                    record = None
                record = record or await self._create_within_quota(spec, principal)
        self._check_same_request(record, spec, principal)
        uid = record.uid
        final = await self.cache.wait_for(
            record.name, lambda r: r.uid == uid and r.finished, self.settings.api_execute_wait_seconds
        )
        if final is None and await self.kube(self._gone, record):
            raise Conflict(
                f"request_id {request_id!r}: its Runbook {record.name!r} was deleted before the run finished "
                "(deleting a Runbook cancels its run)"
            )
        record = final if final is not None and final.uid == uid else record
        original = self.cache.find(request_id)
        if original is not None and original.name != record.name:  # ours turned out a duplicate of it
            self._check_same_request(original, spec, principal)
            record = original
        if record.reason == Reason.QUOTA_EXCEEDED:  # the controller's namespace-wide cap: it never ran
            raise TooManyRequests(f"request {request_id!r}: {record.message}")
        if record.execution_error:
            raise ScriptExecutionError(
                f"script execution error (exit code {ExitCode.NOT_EXECUTED}) for request {request_id!r}, "
                f"command {record.command!r}: {record.message or 'the runner could not execute the script'}"
            )
        return record

    async def _create_within_quota(self, spec: dict[str, Any], principal: Principal) -> RunbookRecord:
        """Create the Runbook of ``spec`` (or find the one a concurrent request made) within the quota."""
        self.quota.check(principal)
        request_id = spec["requestId"]
        name = object_name(request_id)
        manifest = models.manifest(
            name, spec, labels={keys.MANAGED_BY: keys.API_MANAGER}, annotations={keys.REQUESTED_AT: now()}
        )
        try:
            obj = await self.kube(self._create, manifest)
        except client.ApiException as error:
            if error.status != 409:
                raise
            obj = await self.kube(self._read, name)
            if obj is None:  # there, and deleted since: rare enough to be asked again
                raise KubernetesUnavailable(
                    f"the Runbook {name!r} was deleted as this one was made: try again"
                ) from None
            if record_of(obj).request_id == request_id:  # a concurrent request created it
                return record_of(obj)
            # The name is another request's: one whose request id is that name, or a Runbook that kubectl
            # named so. Ours is made under a name the API server derives from it.
            obj = await self.kube(self._create, models.named_after(manifest))
        self.quota.spend(principal)
        uid, made = obj["metadata"]["uid"], obj["metadata"]["name"]
        await self.cache.wait_for(made, lambda r: r.uid == uid, self.settings.api_sync_wait_seconds)
        return record_of(obj)

    async def _still_there(
        self, record: RunbookRecord, spec: dict[str, Any], principal: Principal
    ) -> RunbookRecord | None:
        """``record``, or what the cache holds for its request id once it has seen the deletion of
        ``record``: the cache may be moments behind a deletion that freed the request id. Asked of the API
        server first: a record that conflicts with the request of ``spec``, and one whose run has not
        finished (answered from the cache, a request made again just after its Runbook's deletion was told
        that the deleted run was pending, and no run was made)."""
        try:
            self._check_same_request(record, spec, principal)
        except Conflict:
            if not await self.kube(self._gone, record):
                raise
        else:
            if record.finished or not await self.kube(self._gone, record):
                return record
        uid = record.uid
        await self.cache.wait_for(record.name, lambda r: r.uid != uid, self.settings.api_sync_wait_seconds)
        return self.cache.find(record.request_id)

    def _replaceable(self, record: RunbookRecord, spec: dict[str, Any]) -> bool:
        """Whether ``record`` is a Runbook of ours that ended without running for a reason that binds
        nothing for the request of ``spec`` (see the module's docstring)."""
        if not (record.api_made and record.finished):
            return False
        if record.reason == Reason.QUOTA_EXCEEDED:
            return True
        here = f"{self.cache.namespace}/{record.name}"  # its request id's first run had this name too
        refused = models.refused_for_other_parameters(record.message, record.request_id, here)
        return record.duplicate_of == here and refused and bool(models.request_differences(record.spec, spec))

    def _delete(self, record: RunbookRecord) -> None:
        """Delete ``record``'s Runbook, if it is still that one (its uid); gone or replaced is fine."""
        preconditions = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=record.uid))
        try:
            self.objects.delete_namespaced_custom_object(
                keys.GROUP,
                keys.VERSION,
                self.cache.namespace,
                keys.PLURAL,
                record.name,
                body=preconditions,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except client.ApiException as error:
            if error.status not in (404, 409):
                raise

    @staticmethod
    def _check_same_request(record: RunbookRecord, spec: dict[str, Any], principal: Principal) -> None:
        """A conflict unless ``record`` is the run of the request of ``spec``. Of a run the principal may not
        read (another's, without status:read) nothing is told: not which parameters differ, nor its answer."""
        if not reads(principal, record):
            raise Conflict(f"request_id {spec['requestId']!r} is another requester's; use a new request_id")
        changed = models.request_differences(record.spec, spec)
        if changed:
            raise Conflict(
                f"request_id {spec['requestId']!r} was already used with other parameters "
                f"(differs in: {', '.join(changed)}); use a new request_id to run again"
            )

    def _create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return self.objects.create_namespaced_custom_object(
            keys.GROUP,
            keys.VERSION,
            self.cache.namespace,
            keys.PLURAL,
            manifest,
            _request_timeout=REQUEST_TIMEOUT,
        )

    def _gone(self, record: RunbookRecord) -> bool:
        """Whether ``record``'s Runbook is no longer in the API server (deleted, or replaced by another)."""
        found = self._read(record.name)
        return found is None or found["metadata"]["uid"] != record.uid

    def _read(self, name: str) -> dict[str, Any] | None:
        """The Runbook ``name`` (None: there is none)."""
        try:
            return self.objects.get_namespaced_custom_object(
                keys.GROUP,
                keys.VERSION,
                self.cache.namespace,
                keys.PLURAL,
                name,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise KubernetesUnavailable(
                f"cannot read Runbook {name!r}: {error.status} {error.reason}"
            ) from error
