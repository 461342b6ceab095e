"""charts/mdops: lint, render, values schema, and agreement with manifests/ (CRDs, RBAC, workload)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
from pkgtools import CHART, CI_VALUES, COMPONENTS, MANIFESTS, REPO, SCRIPTS, find

from api.settings import ApiSettings
from controller.settings import ControllerSettings
from devcluster.prometheus import DASHBOARD, alert_rules
from runbooks import crd, keys
from runbooks.settings import CommonSettings, variable

CI_IDS = [p.name.removesuffix("-values.yaml") for p in CI_VALUES]
PEERING = next(c for c in COMPONENTS if c.name == "peering")
SCRIPTS_COMPONENT = next(c for c in COMPONENTS if c.name == "scripts")


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for doc in docs:
        if doc["kind"] == "Pod":
            specs.append((doc["metadata"]["name"], doc["spec"]))
        elif doc["kind"] in ("Deployment", "Job"):
            specs.append((doc["metadata"]["name"], doc["spec"]["template"]["spec"]))
    return specs


def normalised_rules(role: dict[str, Any]) -> set[tuple]:
    """A Role's permissions as (group, resource, verb, resourceName) tuples: rule layout does not matter."""
    return {
        (group, resource, verb, name)
        for rule in role["rules"]
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule["verbs"]
        for name in rule.get("resourceNames") or ["*"]
    }


def test_ci_values_cover_the_required_configurations():
    assert {"default", "job-custom-image", "existing-secret", "servicemonitor", "peering"} <= set(CI_IDS)


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_lint_strict(helm, values):
    result = helm.run("lint", str(CHART), "--strict", "-f", str(values))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_rendered_objects_are_labelled_and_pods_are_restricted(helm, values):
    docs = helm.template("-f", str(values))
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == "mdops", doc["metadata"]["name"]
        assert labels.get("app.kubernetes.io/managed-by") == "Helm"
        assert len(doc["metadata"]["name"]) <= 63
    specs = pod_specs(docs)
    assert specs
    for name, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert container["resources"]["limits"]["memory"]


