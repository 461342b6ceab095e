"""The local stack end to end: the session `make demo` runs, asserted on Runbook status, the API's status,
the metrics summary (as Prometheus scrapes the simulator) and timeseries."""

from __future__ import annotations

import json
import re
import subprocess
import uuid

import httpx
import pytest

from devcluster.processes import wait_until
from devcluster.prometheus import DASHBOARD, alert_rules
from runbooks import models


@pytest.fixture(scope="module")
def api(stack):
    with httpx.Client(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.admin_token}"}, timeout=60
    ) as c:
        yield c


def execute(api, **body):
    response = api.post(
        "/api/ops/runbooks/execute", json={"request_id": f"e2e-{uuid.uuid4().hex[:8]}", **body}
    )
    assert response.status_code == 200, response.text
    return response.json()


def kubectl_run(stack, name: str, **spec) -> dict:
    kubectl = [str(stack.cluster.kubectl_path), f"--kubeconfig={stack.cluster.kubeconfig}", "-n", "mdops"]
    manifest = json.dumps(models.manifest(name, spec))
    subprocess.run([*kubectl, "apply", "-f", "-"], input=manifest, text=True, check=True)
    subprocess.run([*kubectl, "wait", f"rb/{name}", "--for=condition=Succeeded", "--timeout=60s"], check=True)
    return json.loads(subprocess.run([*kubectl, "get", f"rb/{name}", "-o", "json"], capture_output=True,
                                      text=True, check=True).stdout)  # fmt: skip


def summary(api) -> dict:
    response = api.get("/api/ops/metrics/summary")
    assert response.status_code == 200
    return response.json()


def sim_status(stack) -> dict:
    return httpx.get(f"{stack.sim_url}/admin/status").json()


def test_operating_the_platform_through_the_api_and_kubectl(stack, api):
    # Prometheus has scraped the healthy simulator.
    healthy = wait_until(
        lambda: (s := summary(api))["coverage_ratio"]["value"] == 1 and s, 30, "a first scrape"
    )
    assert healthy["coverage_ratio"]["context"]["expected_total"] == sim_status(stack)["expected_total"]
    assert healthy["throughput_mps"]["value"] > 0

    check = execute(api, command="health_check", reason="e2e")
    assert check["runbook"]["status"] == "success" and check["health"]["coverage_ratio"] == 1

    applied = kubectl_run(stack, "e2e-drill", command="drill", enforce=True)
    drill = applied["status"]
    assert drill["result"] == "success" and drill["health"]["failover_latency_ms"] > 0
    assert applied["spec"]["requestedBy"] == ""  # nobody named: the API server checks names, fills in none
    assert sim_status(stack)["active_source"] == "primary"

    failover = execute(api, command="failover", reason="e2e failover")
    assert failover["runbook"]["status"] == "success"
    latency = sim_status(stack)["failover_latency_ms"]
    assert api.get("/api/ops/status").json()["active_profile"] == "backup"
    # The summary follows the simulator through Prometheus.
    wait_until(
        lambda: abs((summary(api)["failover_latency_ms"]["value"] or 0) - latency) < 1, 30,
        "Prometheus to report the new failover latency",
    )  # fmt: skip

    kubectl_run(stack, "e2e-failback", command="failback")
    assert api.get("/api/ops/status").json()["active_profile"] == "primary"

    httpx.post(f"{stack.sim_url}/admin/faults", json={"lose_instruments": 200})
    try:
        gate = api.post("/api/ops/runbooks/execute", json={"command": "health_check", "enforce": True})
        assert gate.status_code == 200
        assert (gate.json()["runbook"]["status"], gate.json()["runbook"]["exit_code"]) == ("failed", 3)
        assert gate.json()["health"]["gate"]["passed"] is False
        wait_until(
            lambda: summary(api)["coverage_ratio"]["value"] < 0.99, 30, "Prometheus to see lost coverage"
        )
        wait_until(lambda: summary(api)["runbook_exit_code"]["value"] == 3, 30, "the exit code metric")
    finally:
        httpx.delete(f"{stack.sim_url}/admin/faults")

    before = api.get("/api/ops/status").json()
    plan = execute(api, command="failover", dry_run=True)
    assert plan["runbook"]["status"] == "success"
    after = api.get("/api/ops/status").json()
    assert sim_status(stack)["active_source"] == "primary"
    for field in ("environment_mode", "active_profile", "active_window", "last_exit_codes", "last_health"):
        assert after[field] == before[field], field
    assert after["last_exit_codes"]["health_check"] == 3


