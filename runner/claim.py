"""The claim of a Job run's start: in a Job's pod, the runner runs the script only once it has claimed the
run's start through the API server.

A Job may get a second pod for the same run: the Job controller makes another when the API server dies
as it answers the first pod's create (the pod was made; the answer was lost), so both would run the
script. The claim is a Lease named after the Job (:func:`runbooks.keys.start_claim_name`), made by the
pod with its own service account token, naming the pod as its holder and owned by the Job (it goes with
the Job). The first pod to make it runs the script; another finds it held and never runs it. The API
server's admission policy (``mdops-start-claims`` in ``manifests/identities.yaml``) lets a pod make only
its own Job's claim, in its own name.

An API server that does not answer is asked again until the pod is stopped (by its Job's deadline, or its
Job's deletion): the script has not run then.
"""

from __future__ import annotations

import http.client
import json
import ssl
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runbooks.keys import JOB_NAME_LABEL, JOB_UID_LABEL, start_claim_name
from runner.execute import Cancellation

CLAIM_ENV = "MDOPS_START_CLAIM"  # the folder of the pod's token and the cluster's CA: set by the Job executor
# The pod's name and namespace, its Job's name and uid: from the Downward API.
FIELD_ENV = {
    "pod": ("MDOPS_POD_NAME", "metadata.name"),
    "namespace": ("MDOPS_POD_NAMESPACE", "metadata.namespace"),
    "job": ("MDOPS_JOB_NAME", f"metadata.labels['{JOB_NAME_LABEL}']"),
    "job_uid": ("MDOPS_JOB_UID", f"metadata.labels['{JOB_UID_LABEL}']"),
}
# How long a refusal (401, 403, 422...) is asked again before the run ends not run: an API server just
# restarted refuses until its authorizer has read the roles. The controller's MDOPS_JOB_START_FAILURE_SECONDS;
# 0: until the pod is stopped.
REFUSED_ENV = "MDOPS_START_CLAIM_REFUSED_SECONDS"
REFUSED_SECONDS = 60.0
CLAIMED_BY = "startClaimedBy"  # the termination message of a pod that did not run: {"startClaimedBy": pod}
RETRY_SECONDS = (0.1, 0.2, 0.5, 1.0, 2.0)  # between tries while the API server does not answer
TIMEOUT_SECONDS = 10.0


class ClaimError(Exception):
    """The claim cannot be made, for a reason that lasts (no permission, a policy): not run."""


class Stopped(Exception):
    """The pod was stopped before the claim was made: not run."""


@dataclass(frozen=True)
class Claim:
    pod: str
    namespace: str
    job: str
    job_uid: str
    credentials: Path  # the pod's token and the cluster's CA
    host: str  # the API server, as the kubelet names it (KUBERNETES_SERVICE_HOST and _PORT)
    port: int
    refused_seconds: float = REFUSED_SECONDS

    @property
    def lease(self) -> dict[str, Any]:
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": self.job, "uid": self.job_uid}
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": start_claim_name(self.job), "ownerReferences": [owner]},
            "spec": {"holderIdentity": self.pod},
        }


def claim_from(environ: Mapping[str, str]) -> Claim | None:
    """The claim a Job pod's runner must make (None where none is asked for: the local executor, a run by
    hand)."""
    folder = environ.get(CLAIM_ENV)
    if not folder:
        return None
    fields = {field: environ.get(name) for field, (name, _) in FIELD_ENV.items()}
    if not all(fields.values()):
        lacking = ", ".join(f"${FIELD_ENV[field][0]}" for field, value in fields.items() if not value)
        raise ClaimError(f"the pod's Downward API variables are missing: {lacking}")
    try:
        refused_seconds = float(environ.get(REFUSED_ENV) or REFUSED_SECONDS)
        port = int(environ.get("KUBERNETES_SERVICE_PORT") or 443)
    except ValueError as exc:
        raise ClaimError(f"${REFUSED_ENV} or $KUBERNETES_SERVICE_PORT is not a number: {exc}") from None
    credentials, host = Path(folder), environ.get("KUBERNETES_SERVICE_HOST", "")
    missing = [str(f) for f in (credentials / "token", credentials / "ca.crt") if not f.is_file()]
    if missing or not host:
        lacking = [*missing, *([] if host else ["$KUBERNETES_SERVICE_HOST"])]
        raise ClaimError(f"no way to the API server to claim the run's start: no {', '.join(lacking)}")
    return Claim(credentials=credentials, host=host, port=port, refused_seconds=refused_seconds, **fields)


def claimed_by(message: str) -> str | None:
    """The pod that holds the run's start, from the termination message of a pod that did not run it."""
    try:
        said = json.loads(message)
    except ValueError:
        return None
    holder = said.get(CLAIMED_BY) if isinstance(said, dict) else None
    return holder if isinstance(holder, str) else None


def claim_start(claim: Claim, cancel: Cancellation) -> str | None:
    """Claim the run's start: None once this pod holds it, else the pod that does.

    Raises :class:`ClaimError` when the API server still refuses it after ``claim.refused_seconds``,
    :class:`Stopped` when the pod is stopped before it is made."""
    api = _Api(claim)
    path = f"/apis/coordination.k8s.io/v1/namespaces/{claim.namespace}/leases"
    tries, said, refused_since = 0, "", None
    while True:
        try:
            status, body = api.call("POST", path, claim.lease)
            if status == 409:  # made already: by this pod (its answer lost), or by another
                status, body = api.call("GET", f"{path}/{start_claim_name(claim.job)}")
                if status == 200:
                    holder = (body.get("spec") or {}).get("holderIdentity") or "another pod"
                    return None if holder == claim.pod else holder
            if status == 201:
                return None
            problem = f"{status}: {_said(body)}"
            # 404: made, then gone with its Job, or a namespace the restarted server has not read yet.
            refused = status < 500 and status not in (404, 429)
        except (OSError, http.client.HTTPException) as exc:
            problem, refused = f"{type(exc).__name__}: {exc}", False
        refused_since = (refused_since or time.monotonic()) if refused else None
        if (
            refused_since
            and claim.refused_seconds
            and time.monotonic() - refused_since >= claim.refused_seconds
        ):
            raise ClaimError(f"the API server refused the run's start claim ({problem})")
        if problem != said:  # the pod's log says what it waits for, once for each new problem
            said = problem
            sys.stderr.write(f"the run's start claim is asked again: {problem}\n")
            sys.stderr.flush()
        if cancel.signal_name is not None:
            raise Stopped(f"stopped ({cancel.signal_name}) before the run's start was claimed: {problem}")
        time.sleep(RETRY_SECONDS[min(tries, len(RETRY_SECONDS) - 1)])
        tries += 1


def _said(body: dict[str, Any]) -> str:
    return str(body.get("message") or body.get("reason") or body)[:300]


class _Api:
    """The API server as a pod reaches it, with the pod's token and the cluster's CA (both read again for
    each call, as the kubelet renews the token)."""

    def __init__(self, claim: Claim):
        self.claim = claim

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        context = ssl.create_default_context(cafile=self.claim.credentials / "ca.crt")
        token = (self.claim.credentials / "token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection = http.client.HTTPSConnection(
            self.claim.host, self.claim.port, timeout=TIMEOUT_SECONDS, context=context
        )
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            text = response.read()
        finally:
            connection.close()
        try:
            answer = json.loads(text)
        except ValueError:
            answer = {"message": text.decode(errors="replace")}
        return response.status, answer if isinstance(answer, dict) else {"message": str(answer)}
