"""Every Kubernetes call the controller makes, in one place: an asyncio client (aiohttp) that speaks JSON.

Not the official client: its calls block (a thread each, and every thread its own malloc arena) and it
turns every answer into model objects, which cost more CPU than the call itself at a burst's rate. The
controller needs a few verbs on a few resources, as plain dicts. The connection (server, CA, client
certificate or token) is kopf's, from :func:`controller.login.login` (a kubeconfig's API server must be on
loopback; in a pod, the service account's); a refused token is read again once (the kubelet rotates a
service account's).

"Already exists", "already gone" and "changed meanwhile" are answers here, not errors: :class:`Conflict`
(409, or a uid precondition that failed) and ``None`` for a 404 where the caller asked for it (also for
the 403 of a write that would create an object in a namespace being deleted: it is gone, or as good as;
elsewhere that 403 is :class:`NamespaceTerminating`);
:class:`Final` for a status write that the API server refused because the Runbook has finished. Other
failures raise :class:`ApiError` after a few retries of what may pass (connection errors, 429, 5xx).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import kopf

from controller.settings import ControllerSettings
from runbooks import approval, keys, policy, schedule

log = logging.getLogger(__name__)

RUNBOOKS = f"/apis/{keys.GROUP}/{keys.VERSION}"
LEASES = "/apis/coordination.k8s.io/v1"
JOBS = "/apis/batch/v1"
CORE = "/api/v1"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"  # built-in kinds: adds to a list, or takes from it
JSON_PATCH = "application/json-patch+json"
# A list of objects' metadata only (their names, uids, labels, annotations), not their specs and statuses.
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
RETRIES = (0.2, 0.5, 1.0, 2.0)
TIMEOUT_SECONDS = 30
PAGE = 500
# A watch's length before the API server ends it (it is opened again at once, from the bookmark the server
# sends just before): MDOPS_WATCH_SECONDS, 60 by default. A connection silent for half as long again (90 s)
# is dead (a network partition that sends no reset): it is given up and the watch opened again on a new
# one. Longer watches would leave a run's end unseen for that long; the server's periodic bookmarks start
# only two minutes into a watch. Tests shorten it to see a stalled watch given up in seconds.
WATCH_SECONDS = ControllerSettings.model_fields["watch_seconds"].default
SILENT_RATIO = 1.5
WATCH_RETRY = 1.0


class ApiError(Exception):
    def __init__(self, status: int, method: str, path: str, detail: str):
        super().__init__(f"{method} {path}: {status} {detail}")
        self.status = status
        self.detail = detail

    @property
    def refused_by_admission(self) -> bool:
        """Refused by a quota or an admission control (403), or by an admission policy or webhook that
        denies as Invalid (422): a refusal that may lift, unlike an object the API server finds invalid."""
        denied = "denied request" in self.detail or "denied the request" in self.detail
        return self.status == 403 or (self.status == 422 and denied)


class Conflict(ApiError):
    """409: the object exists already, or changed (or was replaced) since we read it."""


class NamespaceTerminating(ApiError):
    """403: nothing can be created in a namespace being deleted."""


class Disowned(Exception):
    """The Job is not its Runbook's any more: the garbage collector took the Runbook, gone, off its owners (it
    is kept by its other owner, its request id's claim), or a person edited its owners."""


class Final(Exception):
    """The Runbook's status is final (the CRD's rule): it finished, another controller replica having run it
    as kopf's peering settled. Its recorded result stands; nothing more is written to its status."""


class Started(Exception):
    """The Runbook's status names a run that its writer did not see start: another controller replica started
    it meanwhile (the writer was frozen, or is being paused). ``body``: the Runbook as it is now."""

    def __init__(self, body: dict[str, Any]):
        super().__init__(body["metadata"]["name"])
        self.body = body