def test_default_install(helm):
    docs = helm.template()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            *["CustomResourceDefinition"] * len(crd.KINDS),
            "Deployment",
            "Pod",  # the helm test
            *["Role", "RoleBinding", "ServiceAccount"] * 2,  # the controller's and the Job pods'
            "Secret",
            "Service",
            *["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"] * 4,
        ]
    )
    deployment = find(docs, "Deployment", "mdops")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    controller, api = pod["containers"]
    # args, not command: the image's entrypoint, tini, runs them (and reaps what scripts leave behind).
    assert (controller["name"], controller["args"]) == ("controller", ["python", "-m", "controller"])
    assert (api["name"], api["args"]) == ("api", ["python", "-m", "api"])
    assert "command" not in controller and "command" not in api
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in controller["env"]}
    assert env["MDOPS_EXECUTOR"] == "job" and env["MDOPS_IN_CLUSTER"] == "true"
    assert env["MDOPS_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["MDOPS_RUNNER_IMAGE"] == "mdops:0.1.0"
    assert "MDOPS_SCRIPTS_CONFIGMAP" not in env  # the image's own scripts
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    assert controller["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {p["name"]: p["containerPort"] for p in controller["ports"]} == {"metrics": 9102, "healthz": 8081}
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    token_ref = next(e for e in api["env"] if e["name"] == "OPS_API_TOKEN")["valueFrom"]["secretKeyRef"]
    assert token_ref == {"name": "mdops-api-token", "key": "token"}
    secret = find(docs, "Secret", "mdops-api-token")
    assert len(base64.b64decode(secret["data"]["token"])) == 48
    service = find(docs, "Service", "mdops")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"http": 8080, "metrics": 9102}
    test_pod = find(docs, "Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "/healthz" in test_pod["spec"]["containers"][0]["command"][-1]


def crds_of(docs) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "CustomResourceDefinition"}


def test_crds_are_the_generated_ones_and_kept_on_uninstall(helm):
    rendered = crds_of(helm.template())
    assert {name: d["spec"] for name, d in rendered.items()} == {
        f"{kind.plural}.{keys.GROUP}": crd.build(kind)["spec"] for kind in crd.KINDS
    }
    for d in rendered.values():
        assert d["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    for d in crds_of(helm.template("--set", "crds.keep=false")).values():
        assert "annotations" not in d["metadata"]
    assert not crds_of(helm.template("--set", "crds.enabled=false"))


def test_existing_secret_is_used_and_none_is_generated(helm):
    docs = helm.template("-f", str(CHART / "ci" / "existing-secret-values.yaml"))
    assert not [d for d in docs if d["kind"] == "Secret"]
    api = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][1]
    env = {e["name"]: e for e in api["env"]}
    assert env["OPS_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "ops-console-token",
        "key": "admin-token",
    }
    assert env["MDOPS_API_TOKENS_FILE"]["value"] == "/etc/mdops/api/tokens.yaml"
    assert env["MDOPS_PROMETHEUS_URL"]["value"] == "http://prometheus.monitoring.svc:9090"
    volumes = find(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    tokens = next(v for v in volumes if v["name"] == "api-tokens")
    assert tokens["secret"]["defaultMode"] == 0o440  # the API refuses a tokens file others may read


def test_a_prometheus_url_with_a_password_is_read_from_a_secret(helm):
    """Not a value in plain text in the Deployment, which whoever may read Deployments reads."""
    docs = helm.template("--set", "api.prometheusUrlSecret.name=prometheus-credentials")
    api = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][1]
    (url,) = [e for e in api["env"] if e["name"] == "MDOPS_PROMETHEUS_URL"]
    assert url == {
        "name": "MDOPS_PROMETHEUS_URL",
        "valueFrom": {"secretKeyRef": {"name": "prometheus-credentials", "key": "url"}},
    }


def test_job_executor_with_custom_images(helm):
    docs = helm.template("-f", str(CHART / "ci" / "job-custom-image-values.yaml"))
    controller = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert controller["image"] == f"registry.example.com/platform/mdops@sha256:{'0' * 64}"
    env = {e["name"]: e.get("value") for e in controller["env"]}
    assert env["MDOPS_RUNNER_IMAGE"] == "registry.example.com/platform/mdops-runner:0.1.0-scripts"
    assert env["MDOPS_SCRIPTS_CONFIGMAP"] == "platform-runbook-scripts"
    assert env["MDOPS_SCRIPT_ENV"] == '{"MDOPS_SIM_URL":"http://feed-admin.market-data.svc:9100"}'
    assert env["MDOPS_SCRIPT_PASS_ENV"] == '["HTTPS_PROXY","NO_PROXY","FEED_PASSWORD"]'
    assert env["MDOPS_JOB_SERVICE_ACCOUNT"] == "runbook-runner"
    assert env["MDOPS_JOB_SCRIPT_SECRET"] == "feed-credentials"
    assert not [d for d in docs if d["kind"] == "ConfigMap"]


def test_servicemonitor(helm):
    docs = helm.template("-f", str(CHART / "ci" / "servicemonitor-values.yaml"))
    monitor = find(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    service = find(docs, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def test_the_prometheusrule_is_the_alerts_of_manifests_for_this_release(helm):
    docs = helm.template("-f", str(CHART / "ci" / "servicemonitor-values.yaml"))
    rule = find(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["metadata"]["name"] == find(docs, "Deployment")["metadata"]["name"]
    assert rule["spec"] == alert_rules()  # the local stack's Prometheus evaluates the same
    assert not [d for d in helm.template() if d["kind"] == "PrometheusRule"]  # off by default


def test_the_dashboard_configmap_holds_the_dashboard_of_manifests(helm):
    docs = helm.template("-f", str(CHART / "ci" / "servicemonitor-values.yaml"))
    (configmap,) = [d for d in docs if d["metadata"]["name"].endswith("-dashboard")]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["mdops.json"]) == json.loads(DASHBOARD.read_text())
    assert not [d for d in helm.template() if d["metadata"]["name"].endswith("-dashboard")]  # off by default


def test_values_schema_refuses_mistakes(helm):
    for args, message in [
        (("--set", "controller.executor=podman"), "value must be one of 'job', 'local'"),
        (("--set", "controler.executor=job"), "additional properties 'controler' not allowed"),
        (("--set", "service.port=http"), "/service/port"),
        (("--set", "replicaCount=2"), "replicaCount > 1 needs peering.enabled"),
        (
            ("-f", str(CHART / "ci" / "peering-values.yaml"), "--set", "controller.executor=local"),
            "peering needs controller.executor=job",
        ),
        (("--set", "scripts.configMapName=My_Scripts"), "/scripts/configMapName"),
        (("--set", "scripts.create=false"), "additional properties 'create' not allowed"),
        (("--set", "controller.scriptPassEnv={HTTPS-PROXY}"), "/controller/scriptPassEnv/0"),
        (("--set", "calendar.venue=XHGK"), "/calendar/venue"),
        (("--set-string", "controller.jobServiceAccount=x') || ('"), "/controller/jobServiceAccount"),
        # What would install and then crash-loop, or fail every run:
        (("--set", "controller.scriptEnv.feed-password=x"), "'feed-password' does not match pattern"),
        (("--set", "controller.jobPodAnnotations.Bad_Key/x=y"), "'Bad_Key/x' does not match pattern"),
        (("--set", "image.repository="), "/image/repository"),
        (("--set", "image.digest=latest"), "/image/digest"),
        (("--set", "runner.image.tag=a:b"), "/runner/image/tag"),
        (("--set", "api.port=9102"), "controller.metricsPort and api.port are both 9102"),
        (("--set", "controller.livenessPort=8080"), "controller.livenessPort and api.port are both 8080"),
        (("--set", "service.metricsPort=8080"), "service.port and service.metricsPort are both 8080"),
        (("--set", "service.type=NodePort", "--set", "service.nodePort=8080"), "/service/nodePort"),
        (("--set", "controller.resources=null"), "controller.resources.limits.memory is required"),
        (("--set", "api.resources.limits=null"), "api.resources.limits.memory is required"),
        (("--set", "controller.jobServiceAccount=mdops"), "the controller's own ServiceAccount"),
        (
            ("--set", "controller.jobServiceAccount="),
            "controller.jobStartClaim needs controller.jobServiceAc",
        ),
        (("--set", "api.prometheusUrl=prometheus:9090"), "/api/prometheusUrl"),  # the API would exit 2
        (("--set", "calendar.timezone=Asia/Hongkong"), 'unknown time zone "Asia/Hongkong"'),  # both would
        (("--set", "calendar.timezone=Local"), 'unknown time zone "Local"'),
        (
            (
                "--set",
                "controller.extraEnv[0].name=MDOPS_EXECUTOR",
                "--set",
                "controller.extraEnv[0].value=local",
            ),
            "controller.extraEnv: MDOPS_EXECUTOR is one the chart sets from its values",
        ),
        (("--set", "api.prometheusUrl=https://mdops:pw@prometheus:9090"), "/api/prometheusUrl"),  # a Secret's
        # What the API server would refuse half-way through an install:
        (("--set", "fullnameOverride=Market_Data"), "/fullnameOverride"),
        (("--set", "api.tokensSecret=Tokens"), "/api/tokensSecret"),
        (("--set", "api.existingSecretKey="), "/api/existingSecretKey"),
        (("--set", "peering.name="), "/peering/name"),
        (("--set-string", "serviceMonitor.interval=30"), "/serviceMonitor/interval"),
    ]:
        result = helm.run("template", "mdops", str(CHART), *args, check=False)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)


def test_what_the_render_refuses_is_allowed_where_it_does_no_harm(helm):
    for args in [
        ("--set", "api.enabled=false", "--set", "api.port=9102", "--set", "api.resources=null"),
        ("--set", "controller.jobServiceAccount=", "--set", "controller.jobStartClaim=false"),
        ("--set", "controller.executor=local", "--set", "controller.jobServiceAccount="),
        ("--set", "image.repository=registry.example.com:5000/platform/mdops", "--set", "image.tag=1.2_rc-1"),
        *(("--set", f"calendar.timezone={zone}") for zone in ("UTC", "Etc/GMT+5", "Europe/London")),
        ("--set", "api.extraEnv[0].name=MDOPS_API_HISTORY", "--set-string", "api.extraEnv[0].value=50"),
    ]:
        assert helm.template(*args), args


def settings_of(container: dict[str, Any], settings: type[CommonSettings], monkeypatch) -> CommonSettings:
    """The settings a container of the chart starts with: its environment's values (what the kubelet
    fills in from the pod's fields and Secrets is left out)."""
    for name in [n for n in os.environ if n.startswith("MDOPS_") or n == "OPS_API_TOKEN"]:
        monkeypatch.delenv(name)
    for env in container["env"]:
        if "value" in env:
            monkeypatch.setenv(env["name"], env["value"])
    return settings()


# Where the chart's defaults are not the programs' own, and why.
CHART_NOT_PROGRAM_DEFAULTS = {
    "in_cluster": True,  # in a pod
    "calendar_cache": Path("/tmp/mdops-sessions.json"),  # on the pod's emptyDir: a restart reads it
    "liveness_port": 8081,  # the kubelet's probe
    "api_host": "0.0.0.0",  # reached through the Service
    "prometheus_url": "http://prometheus-operated.monitoring.svc:9090",  # prometheus-operator's
}


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_the_charts_environment_is_settings_the_programs_accept(helm, monkeypatch, values):
    """A value the programs refuse would be a pod that installs and then crash-loops (exit 2)."""
    pod = find(helm.template("-f", str(values)), "Deployment", "mdops")["spec"]["template"]["spec"]
    for container in pod["containers"]:
        settings = {"controller": ControllerSettings, "api": ApiSettings}[container["name"]]
        assert settings_of(container, settings, monkeypatch).in_cluster


@pytest.mark.parametrize("executor", ["job", "local"])
def test_the_charts_defaults_are_the_programs_defaults(helm, monkeypatch, executor):
    """values.yaml repeats the settings' defaults (ledgerSize, retention, the gate, ...): they stay equal,
    but for CHART_NOT_PROGRAM_DEFAULTS."""
    pod = find(helm.template("--set", f"controller.executor={executor}"), "Deployment")
    for container in pod["spec"]["template"]["spec"]["containers"]:
        cls = {"controller": ControllerSettings, "api": ApiSettings}[container["name"]]
        settings = settings_of(container, cls, monkeypatch)
        fields = {variable(cls, field): field for field in cls.model_fields}
        given = [fields[env["name"]] for env in container["env"] if env["name"] in fields]
        assert len(given) > 8, container["name"]
        for field in set(given) - {"namespace", "executor"}:  # the pod's own; chosen here
            info = cls.model_fields[field]
            default = info.default_factory() if info.default_factory else info.default
            assert getattr(settings, field) == CHART_NOT_PROGRAM_DEFAULTS.get(field, default), field


def test_fullname_is_cut_at_63_characters(helm):
    release = "a-release-name-as-long-as-helm-allows-53-characters-x"
    docs = helm.template("--set", "nameOverride=market-data-ops", release=release)
    names = {d["metadata"]["name"] for d in docs if d["kind"] in ("Deployment", "Service")}
    assert names and all(len(n) <= 63 and not n.endswith("-") for n in names)
    assert len(release) == 53 and max(len(n) for n in names) == 63


def test_chart_and_kustomize_agree_on_the_crds(helm, kustomize):
    chart, kustomized = crds_of(helm.template()), crds_of(kustomize())
    assert chart.keys() == kustomized.keys() and len(chart) == len(crd.KINDS)
    for name in chart:
        assert chart[name]["spec"] == kustomized[name]["spec"], name


def admission_policies(docs) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d["spec"] for d in docs if d["kind"].startswith("Validating")}


def test_chart_and_kustomize_agree_on_the_identity_policies(helm, kustomize):
    chart, kustomized = admission_policies(helm.template()), admission_policies(kustomize())
    assert chart == kustomized and len(chart) == 8
    assert not admission_policies(helm.template("--set", "identities.enabled=false"))


def test_the_start_claims_policy_keeps_the_releases_job_service_account_to_claims(helm, kustomize):
    def runner_clauses(docs) -> str:
        spec = admission_policies(docs)[("ValidatingAdmissionPolicy", "mdops-start-claims")]
        return json.dumps([spec["variables"], spec["matchConditions"]])

    custom = runner_clauses(helm.template("--set", "controller.jobServiceAccount=runbook-runner"))
    assert custom.count("endsWith(':runbook-runner')") == 2 and "mdops-runner" not in custom
    assert custom == runner_clauses(kustomize()).replace(":mdops-runner'", ":runbook-runner'")


def controller_env(docs) -> dict[str, str]:
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    return {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}


def test_chart_and_kustomize_run_the_images_scripts_unless_a_configmap_is_named(helm, kustomize):
    for docs in (helm.template(), kustomize()):
        assert not [d for d in docs if d["kind"] == "ConfigMap"]
        assert "MDOPS_SCRIPTS_CONFIGMAP" not in controller_env(docs)
    # Your own scripts: the chart takes the ConfigMap's name; kustomize builds it from a folder with its own
    # kustomization.yaml (here the reference scripts') and the component points the controller at it.
    chart = helm.template("--set", "scripts.configMapName=mdops-scripts")
    kustomized = kustomize(components=(SCRIPTS_COMPONENT,), resources=(SCRIPTS,))
    assert controller_env(chart)["MDOPS_SCRIPTS_CONFIGMAP"] == "mdops-scripts"
    assert controller_env(kustomized)["MDOPS_SCRIPTS_CONFIGMAP"] == "mdops-scripts"
    assert not [d for d in chart if d["kind"] == "ConfigMap"]
    scripts = find(kustomized, "ConfigMap", "mdops-scripts")
    assert scripts["metadata"]["namespace"] == "mdops"
    commands = {"start", "stop", "restart", "failover", "failback", "drill", "health_check"}
    assert set(scripts["data"]) == commands | {"_mdsim.py"}
    for key, text in scripts["data"].items():
        assert text == (SCRIPTS / key).read_text(), key


@pytest.mark.parametrize("configmap", ["", "platform-runbook-scripts"], ids=["image-scripts", "configmap"])
def test_local_executor_mounts_the_scripts_configmap_only_when_named(helm, configmap):
    docs = helm.template("--set", "controller.executor=local", "--set", f"scripts.configMapName={configmap}")
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert controller_env(docs)["MDOPS_SCRIPTS_DIR"] == "/etc/mdops/scripts"
    assert controller_env(docs)["MDOPS_RUN_FOLDER_TTL_SECONDS"] == "3600"  # they do not fill the emptyDir
    if configmap:
        assert mounts["scripts"] == "/etc/mdops/scripts"
        assert volumes["scripts"]["configMap"] == {"name": configmap, "defaultMode": 0o755}
    else:
        assert "scripts" not in mounts and "scripts" not in volumes


def readme_permissions() -> set[tuple]:
    """The README's table of the Role's permissions (Permissions), as :func:`normalised_rules` has them: a
    row's resources and verbs are lists separated by ";", one list of verbs per resource."""
    section = (REPO / "README.md").read_text().split("\n### Permissions\n", 1)[1].split("\n### ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    permissions = set()
    for group, resources, verbs, _ in rows[1:]:  # below the header
        group = "" if group.strip() == "core" else group.strip().strip("`")
        pairs = zip(resources.split(";"), verbs.split(";"), strict=True)
        for resource, listed in pairs:
            permissions |= {(group, resource.strip().strip("`"), verb, "*") for verb in listed.split()}
    return permissions


def test_the_readme_lists_the_permissions_the_role_grants(helm, kustomize):
    with_peering = normalised_rules(find(kustomize(components=(PEERING,)), "Role", "mdops-controller"))
    peering_chart = helm.template("-f", str(CHART / "ci" / "peering-values.yaml"))
    chart = normalised_rules(find(peering_chart, "Role", "mdops-controller"))
    assert readme_permissions() == with_peering == chart


@pytest.mark.parametrize("peering", [False, True], ids=["default", "peering"])
def test_chart_and_kustomize_agree_on_rbac(helm, kustomize, peering):
    chart = helm.template(*(["-f", str(CHART / "ci" / "peering-values.yaml")] if peering else []))
    kustomized = kustomize(components=(PEERING,) if peering else ())
    accounts = {"mdops-controller": "mdops", "mdops-runner": "mdops-runner"}  # Role: its ServiceAccount's
    for role in accounts:
        assert normalised_rules(find(chart, "Role", role)) == normalised_rules(find(kustomized, "Role", role))
    for docs in (chart, kustomized):
        assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
        assert {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"} == set(
            accounts.values()
        )
        for role, account in accounts.items():
            binding = find(docs, "RoleBinding", role)
            assert binding["roleRef"]["name"] == role
            assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "mdops"}]
    assert normalised_rules(find(chart, "Role", "mdops-runner")) == {
        ("coordination.k8s.io", "leases", verb, "*") for verb in ("create", "get")
    }
    if peering:
        assert (
            find(chart, "Deployment")["spec"]["replicas"]
            == find(kustomized, "Deployment")["spec"]["replicas"]
            == 2
        )
        assert {d["kind"] for d in chart} >= {"KopfPeering", "CustomResourceDefinition"}
        assert len(crds_of(kustomized)) == len(crd.KINDS) + 1


