"""Every Kubernetes call the controller makes, in one place.

Calls are blocking (the official client) and run in threads from the async handlers. Creates and
deletes are idempotent where the caller wants them to be: "already exists" and "already gone" are
answers, not errors.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.rest import ApiException

from runbooks import keys, schedule

T = TypeVar("T")


def _threaded(fn: Callable[..., T]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args, **kwargs) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    return wrapper


class Conflict(Exception):
    """An optimistic-concurrency conflict or an object that already exists."""


class KubeApi:
    def __init__(self, api: client.ApiClient):
        self.custom = client.CustomObjectsApi(api)
        self.coordination = client.CoordinationV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)

    # -- Runbooks ---------------------------------------------------------
    @_threaded
    def get_runbook(self, namespace: str, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(
                keys.GROUP, keys.VERSION, namespace, keys.PLURAL, name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    @_threaded
    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict | None:
        """Merge-patch the status subresource; None if the Runbook is gone."""
        try:
            return self.custom.patch_namespaced_custom_object_status(
                keys.GROUP, keys.VERSION, namespace, keys.PLURAL, name, {"status": status}
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    @_threaded
    def create_runbook(self, namespace: str, body: dict) -> bool:
        """Create the Runbook; False if it exists already (its name is its identity: a schedule's slot)."""
        try:
            self.custom.create_namespaced_custom_object(
                keys.GROUP, keys.VERSION, namespace, keys.PLURAL, body
            )
            return True
        except ApiException as error:
            if error.status == 409:
                return False
            raise

    @_threaded
    def delete_runbook(self, namespace: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(
                keys.GROUP, keys.VERSION, namespace, keys.PLURAL, name
            )
        except ApiException as error:
            if error.status != 404:
                raise

    # -- RunbookSchedules ------------------------------------------------
    @_threaded
    def patch_schedule_status(
        self, namespace: str, name: str, resource_version: str, status: dict[str, Any]
    ) -> dict | None:
        """Merge-patch a schedule's status if it is still at ``resource_version``; None if it changed
        meanwhile (409) or is gone (404)."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        try:
            return self.custom.patch_namespaced_custom_object_status(
                keys.GROUP, keys.VERSION, namespace, schedule.PLURAL, name, body
            )
        except ApiException as error:
            if error.status in (404, 409):
                return None
            raise

    # -- Leases (run lock and request ledger) ----------------------------
    @_threaded
    def get_lease(self, namespace: str, name: str) -> client.V1Lease | None:
        try:
            return self.coordination.read_namespaced_lease(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    @_threaded
    def create_lease(self, namespace: str, body: dict) -> client.V1Lease:
        try:
            return self.coordination.create_namespaced_lease(namespace, body)
        except ApiException as error:
            if error.status == 409:
                raise Conflict(body["metadata"]["name"]) from error
            raise

    @_threaded
    def replace_lease(self, namespace: str, lease: client.V1Lease) -> client.V1Lease:
        """Replace at the lease's resourceVersion; Conflict if someone else changed it first."""
        try:
            return self.coordination.replace_namespaced_lease(lease.metadata.name, namespace, lease)
        except ApiException as error:
            if error.status in (404, 409):
                raise Conflict(lease.metadata.name) from error
            raise

    @_threaded
    def list_leases(self, namespace: str, selector: str) -> list[client.V1Lease]:
        return self.coordination.list_namespaced_lease(namespace, label_selector=selector).items

    @_threaded
    def delete_lease(self, namespace: str, name: str) -> None:
        try:
            self.coordination.delete_namespaced_lease(name, namespace)
        except ApiException as error:
            if error.status != 404:
                raise

    # -- Jobs and their pods ---------------------------------------------
    @_threaded
    def create_job(self, namespace: str, body: dict) -> None:
        """Create the Job; one that already exists (an earlier attempt of ours) is fine."""
        try:
            self.batch.create_namespaced_job(namespace, body)
        except ApiException as error:
            if error.status != 409:
                raise

    @_threaded
    def get_job(self, namespace: str, name: str) -> client.V1Job | None:
        try:
            return self.batch.read_namespaced_job(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    @_threaded
    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except ApiException as error:
            if error.status != 404:
                raise

    @_threaded
    def job_pods(self, namespace: str, job: str) -> list[client.V1Pod]:
        return self.core.list_namespaced_pod(namespace, label_selector=f"{keys.JOB_NAME_LABEL}={job}").items
