"""The names mdops gives things in Kubernetes: its API group and resource, finalizer, labels and annotations.

Every key is spelled here once; the controller, the API, the tests and the manifests' generators use these.
"""

from __future__ import annotations

GROUP = "ops.mdops.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Runbook"
PLURAL = "runbooks"
SINGULAR = "runbook"
SHORT_NAMES = ["rb"]

# On a Runbook while its run may go on: deleting the Runbook then stops the run first.
FINALIZER = f"{GROUP}/runbook"
# On the pods of a run being stopped (its Job deleted): a pod's end stays readable until the run's result is
# recorded (a controller that stopped it may die before it reads that end).
RESULT_FINALIZER = f"{GROUP}/result"

# -- Kubernetes' name forms ---------------------------------------------------------------------------------
# A DNS-1123 label (a namespace's name, a policy rule's, an object name that must also be a label value) and a
# DNS-1123 subdomain (most objects' names, an annotation key's prefix); the forms unanchored, to be composed.
DNS_LABEL_FORM = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_SUBDOMAIN_FORM = rf"{DNS_LABEL_FORM}(\.{DNS_LABEL_FORM})*"
DNS_LABEL = rf"^{DNS_LABEL_FORM}$"

# -- labels -----------------------------------------------------------------------------------------------
MANAGED_BY = "app.kubernetes.io/managed-by"
APP_NAME = "app.kubernetes.io/name"
MANAGER = "mdops"  # the controller's objects (Leases, Jobs)
API_MANAGER = "mdops-api"  # Runbooks the REST API created
RUNNER_NAME = "mdops-runner"
RUNBOOK_LABEL = f"{GROUP}/runbook"  # on a Job and its pods: the Runbook's name
COMMAND_LABEL = f"{GROUP}/command"  # on a Job and its pods; an annotation on a ledger Lease (its Runbook's)
CLAIM_LABEL = f"{GROUP}/claim"  # on a Job and its pods: the name of its run's ledger Lease
KEPT_LABEL = f"{GROUP}/kept"  # "true" on a pod kept for its run's end (its finalizer RESULT_FINALIZER)
LEDGER_LABEL = f"{GROUP}/ledger"  # "true" on the ledger's Leases
UNFINISHED_LABEL = f"{GROUP}/unfinished"  # "true" on a ledger Lease whose run's end is not recorded yet
LOCK_LABEL = f"{GROUP}/lock"  # "true" on the target locks' Leases
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # set by Kubernetes on a Job's pods
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"  # set by Kubernetes on a Job's pods: the Job's uid

# -- annotations ------------------------------------------------------------------------------------------
REQUEST_ID = f"{GROUP}/request-id"
RUNBOOK = f"{GROUP}/runbook"  # on a Lease: the Runbook (namespace/name or name) that holds it
RESULT = f"{GROUP}/result"
FINISHED_AT = f"{GROUP}/finished-at"
ARRIVAL = f"{GROUP}/arrival"  # on a ledger entry: when its Runbook first arrived (microseconds), its place
REQUEST = f"{GROUP}/request"  # on a ledger Lease: the fingerprint of the request fields it was claimed with
DUPLICATES = f"{GROUP}/duplicates"  # on a ledger Lease: uids of the Runbooks that showed its result
# On a ledger Lease: its run has not started (it is written with the claim and taken off before the Runbook
# gets its finalizer). Named when only the runs the gate held had it: claims written then still say so.
UNSTARTED = f"{GROUP}/held"
LOCK_GROUP = f"{GROUP}/group"  # on a target lock's Lease, and on a ledger Lease: its Runbook's lock group
ASKED = f"{GROUP}/asked"  # on a ledger Lease: who asked for its run, and its mode, profile and dry run (JSON)
REQUESTED_AT = f"{GROUP}/requested-at"  # when the REST API received the request (ms), for ordering

# -- a Job run's start claim (runner/claim.py): a Lease, made by the pod that runs the script ---------
START_CLAIM_PREFIX = "mdops-start-"  # manifests/identities.yaml's mdops-start-claims spells it too


def start_claim_name(job: str) -> str:
    return START_CLAIM_PREFIX + job
