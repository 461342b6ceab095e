"""examples/gitops: the Argo CD health check (run in Lua 5.1, as Argo CD's gopher-lua), and Runbook
manifests the API server accepts."""

from __future__ import annotations

import pytest
import yaml
from lupa.lua51 import LuaRuntime
from pkgtools import REPO, dry_run, load_all

from devcluster.processes import wait_until
from runbooks import keys

GITOPS = REPO / "examples" / "gitops"
HEALTH_LUA = GITOPS / "argocd" / "runbook-health.lua"


def health(runbook: dict) -> tuple[str, str]:
    """Argo CD's view of ``runbook``: the script runs as a function body with ``obj`` set."""
    lua = LuaRuntime(unpack_returned_tuples=True)

    def to_lua(value):
        if isinstance(value, dict):
            return lua.table_from({k: to_lua(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([to_lua(v) for v in value])
        return value

    check = lua.eval(f"function(obj)\n{HEALTH_LUA.read_text()}\nend")
    result = check(to_lua(runbook))
    return result["status"], result["message"]


def runbook(generation: int = 1, observed: int | None = 1, **conditions: tuple[str, str, str]) -> dict:
    body = {"metadata": {"name": "rb", "generation": generation}, "spec": {"command": "failover"}}
    if conditions or observed is not None:
        body["status"] = {
            "observedGeneration": observed,
            "conditions": [
                {"type": kind, "status": status, "reason": reason, "message": message}
                for kind, (status, reason, message) in conditions.items()
            ],
        }
    return body


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (runbook(observed=None), "Progressing"),
        ({"metadata": {"name": "rb"}, "spec": {}, "status": {}}, "Progressing"),
        (runbook(Succeeded=("Unknown", "Queued", "waiting for the lock held by rb-0")), "Progressing"),
        (runbook(Succeeded=("Unknown", "Running", "running as job rb-1234")), "Progressing"),
        (runbook(Ready=("True", "Succeeded", ""), Succeeded=("True", "Succeeded", "succeeded")), "Healthy"),
        (runbook(Succeeded=("False", "HealthGateFailed", "coverage 0.91 < 0.99")), "Degraded"),
        (runbook(Succeeded=("False", "TimedOut", "timed out after 300s")), "Degraded"),
        (runbook(generation=2, observed=1, Succeeded=("True", "Succeeded", "")), "Progressing"),
    ],
)
def test_argocd_health_check(obj, expected):
    assert health(obj)[0] == expected


def test_argocd_health_message_says_why():
    status, message = health(runbook(Succeeded=("False", "HealthGateFailed", "coverage 0.91 < 0.99")))
    assert (status, message) == ("Degraded", "HealthGateFailed: coverage 0.91 < 0.99")


def test_argocd_cm_holds_the_same_script():
    configmap = yaml.safe_load((GITOPS / "argocd" / "argocd-cm.yaml").read_text())
    assert configmap["data"]["resource.customizations.health.ops.mdops.io_Runbook"] == HEALTH_LUA.read_text()


def test_argocd_and_flux_apply_the_runbooks_folder():
    application = yaml.safe_load((GITOPS / "argocd" / "application.yaml").read_text())
    assert application["spec"]["source"]["path"] == "examples/gitops/runbooks"
    assert application["spec"]["syncPolicy"]["automated"]["prune"] is False
    flux = {d["kind"]: d for d in load_all((GITOPS / "flux" / "runbooks.yaml").read_text())}
    assert flux["Kustomization"]["spec"]["path"] == "./examples/gitops/runbooks"
    assert flux["Kustomization"]["spec"]["wait"] is True and flux["Kustomization"]["spec"]["prune"] is False
    assert (GITOPS / "runbooks" / "kustomization.yaml").exists()


def test_gitops_runbooks_are_accepted_by_the_api_server(
    crds, identities, kustomize_dir, namespace, sa_kubeconfig
):
    """Applied as a GitOps tool applies them: as its ServiceAccount, allowed to apply Runbooks and no more,
    under the identity policies (manifests/identities.yaml), which let it name only itself or nobody."""
    crds.kubectl("create", "serviceaccount", "gitops", "-n", namespace)
    crds.kubectl(
        "create",
        "role",
        "gitops",
        "-n",
        namespace,
        "--verb=get,list,watch,create,patch",
        f"--resource={keys.PLURAL}.{keys.GROUP}",
    )
    crds.kubectl(
        "create",
        "rolebinding",
        "gitops",
        "-n",
        namespace,
        "--role=gitops",
        f"--serviceaccount={namespace}:gitops",
    )
    gitops = sa_kubeconfig(namespace, "gitops")
    docs = kustomize_dir(GITOPS / "runbooks")
    assert {d["kind"] for d in docs} == {"Runbook"}
    docs = [{**d, "metadata": {**d["metadata"], "namespace": namespace}} for d in docs]

    def applied():  # RBAC's cache takes a moment; a refusal by a policy is final
        result = dry_run(crds, namespace, docs, gitops)
        return (result.returncode == 0 or "forbidden: User" not in result.stderr) and result

    result = wait_until(applied, 30, "the GitOps ServiceAccount to be allowed to apply Runbooks")
    assert result.returncode == 0, result.stderr
    assert len({d["spec"]["requestId"] for d in docs}) == len(docs), "request ids must be unique"