class KubeApi:
    def __init__(
        self,
        login: Callable[[], kopf.ConnectionInfo],
        connections: int = 16,
        watch_seconds: int = WATCH_SECONDS,
    ):
        self.login = login
        self.watch_seconds = watch_seconds
        self.info = login()
        self.base = self.info.server.rstrip("/")
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        return self.info.as_ssl_context() if self.base.startswith("https") else False

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # in the running loop, at first use
            connector = aiohttp.TCPConnector(limit=self.connections, ssl=self._ssl())
            timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _headers(self, content_type: str | None, accept: str) -> dict[str, str]:
        headers = {"Accept": accept, **self.info.as_http_headers()}
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        content_type: str | None = None,
        accept: str = "application/json",
        missing_ok: bool = False,
    ) -> Any:
        """One call; the decoded answer, or None for a 404 when ``missing_ok``."""
        data = None if body is None else json.dumps(body, separators=(",", ":"))
        if data is not None and content_type is None:
            content_type = "application/json"
        for attempt, pause in enumerate((*RETRIES, None)):
            try:
                async with self.session.request(
                    method,
                    self.base + path,
                    data=data,
                    params=params,
                    headers=self._headers(content_type, accept),
                ) as response:
                    text = await response.text()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as error:
                status, text = 0, f"{type(error).__name__}: {error}"
            if status < 300:
                try:
                    return json.loads(text) if text else None
                except ValueError:  # cut short (an API server killed as it answered): as a lost connection
                    status, text = 0, f"a {status} answer that is not JSON: {text[:100]!r}"
            terminating = status == 403 and _namespace_terminating(text)
            if missing_ok and (status == 404 or terminating):
                return None
            if terminating:
                raise NamespaceTerminating(status, method, path, _reason(text))
            if status == 409:
                raise Conflict(status, method, path, _reason(text))
            if status == 401 and self._token_rotated():
                continue
            retriable = status in (0, 429) or status >= 500
            if not retriable or pause is None:
                raise ApiError(status, method, path, _reason(text))
            log.debug("%s %s: %s, retrying (%d)", method, path, status, attempt + 1)
            await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    def _token_rotated(self) -> bool:
        """Whether logging in again gives another token (and use it): a refused one may have expired."""
        fresh = self.login()
        if not fresh.token or fresh.token == self.info.token:
            return False
        self.info = fresh
        return True

    async def pages(
        self, path: str, *, params: dict[str, str] | None = None, accept: str = "application/json"
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """A list, page by page (so that a long one is never held whole)."""
        token = ""
        while True:
            query = {**(params or {}), "limit": str(PAGE), **({"continue": token} if token else {})}
            page = await self.request("GET", path, params=query, accept=accept)
            yield page.get("items") or []
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return

    async def watch(
        self,
        path: str,
        selector: str,
        on_event: Callable[[str, dict[str, Any]], None],
        on_start: Callable[[], None],
    ) -> None:
        """Follow the changes of a collection from now on, for ever: ``on_event(type, object)`` for each
        ADDED, MODIFIED and DELETED, never for the objects there already (a watch from the current
        resourceVersion sends none; whoever needs an object's present state reads it). ``on_start()`` once
        the watch has its starting version: at first, and again whenever it must start from the present
        (the API server no longer has the version it got to: 410), when changes may have been missed. A
        broken stream is opened again from the last version seen, bookmarks included."""
        version = ""
        while True:
            try:
                if not version:
                    listed = await self.request("GET", path, params={"labelSelector": selector, "limit": "1"})
                    version = listed["metadata"]["resourceVersion"]
                    on_start()
                version = await self._watch_from(path, selector, version, on_event)
            except (aiohttp.ClientError, TimeoutError, ValueError, ApiError) as error:
                log.warning("the watch of %s broke (%s); watching again in %g s", path, error, WATCH_RETRY)
                await asyncio.sleep(WATCH_RETRY)
            except Exception:  # a handler's bug: said, and the watch goes on
                log.exception("an event of the watch of %s could not be handled", path)
                await asyncio.sleep(WATCH_RETRY)

    async def _watch_from(
        self, path: str, selector: str, version: str, on_event: Callable[[str, dict[str, Any]], None]
    ) -> str:
        """One watch connection from ``version``; the version to go on from ("": from the present)."""
        params = {
            "watch": "true",
            "labelSelector": selector,
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self.watch_seconds),
        }
        silent = self.watch_seconds * SILENT_RATIO
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=TIMEOUT_SECONDS, sock_read=silent)
        headers = self._headers(None, "application/json")
        async with self.session.get(
            self.base + path, params=params, headers=headers, timeout=timeout
        ) as response:
            if response.status == 410:
                return ""
            if response.status == 401 and self._token_rotated():
                return version
            if response.status != 200:
                raise ApiError(response.status, "WATCH", path, _reason(await response.text()))
            pending = b""
            async for chunk in response.content.iter_any():
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind, body = event["type"], event["object"]
                    if kind == "ERROR":  # 410 Gone: the version is too old; others: start again from it
                        return "" if body.get("code") == 410 else version
                    version = body["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        on_event(kind, body)
        return version

    # -- Runbooks ----------------------------------------------------------
    def runbook_path(self, namespace: str, name: str = "") -> str:
        path = f"{RUNBOOKS}/namespaces/{namespace}/{keys.PLURAL}"
        return f"{path}/{name}" if name else path

    async def get_runbook(self, namespace: str, name: str) -> dict | None:
        return await self.request("GET", self.runbook_path(namespace, name), missing_ok=True)

    async def put_status(
        self, namespace: str, name: str, uid: str, status: dict[str, Any], unstarted: bool | None = None
    ) -> bool:
        """Write the whole status of the Runbook ``uid``; False if it is gone (or replaced by another of
        the same name); :class:`Final` if it has finished meanwhile. ``unstarted`` (not None): the writer saw
        no run of it start, and had seen a status (True) or none (False): written only while the status
        names no run, else :class:`Started` (a JSON patch's test of an absent member, which the API server
        passes while its parent exists)."""
        add = {"op": "add", "path": "/status", "value": status}
        if unstarted is None:
            return await self._patch_runbook(namespace, name, uid, "/status", [add])
        test = {"op": "test", "path": "/status/execution" if unstarted else "/status", "value": None}
        try:
            return await self._patch_runbook(namespace, name, uid, "/status", [test, add])
        except Started:
            raise
        except ApiError as error:
            if error.status != 422 or unstarted:
                raise
        # Seen with none, it has a status now that names no run (this controller's own write, not seen yet).
        return await self.put_status(namespace, name, uid, status, unstarted=True)

    async def set_finalizers(self, namespace: str, name: str, uid: str, finalizers: list[str]) -> bool:
        """Set the Runbook's finalizers; False if it is gone (or replaced by another of the same name)."""
        change = [{"op": "add", "path": "/metadata/finalizers", "value": finalizers}]
        return await self._patch_runbook(namespace, name, uid, "", change)

    async def _patch_runbook(
        self, namespace: str, name: str, uid: str, subresource: str, change: list[dict[str, Any]]
    ) -> bool:
        """A JSON patch that first tests the uid: a Runbook deleted and created again under the same name
        is another one, and keeps what is written for it only."""
        path = self.runbook_path(namespace, name) + subresource
        patch = [{"op": "test", "path": "/metadata/uid", "value": uid}, *change]
        try:
            return (
                await self.request("PATCH", path, patch, content_type=JSON_PATCH, missing_ok=True) is not None
            )
        except ApiError as error:
            if error.status != 422:
                raise
            current = await self.get_runbook(namespace, name)
            if current is None or current["metadata"]["uid"] != uid:
                return False
            status = current.get("status") or {}
            if subresource == "/status" and status.get("result"):
                raise Final(error) from error
            if subresource == "/status" and status.get("execution") and change[0]["op"] == "test":
                raise Started(current) from error  # the test of put_status(unstarted=...)
            raise  # the change itself is invalid

    async def delete_runbook(self, namespace: str, name: str, uid: str, resource_version: str) -> bool:
        """Delete the Runbook ``uid`` as it was at ``resource_version``; False if it is gone or changed
        (or was replaced by another of the same name) meanwhile."""
        body = {"preconditions": {"uid": uid, "resourceVersion": resource_version}}
        try:
            path = self.runbook_path(namespace, name)
            return await self.request("DELETE", path, body, missing_ok=True) is not None
        except Conflict:
            return False

    async def runbook_uids(self, namespace: str) -> set[str]:
        """The uids of every Runbook in the namespace, finished or not, from their metadata only."""
        uids: set[str] = set()
        async for items in self.pages(self.runbook_path(namespace), accept=METADATA_LIST):
            uids.update(item["metadata"]["uid"] for item in items)
        return uids

    async def create_runbook(self, namespace: str, body: dict) -> dict | None:
        """Create the Runbook: the object made, or None if one of its name exists already."""
        try:
            return await self.request("POST", self.runbook_path(namespace), body)
        except Conflict:
            return None

    async def labelled_runbooks(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The Runbooks with these labels, finished or not, from the API server's watch cache
        (resourceVersion 0): a schedule's few, which the controller's own watch (unfinished only) cannot
        show."""
        params = {"labelSelector": selector, "resourceVersion": "0"}
        listed = await self.request("GET", self.runbook_path(namespace), params=params)
        return listed.get("items") or []

    # -- RunbookPolicies and RunbookApprovals -------------------------------
    async def policies(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's RunbookPolicies, read when a run comes to the gate (a consistent read: a policy
        applied a moment before a Runbook applies to it). Without their CRD (an install of the Runbook CRD
        alone) there are none."""
        path = f"{RUNBOOKS}/namespaces/{namespace}/{policy.PLURAL}"
        listed = await self.request("GET", path, missing_ok=True)
        return (listed or {}).get("items") or []

    async def approvals(self, namespace: str, request_id: str) -> list[dict[str, Any]]:
        """The RunbookApprovals of one request id (a selectable field of their CRD)."""
        params = {"fieldSelector": f"spec.requestId={request_id}"}
        path = f"{RUNBOOKS}/namespaces/{namespace}/{approval.PLURAL}"
        listed = await self.request("GET", path, params=params)
        return listed.get("items") or []

    # -- RunbookSchedules --------------------------------------------------
    async def patch_schedule_status(
        self, namespace: str, name: str, resource_version: str, status: dict[str, Any]
    ) -> dict | None:
        """Merge-patch a schedule's status if it is still at ``resource_version``; None if it changed
        meanwhile (409) or is gone (404)."""
        path = f"{RUNBOOKS}/namespaces/{namespace}/{schedule.PLURAL}/{name}/status"
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        try:
            return await self.request("PATCH", path, body, content_type=MERGE, missing_ok=True)
        except Conflict:
            return None

    # -- Leases (run lock and request ledger) ------------------------------
    def lease_path(self, namespace: str, name: str = "") -> str:
        path = f"{LEASES}/namespaces/{namespace}/leases"
        return f"{path}/{name}" if name else path

    async def get_lease(self, namespace: str, name: str) -> dict | None:
        return await self.request("GET", self.lease_path(namespace, name), missing_ok=True)

    async def create_lease(self, namespace: str, body: dict) -> dict:
        return await self.request("POST", self.lease_path(namespace), body)

    async def replace_lease(self, namespace: str, lease: dict) -> dict:
        """Write the lease's labels, annotations and spec whole, at its resourceVersion; Conflict if it
        changed or went meanwhile. A JSON patch, not a PUT: the API server creates a Lease that a PUT
        names and that is gone, whatever resourceVersion it gives (a freed ledger claim came back)."""
        meta = lease["metadata"]
        path = self.lease_path(namespace, meta["name"])
        # The version the patch writes is the one the update must find (else 409), as for a PUT.
        version = meta.get("resourceVersion")
        patch = [
            *([{"op": "replace", "path": "/metadata/resourceVersion", "value": version}] if version else []),
            {"op": "add", "path": "/metadata/labels", "value": meta.get("labels") or {}},
            {"op": "add", "path": "/metadata/annotations", "value": meta.get("annotations") or {}},
            {"op": "add", "path": "/spec", "value": lease.get("spec") or {}},
        ]
        kind = "application/json-patch+json"
        replaced = await self.request("PATCH", path, patch, content_type=kind, missing_ok=True)
        if replaced is None:
            raise Conflict(404, "PATCH", path, "gone")
        return replaced

    async def delete_lease(self, namespace: str, name: str, resource_version: str | None = None) -> bool:
        """Delete the lease (at ``resource_version`` if given); gone meanwhile is fine. False if it changed
        meanwhile (then it is kept)."""
        body = {"preconditions": {"resourceVersion": resource_version}} if resource_version else None
        try:
            await self.request("DELETE", self.lease_path(namespace, name), body, missing_ok=True)
        except Conflict:
            return False
        return True

    # -- Jobs and their pods -----------------------------------------------
    async def create_job(self, namespace: str, body: dict) -> None:
        """Create the Job; one that already exists (an earlier attempt of ours) is fine."""
        with contextlib.suppress(Conflict):
            await self.request("POST", f"{JOBS}/namespaces/{namespace}/jobs", body)

    async def get_job(self, namespace: str, name: str) -> dict | None:
        return await self.request("GET", f"{JOBS}/namespaces/{namespace}/jobs/{name}", missing_ok=True)

    async def patch_job(self, namespace: str, name: str, patch: dict) -> dict | None:
        """The Job as patched; None if there is none."""
        path = f"{JOBS}/namespaces/{namespace}/jobs/{name}"
        return await self.request("PATCH", path, patch, content_type=MERGE, missing_ok=True)

    async def let_job_run(self, namespace: str, name: str, runbook_uid: str) -> dict | None:
        """Let the suspended Job run while its first owner is still the Runbook ``runbook_uid``, in one patch
        that tests it: the Job as patched; None if there is none; :class:`Disowned` if it has another first
        owner, or none."""
        path = f"{JOBS}/namespaces/{namespace}/jobs/{name}"
        patch = [
            {"op": "test", "path": "/metadata/ownerReferences/0/uid", "value": runbook_uid},
            {"op": "add", "path": "/spec/suspend", "value": False},
        ]
        try:
            return await self.request("PATCH", path, patch, content_type=JSON_PATCH, missing_ok=True)
        except ApiError as error:
            if error.status != 422 or error.refused_by_admission:
                raise
            raise Disowned(path) from error

    async def delete_job(self, namespace: str, name: str, resource_version: str | None = None) -> bool:
        """Delete the Job (as it was at ``resource_version``, if given); it is gone (its DELETED event) only
        once its pods are (foreground). False if it was gone, or changed meanwhile (then it is kept)."""
        body: dict[str, Any] = {"propagationPolicy": "Foreground"}
        if resource_version:
            body["preconditions"] = {"resourceVersion": resource_version}
        path = f"{JOBS}/namespaces/{namespace}/jobs/{name}"
        try:
            return await self.request("DELETE", path, body, missing_ok=True) is not None
        except Conflict:
            return False

    async def job_pods(self, namespace: str, job: str) -> list[dict]:
        params = {"labelSelector": f"{keys.JOB_NAME_LABEL}={job}"}
        listed = await self.request("GET", f"{CORE}/namespaces/{namespace}/pods", params=params)
        return listed.get("items") or []

    async def keep_pod(self, namespace: str, name: str) -> None:
        """Put the result finalizer on a pod: deleted, it stays, its end readable, until :meth:`let_pod_go`.
        A pod gone, or being deleted already (no finalizer can be added then), is left as it is; so is one
        the Role may not patch (an older Role than the controller): the run is stopped all the same, and
        its end, if it ended as it was stopped, may be lost with the pod, as before the finalizer."""
        patch = {"metadata": {"finalizers": [keys.RESULT_FINALIZER], "labels": {keys.KEPT_LABEL: "true"}}}
        try:
            await self._patch_pod(namespace, name, patch)
        except ApiError as error:
            if error.status == 403:
                log.warning(
                    "pod %s/%s is not kept for its end (the Role needs patch on pods): %s",
                    namespace,
                    name,
                    error,
                )
            elif error.status != 422:
                raise

    async def kept_pods(self, namespace: str) -> list[dict]:
        """The pods that :meth:`keep_pod` kept (its label): those let go since too, until they are gone. From
        the API server's cache: one missed is seen at the next look."""
        params = {"labelSelector": f"{keys.KEPT_LABEL}=true", "resourceVersion": "0"}
        listed = await self.request("GET", f"{CORE}/namespaces/{namespace}/pods", params=params)
        return listed.get("items") or []

    async def let_pod_go(self, namespace: str, name: str) -> None:
        """Take the result finalizer off a pod (:meth:`keep_pod`)."""
        await self._patch_pod(
            namespace, name, {"metadata": {"$deleteFromPrimitiveList/finalizers": [keys.RESULT_FINALIZER]}}
        )

    async def _patch_pod(self, namespace: str, name: str, patch: dict) -> None:
        path = f"{CORE}/namespaces/{namespace}/pods/{name}"
        await self.request("PATCH", path, patch, content_type=STRATEGIC, missing_ok=True)

    async def pod_create_failures(self, namespace: str) -> list[dict]:
        """The Job controller's Events of pods it could not create (refused by admission, a quota)."""
        params = {"fieldSelector": "involvedObject.kind=Job,reason=FailedCreate"}
        listed = await self.request("GET", f"{CORE}/namespaces/{namespace}/events", params=params)
        return listed.get("items") or []

    # -- Events ------------------------------------------------------------
    async def post_event(self, namespace: str, event: dict) -> dict:
        return await self.request("POST", f"{CORE}/namespaces/{namespace}/events", event)

    async def patch_event(self, namespace: str, name: str, change: dict) -> dict | None:
        """Merge ``change`` into the Event; None if it is gone (Events expire)."""
        path = f"{CORE}/namespaces/{namespace}/events/{name}"
        return await self.request("PATCH", path, change, content_type=MERGE, missing_ok=True)


def _namespace_terminating(text: str) -> bool:
    """Whether a 403 is the API server refusing to create anything in a namespace being deleted (a PUT
    to an object that the namespace's deletion removed is such a creation)."""
    try:
        causes = (json.loads(text).get("details") or {}).get("causes") or []
    except (ValueError, AttributeError):
        return False
    return any(cause.get("reason") == "NamespaceTerminating" for cause in causes)


def _reason(text: str) -> str:
    try:
        return json.loads(text).get("message") or text[:200]
    except (ValueError, AttributeError):
        return text[:200]
