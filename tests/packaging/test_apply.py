"""What the chart and manifests/ produce is accepted by the real API server, and the chart installs,
upgrades (keeping its generated token) and uninstalls (keeping the CRD) for real."""

from __future__ import annotations

import base64
import json

import pytest
from pkgtools import CHART, CI_VALUES, COMPONENTS, MANIFESTS, SCRIPTS, dry_run

from runbooks import crd, keys, models

CI_IDS = [p.name.removesuffix("-values.yaml") for p in CI_VALUES]
CRDS = [f"crd/{kind.plural}.{keys.GROUP}" for kind in crd.KINDS]
IDENTITIES = MANIFESTS / "identities.yaml"  # cluster-wide: other tests of the session may have applied it
POLICIES = [
    f"{kind}/{name}"
    for kind in ("validatingadmissionpolicy", "validatingadmissionpolicybinding")
    for name in ("mdops-requested-by", "mdops-approver", "mdops-schedule-requested-by", "mdops-start-claims")
]


def restricted(cluster, namespace: str) -> None:
    """Enforce the restricted Pod Security Standard in the namespace: a dry run then refuses pods that
    break it and warns about workloads that would."""
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")


def assert_accepted(result) -> None:
    assert result.returncode == 0, result.stderr
    assert "would violate PodSecurity" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("components", "resources"),
    [((), ()), (tuple(COMPONENTS), (SCRIPTS,))],
    ids=["base", "all-components-and-the-scripts-configmap"],
)
def test_kustomize_output_is_accepted_by_the_api_server(crds, kustomize, namespace, components, resources):
    restricted(crds, namespace)
    docs = kustomize(namespace=namespace, components=components, resources=resources)
    result = dry_run(crds, namespace, docs)
    assert_accepted(result)
    assert result.stdout.count("(server dry run)") == len(docs)


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_rendered_chart_is_accepted_by_the_api_server(crds, helm, namespace, values):
    restricted(crds, namespace)
    docs = helm.template("-f", str(values), namespace=namespace)
    result = dry_run(crds, namespace, docs)
    assert_accepted(result)
    assert result.stdout.count("(server dry run)") == len(docs)


def test_the_api_server_refuses_what_the_schema_of_a_cr_refuses(crds, namespace):
    """The dry runs above are worth something: a misplaced field in a custom resource is refused."""
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "typo"},
        "spec": {"selector": {}, "endpoints": [{"port": "metrics", "intervall": "30s"}]},
    }
    result = dry_run(crds, namespace, [monitor])
    assert result.returncode != 0 and "intervall" in result.stderr
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "typo"},
        "spec": {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up == 0", "fro": "5m"}]}]},
    }
    result = dry_run(crds, namespace, [rule])
    assert result.returncode != 0 and "fro" in result.stderr


def test_restricted_pod_security_is_enforced_in_these_dry_runs(crds, namespace):
    """...and the restricted Pod Security Standard is checked by them: a root pod is refused."""
    restricted(crds, namespace)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root"},
        "spec": {"containers": [{"name": "c", "image": "mdops:0.1.0"}]},
    }
    result = dry_run(crds, namespace, [pod])
    assert result.returncode != 0 and "violates PodSecurity" in result.stderr


def _token(cluster, namespace: str) -> str:
    secret = json.loads(
        cluster.kubectl("get", "secret", "mdops-api-token", "-n", namespace, "-o", "json").stdout
    )
    return base64.b64decode(secret["data"]["token"]).decode()


