"""The controller's ServiceAccount with its own token (not the admin's): it can do what the controller and
its API sidecar need, in its namespace, and is refused everything else, Secrets above all."""

from __future__ import annotations

import re
import uuid

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from runbooks import keys, models
from runbooks.kube import api_client

# What the controller and the API do, as (verb, group, resource, subresource).
NEEDED = [
    # delete: retention of finished Runbooks and schedules' history.
    *(
        (verb, keys.GROUP, "runbooks", "")
        for verb in ("get", "list", "watch", "patch", "create", "delete", "impersonate")
    ),
    ("patch", keys.GROUP, "runbooks", "status"),  # kopf's and the controller's patches, never a PUT
    *((verb, keys.GROUP, "runbookpolicies", "") for verb in ("get", "list", "watch")),
    *(
        (verb, keys.GROUP, "runbookapprovals", "")
        for verb in ("get", "list", "watch", "create", "impersonate")
    ),
    *((verb, keys.GROUP, "runbookschedules", "") for verb in ("get", "list", "watch", "patch")),
    ("patch", keys.GROUP, "runbookschedules", "status"),
    # patch: a Job's TTL, once its result is recorded.
    *((verb, "batch", "jobs", "") for verb in ("create", "get", "list", "watch", "patch", "delete")),
    # A run's pods, by its Job's label; patch: a stopped run's pods kept until their end is recorded.
    *((verb, "", "pods", "") for verb in ("list", "watch", "patch")),
    # core/v1 Events (kopf's and the controller's); list: the Job controller's FailedCreate Events of a Job
    *((verb, "", "events", "") for verb in ("create", "patch", "list")),
    # The locks and the ledger: read, listed (the ledger's trim), created, patched at a version, deleted.
    *((verb, "coordination.k8s.io", "leases", "") for verb in ("get", "list", "create", "patch", "delete")),
]
REFUSED = [
    *((verb, "", "secrets", "") for verb in ("get", "list", "watch", "create")),
    ("update", keys.GROUP, "runbooks", ""),
    # Policies are the desk's (GitOps), approvals are decisions: the controller only reads them, and a
    # decision once made is never changed or withdrawn by mdops.
    *((verb, keys.GROUP, "runbookpolicies", "") for verb in ("create", "patch", "delete")),
    *((verb, keys.GROUP, "runbookapprovals", "") for verb in ("patch", "update", "delete")),
    # Schedules are the desk's too: mdops writes their status only.
    *((verb, keys.GROUP, "runbookschedules", "") for verb in ("create", "update", "delete")),
    ("create", "", "pods", ""),
    ("create", "", "pods", "exec"),
    ("get", "", "configmaps", ""),
    ("create", "rbac.authorization.k8s.io", "roles", ""),
    ("create", "rbac.authorization.k8s.io", "rolebindings", ""),
    ("patch", "kopf.dev", "kopfpeerings", ""),  # only with the peering component
    # What mdops never does (the kopf and HTTP calls of controller/ and api/): read any pod's log, get a
    # pod by name, post events.k8s.io Events, PUT a status or a Lease (which makes one that went again), watch
    # a Lease.
    ("get", "", "pods", "log"),
    ("get", "", "pods", ""),
    *((verb, "events.k8s.io", "events", "") for verb in ("create", "patch")),
    *((verb, keys.GROUP, "runbooks", "status") for verb in ("get", "update")),
    *((verb, "coordination.k8s.io", "leases", "") for verb in ("watch", "update")),
]


def allowed(
    api: client.ApiClient, namespace: str | None, verb: str, group: str, resource: str, sub: str
) -> bool:
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace, verb=verb, group=group, resource=resource, subresource=sub or None
            )
        )
    )
    return client.AuthorizationV1Api(api).create_self_subject_access_review(review).status.allowed


def status_of(call) -> int:
    try:
        call()
    except ApiException as error:
        return error.status
    return 200


@pytest.fixture
def sa(controller_rbac, sa_kubeconfig, namespace):
    kubeconfig = sa_kubeconfig(namespace, controller_rbac)
    api = api_client(kubeconfig)
    yield kubeconfig, api
    api.close()


@pytest.fixture
def other_namespace(cluster):
    name = f"other-workload-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_the_token_is_the_service_accounts(cluster, sa, namespace, controller_rbac):
    kubeconfig, _ = sa
    whoami = cluster.kubectl(
        "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", kubeconfig=kubeconfig
    )
    assert whoami.stdout == f"system:serviceaccount:{namespace}:{controller_rbac}"