def test_with_peering_a_disruption_evicts_one_replica_at_a_time(helm, kustomize):
    """Without a budget a node drain evicts both peers at once, and no controller runs until one is back."""
    chart = helm.template("-f", str(CHART / "ci" / "peering-values.yaml"))
    for docs in (chart, kustomize(components=(PEERING,))):
        budget, deployment = find(docs, "PodDisruptionBudget"), find(docs, "Deployment")
        assert deployment["spec"]["replicas"] == 2 and budget["spec"]["maxUnavailable"] == 1
        assert budget["spec"]["selector"] == deployment["spec"]["selector"]
    for docs in (helm.template(), kustomize()):  # one replica: a budget would only block drains
        assert not [d for d in docs if d["kind"] == "PodDisruptionBudget"]


def test_chart_and_kustomize_agree_on_the_workload(helm, kustomize):
    chart_pod = find(helm.template(), "Deployment")["spec"]["template"]["spec"]
    kustomize_pod = find(kustomize(), "Deployment")["spec"]["template"]["spec"]
    assert chart_pod["securityContext"] == kustomize_pod["securityContext"]
    assert chart_pod["volumes"] == kustomize_pod["volumes"]
    pairs = zip(chart_pod["containers"], kustomize_pod["containers"], strict=True)
    for chart_container, kustomize_container in pairs:
        for key in (
            "name",
            "image",
            "command",
            "args",
            "ports",
            "livenessProbe",
            "readinessProbe",
            "resources",
        ):
            assert chart_container.get(key) == kustomize_container.get(key), key
        assert chart_container["securityContext"] == kustomize_container["securityContext"]
        chart_env = {e["name"]: e for e in chart_container["env"]}
        for env in kustomize_container["env"]:
            assert chart_env[env["name"]] == env, env["name"]


def test_manifests_have_no_namespace_of_their_own_but_mdops(kustomize):
    docs = kustomize()
    assert find(docs, "Namespace")["metadata"]["name"] == "mdops"
    for doc in docs:
        if doc["kind"] not in ("Namespace", "CustomResourceDefinition"):
            assert doc["metadata"]["namespace"] == "mdops", doc["metadata"]["name"]
    assert (MANIFESTS / "crd.yaml").read_text() == crd.render()
