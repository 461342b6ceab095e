"""kopf handlers: thin, each delegating to plain functions in :mod:`controller.runs`."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from controller import metrics, runs
from controller.executors.job import JobExecutor
from controller.executors.local import LocalExecutor
from controller.kubeapi import KubeApi
from controller.ledger import Ledger
from controller.lock import TargetLock
from controller.settings import get_settings
from runbooks import keys, kube
from runbooks.models import RunbookStatus

RUNBOOKS = (keys.GROUP, keys.VERSION, keys.PLURAL)


@kopf.on.login()
def login(logger: logging.Logger, **_: Any) -> kopf.ConnectionInfo | None:
    settings = get_settings()
    if settings.in_cluster:
        return kopf.login_with_service_account(logger=logger, settings=None)
    cfg = kube.configuration(settings.kubeconfig)
    keys = cfg.api_key or {}  # the client keeps a kubeconfig's token under "BearerToken"
    token = (keys.get("BearerToken") or keys.get("authorization") or "").removeprefix(
        "Bearer "
    ).strip() or None
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        scheme="Bearer" if token else None,
        token=token,
        default_namespace=settings.namespace,
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = get_settings()
    settings.persistence.finalizer = keys.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=keys.KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=keys.KOPF_PREFIX)
    settings.posting.level = logging.WARNING  # transitions are posted as Events explicitly
    settings.peering.lifetime = config.peering_lifetime
    settings.peering.mandatory = bool(config.peering)
    settings.watching.server_timeout = 300
    # No cluster-wide discovery: the controller's role is namespaced; the CRD is installed before it.
    settings.scanning.disabled = True
    settings.execution.max_workers = max(20, config.max_parallel * 4)

    api = KubeApi(kube.api_client(config.kubeconfig, config.in_cluster))
    executor = JobExecutor(config, api) if config.executor == "job" else LocalExecutor(config)

    async def holder_active(namespace: str, name: str, uid: str) -> bool:
        body = await api.get_runbook(namespace, name)
        return bool(body) and body["metadata"]["uid"] == uid and not _status(body).finished

    memo.services = runs.Services(
        settings=config,
        kube=api,
        ledger=Ledger(api, config.ledger_size),
        lock=TargetLock(api, holder_active),
        executor=executor,
        event=lambda body, kind, reason, message: kopf.event(body, type=kind, reason=reason, message=message),
        wakeups={},
    )
    metrics.serve(config.metrics_host, config.metrics_port)


@kopf.index(*RUNBOOKS)
def waiting(body: kopf.Body, namespace: str, **_: Any) -> dict[str, runs.QueueEntry]:
    """Runbooks that need their target's lock and have not finished, by target: the FIFO queues.

    An empty dict (not None, which kopf ignores) removes a Runbook that left its queue."""
    spec, current = body.get("spec") or {}, _status(body)
    if "command" not in spec or not runs.needs_lock(spec):
        return {}
    if current.finished or current.duplicate_of:  # duplicates never take the lock
        return {}
    group = runs.lock_group(get_settings(), spec.get("profile", "primary"))
    return {runs.queue_key(namespace, group): runs.queue_entry(body)}


def _status(body: kopf.Body | dict[str, Any]) -> RunbookStatus:
    return RunbookStatus.read(body.get("status") or {})


def _unfinished(body: kopf.Body, **_: Any) -> bool:
    return not _status(body).finished


@kopf.daemon(
    *RUNBOOKS, when=_unfinished, errors=kopf.ErrorsMode.TEMPORARY, backoff=2, cancellation_timeout=None
)
async def run(
    body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, waiting: kopf.Index, **_: Any
) -> None:
    """Run the Runbook once, or adopt its run after a restart; stop it if the Runbook is deleted."""
    services: runs.Services = memo.services
    stop = asyncio.Event()
    watcher = asyncio.ensure_future(_relay(stopped, stop))
    runbook = runs.RunbookRun(services, body)
    key = runs.queue_key(runbook.namespace, runbook.group)

    def deleted() -> bool:
        return bool(stopped.reason and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED)

    try:
        await runbook.reconcile(lambda: list(waiting.get(key, [])), stop, deleted)
    except runs.Stopped:
        return
    finally:
        watcher.cancel()


async def _relay(stopped: kopf.DaemonStopped, event: asyncio.Event) -> None:
    await stopped.wait()
    event.set()