def test_can_i_list_shows_what_the_controller_needs_and_no_secrets(cluster, sa, namespace):
    kubeconfig, _ = sa
    result = cluster.kubectl("auth", "can-i", "--list", "-n", namespace, kubeconfig=kubeconfig, check=False)
    assert result.returncode == 0, result.stderr
    granted: dict[str, set[str]] = {}
    for line in result.stdout.splitlines()[1:]:
        match = re.match(r"^(\S+)\s+\[.*?\]\s+\[(.*?)\]\s+\[(.*?)\]$", line)
        if match:
            resource, names, verbs = match.groups()
            assert not names, f"{resource}: unexpected resourceNames {names}"
            granted.setdefault(resource, set()).update(verbs.split())
    needed: dict[str, set[str]] = {}
    for verb, group, resource, sub in NEEDED:
        key = f"{resource}.{group}" if group else resource
        needed.setdefault(f"{key}/{sub}" if sub else key, set()).add(verb)
    # Every authenticated user may review its own access; beyond that, exactly what is needed.
    own = {r: v for r, v in granted.items() if not r.startswith("selfsubject")}
    assert own == needed


def test_access_reviews_allow_exactly_the_needed_verbs(sa, namespace, other_namespace):
    _, api = sa
    for verb, group, resource, sub in NEEDED:
        assert allowed(api, namespace, verb, group, resource, sub), (verb, group, resource, sub)
        assert not allowed(api, other_namespace, verb, group, resource, sub), (
            "other namespace",
            verb,
            resource,
        )
    for verb, group, resource, sub in REFUSED:
        assert not allowed(api, namespace, verb, group, resource, sub), (verb, group, resource, sub)
    # Nothing cluster-wide.
    assert not allowed(api, None, "list", "apiextensions.k8s.io", "customresourcedefinitions", "")
    assert not allowed(api, None, "list", "", "namespaces", "")
    assert not allowed(api, None, "list", keys.GROUP, "runbooks", "")


def test_real_requests_of_the_controller_and_the_api_succeed(sa, namespace):
    _, api = sa
    custom = client.CustomObjectsApi(api)
    runbook = models.manifest("by-the-api", {"command": "health_check", "reason": "ServiceAccount test"})
    args = (keys.GROUP, keys.VERSION, namespace, keys.PLURAL)
    custom.create_namespaced_custom_object(*args, runbook)
    assert [i["metadata"]["name"] for i in custom.list_namespaced_custom_object(*args)["items"]] == [
        "by-the-api"
    ]
    custom.patch_namespaced_custom_object(
        *args, "by-the-api", {"metadata": {"finalizers": ["ops.mdops.io/runbook"]}}
    )
    custom.patch_namespaced_custom_object_status(*args, "by-the-api", {"status": {"attempts": 1}})
    custom.patch_namespaced_custom_object(*args, "by-the-api", {"metadata": {"finalizers": None}})

    coordination = client.CoordinationV1Api(api)
    lease = coordination.create_namespaced_lease(
        namespace, {"metadata": {"name": "mdops-lock-test"}, "spec": {"holderIdentity": "by-the-api"}}
    )
    version = lease.metadata.resource_version
    taken = [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": version},
        {"op": "add", "path": "/spec", "value": {"holderIdentity": "someone-else"}},
    ]
    coordination.patch_namespaced_lease("mdops-lock-test", namespace, taken)  # as KubeApi.replace_lease
    coordination.delete_namespaced_lease("mdops-lock-test", namespace)

    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    job = {
        "metadata": {"name": "runner-test"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "containers": [{"name": "runner", "image": "mdops:0.1.0", "command": ["true"]}],
                }
            },
        },
    }
    batch.create_namespaced_job(namespace, job)
    core.list_namespaced_pod(namespace, label_selector="job-name=runner-test")
    # Not authorised (403, not the 404 of no such pod): the logs of the namespace's pods are not mdops's.
    assert status_of(lambda: core.read_namespaced_pod_log("no-such-pod", namespace)) == 403
    core.create_namespaced_event(
        namespace,
        {
            "metadata": {"generateName": "by-the-api."},
            "involvedObject": {"kind": keys.KIND, "name": "by-the-api", "namespace": namespace},
            "reason": "Test",
            "message": "an Event from the controller's ServiceAccount",
            "type": "Normal",
        },
    )
    batch.delete_namespaced_job("runner-test", namespace, propagation_policy="Background")


def test_secrets_of_other_workloads_are_refused(cluster, sa, namespace, other_namespace):
    _, api = sa
    for where in (namespace, other_namespace):
        cluster.kubectl(
            "create", "secret", "generic", "payments-db", "-n", where, "--from-literal=password=hunter2"
        )
    core = client.CoreV1Api(api)
    for where in (namespace, other_namespace):
        assert status_of(lambda w=where: core.read_namespaced_secret("payments-db", w)) == 403
        assert status_of(lambda w=where: core.list_namespaced_secret(w)) == 403
    assert status_of(core.list_secret_for_all_namespaces) == 403
    # And its reach ends at its namespace.
    custom = client.CustomObjectsApi(api)
    args = (keys.GROUP, keys.VERSION, other_namespace, keys.PLURAL)
    assert status_of(lambda: custom.list_namespaced_custom_object(*args)) == 403
    assert status_of(lambda: client.ApiextensionsV1Api(api).list_custom_resource_definition()) == 403