def test_timeseries_has_points_in_exchange_time(stack, api):
    wait_until(lambda: summary(api)["throughput_mps"]["value"], 30, "a throughput sample")
    params = {"metric": "md_throughput_mps", "minutes": 5, "step_seconds": 1}

    def points():
        response = api.get("/api/ops/metrics/timeseries", params=params).json()
        return response["points"] and response

    body = wait_until(points, 30, "timeseries points")
    assert body["unit"] == "msg/s"
    assert all(point["timestamp"].endswith("+08:00") for point in body["points"])
    assert any(point["value"] > 0 for point in body["points"])


def test_the_viewer_token_reads_but_may_not_execute(stack):
    viewer = {"Authorization": f"Bearer {stack.viewer_token}"}
    assert httpx.get(f"{stack.api_url}/api/ops/status", headers=viewer).status_code == 200
    denied = httpx.post(f"{stack.api_url}/api/ops/runbooks/execute", headers=viewer, json={"command": "stop"})
    assert denied.status_code == 403


def test_the_stacks_secrets_are_readable_by_their_owner_only(stack):
    """What shows a token or a key: the tokens file, Prometheus' bearer token, the logs, the keys."""
    secrets = [stack.workdir / "tokens.yaml", stack.cluster.kubeconfig, *stack.logs.glob("*.log")]
    secrets += [*stack.cluster.logs.glob("*.log")]
    secrets += [*(stack.workdir / "prometheus").glob("*.token"), *stack.cluster.workdir.rglob("*.key")]
    assert len(secrets) > 5
    for path in secrets:
        assert path.stat().st_mode & 0o077 == 0, path


def rule_health(stack) -> dict[str, dict[str, str]]:
    """The rule groups the stack's Prometheus evaluates: ``{group: {alert: health}}``."""
    groups = httpx.get(f"{stack.prometheus.url}/api/v1/rules", timeout=30).json()["data"]["groups"]
    return {group["name"]: {rule["name"]: rule["health"] for rule in group["rules"]} for group in groups}


def test_the_stacks_prometheus_evaluates_mdops_alerts(stack):
    shipped = {group["name"]: [rule["alert"] for rule in group["rules"]] for group in alert_rules()["groups"]}
    assert {name: list(rules) for name, rules in rule_health(stack).items()} == shipped

    def evaluated() -> bool:  # "unknown" until a rule's first evaluation, "err" if it failed
        return all(health == "ok" for rules in rule_health(stack).values() for health in rules.values())

    wait_until(evaluated, 30, "every rule evaluated without an error")


def test_every_query_of_the_dashboard_runs_on_what_the_stack_exports(stack, api):
    # A drill (it ends on the source it started from): a finished run and a measured switch, the last
    # series that exist only once something happened.
    execute(api, command="drill")
    prometheus = stack.prometheus.url
    panels = json.loads(DASHBOARD.read_text())["panels"]
    queries = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    read = {query: set(re.findall(r"\b(?:md|consumer)_[a-z_]+", query)) for query in queries}
    assert len(queries) >= 10 and all(read.values())

    def missing() -> set[str]:
        exported = httpx.get(f"{prometheus}/api/v1/label/__name__/values", timeout=30).json()["data"]
        return set().union(*read.values()) - set(exported)

    wait_until(lambda: not missing(), 30, "Prometheus to have scraped every metric the dashboard reads")
    for query in queries:
        answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=30).json()
        assert answer["status"] == "success", (query, answer)