def test_install_upgrade_uninstall(crds, helm, namespace):
    cluster = crds
    # The CRDs are installed already (by the fixtures), and the identity policies may be: let the release
    # adopt them, as Helm does with objects that carry its ownership metadata, so that uninstalling shows
    # which are kept.
    cluster.kubectl("apply", "-f", str(IDENTITIES))
    adopted = [*CRDS, *POLICIES]
    cluster.kubectl("label", *adopted, "app.kubernetes.io/managed-by=Helm", "--overwrite")
    cluster.kubectl(
        "annotate",
        *adopted,
        "meta.helm.sh/release-name=mdops",
        f"meta.helm.sh/release-namespace={namespace}",
        "--overwrite",
    )
    try:
        helm.run("install", "mdops", str(CHART), "-n", namespace, kubeconfig=cluster.kubeconfig)
        token = _token(cluster, namespace)
        assert len(token) == 48
        runbook = models.manifest("kept", {"command": "health_check"})
        cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(runbook))

        helm.run(
            "upgrade",
            "mdops",
            str(CHART),
            "-n",
            namespace,
            "--set",
            "controller.jobTtlSeconds=60",
            kubeconfig=cluster.kubeconfig,
        )
        assert _token(cluster, namespace) == token, "the upgrade replaced the generated API token"
        env = cluster.kubectl(
            "get",
            "deployment",
            "mdops",
            "-n",
            namespace,
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env[?(@.name=='MDOPS_JOB_TTL_SECONDS')].value}",
        ).stdout
        assert env == "60"

        helm.run("uninstall", "mdops", "-n", namespace, kubeconfig=cluster.kubeconfig)
        gone = cluster.kubectl("get", "deployment,secret,role", "-n", namespace, "-o", "name").stdout
        assert "mdops" not in gone
        # The CRDs and the Runbooks stay; the identity policies go with the release.
        cluster.kubectl("get", *CRDS)
        cluster.kubectl("get", "runbook", "kept", "-n", namespace)
        assert cluster.kubectl("get", *POLICIES, "-o", "name", "--ignore-not-found").stdout == ""
    finally:
        cluster.kubectl("apply", "-f", str(IDENTITIES))  # as the session had them
        cluster.kubectl("annotate", *adopted, "meta.helm.sh/release-name-", "meta.helm.sh/release-namespace-")
        cluster.kubectl("label", *adopted, "app.kubernetes.io/managed-by-")


def test_a_secret_or_service_account_the_pods_need_must_be_there_to_install(crds, helm, namespace):
    """Not a pod that waits for ever (CreateContainerConfigError, a volume never mounted), nor pods never
    made (no ServiceAccount): Helm looks, where it can (install, upgrade, a server dry run)."""
    cluster = crds

    def install(*values: str):
        # The cluster-wide objects are the session's already: this release would not own them.
        args = ("--set", "crds.enabled=false", "--set", "identities.enabled=false", *values)
        return helm.run(
            "install", "mdops", str(CHART), "-n", namespace, "--dry-run=server", *args,
            kubeconfig=cluster.kubeconfig, check=False,
        )  # fmt: skip

    missing = install("--set", "api.tokensSecret=mdops-tokens")
    assert missing.returncode != 0
    assert f"api.tokensSecret: there is no Secret mdops-tokens in namespace {namespace}" in missing.stderr
    cluster.kubectl("create", "secret", "generic", "mdops-tokens", "-n", namespace, "--from-literal=x=y")
    no_key = install("--set", "api.tokensSecret=mdops-tokens")
    assert "the Secret mdops-tokens has no key tokens.yaml" in no_key.stderr, no_key.stderr
    cluster.kubectl("create", "secret", "generic", "admin", "-n", namespace, "--from-literal=token=t")
    assert install("--set", "api.existingSecret=admin").returncode == 0
    wrong = install("--set", "api.existingSecret=admin", "--set", "api.existingSecretKey=admin-token")
    assert "api.existingSecret: the Secret admin has no key admin-token" in wrong.stderr, wrong.stderr
    no_url = install("--set", "api.prometheusUrlSecret.name=admin")
    assert "api.prometheusUrlSecret: the Secret admin has no key url" in no_url.stderr, no_url.stderr
    in_token = install(
        "--set", "api.prometheusUrlSecret.name=admin", "--set", "api.prometheusUrlSecret.key=token"
    )
    assert in_token.returncode == 0, in_token.stderr
    assert install().returncode == 0  # the generated token's Secret: made by the release
    accounts = {"serviceAccount.name": "serviceAccount.create", "controller.jobServiceAccount": "rbac.create"}
    for value, made in accounts.items():
        refused = install("--set", f"{made}=false", "--set", f"{value}=ops")
        assert f"{value}: there is no ServiceAccount ops in namespace {namespace}" in refused.stderr, value
    cluster.kubectl("create", "serviceaccount", "ops", "-n", namespace)
    for value, made in accounts.items():
        assert install("--set", f"{made}=false", "--set", f"{value}=ops").returncode == 0, value
