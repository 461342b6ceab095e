"""Retention, the namespace's cap and the audit trail, on the real control plane with a real controller:
what a script wrote to its own witness file says how often it ran; the audit lines are read from the
controller's own output."""

from __future__ import annotations

import json
import os
import signal

from kubernetes import client

from controller import audit, ledger
from devcluster.processes import wait_until
from tests.runbook_client import HOLD, Runbooks, lines, write_script

WITNESS = 'echo "$MDOPS_REQUEST_ID" >> "$RUNS"\n'


def audit_lines(controller) -> list[dict]:
    """The controller's audit lines: JSON objects alone on their line, from the logger mdops.audit."""
    found = []
    for text in controller.process.log.read_text(errors="replace").splitlines():
        if text.startswith("{"):
            record = json.loads(text)
            if record.get("logger") == audit.LOGGER:
                found.append(record)
    return found


def transitions(controller, name: str) -> list[str]:
    return [record["transition"] for record in audit_lines(controller) if record["name"] == name]


def test_retention_deletes_beyond_the_history_and_a_recreated_runbook_is_a_duplicate_that_never_runs(
    start_controller, api_client, namespace, tmp_path
):
    witness = tmp_path / "runs.log"
    scripts = tmp_path / "scripts"
    write_script(scripts, "drill", WITNESS)
    controller = start_controller(
        MDOPS_SCRIPTS_DIR=str(scripts),
        MDOPS_SCRIPT_ENV=json.dumps({"RUNS": str(witness)}),
        MDOPS_RETENTION_INTERVAL_SECONDS="1",
        MDOPS_RETENTION_SUCCESSFUL_PER_COMMAND="1",
    )
    rbs = Runbooks(api_client, namespace)
    manifest = {"command": "drill", "request_id": "req-first", "requested_by": "gitops", "profile": "backup"}
    rbs.create("first", **manifest)
    assert rbs.wait_finished("first")["status"]["result"] == "success"
    rbs.create("second", command="drill", request_id="req-second")
    rbs.wait_finished("second")
    # Only the newest successful drill is kept: retention deletes the first.
    wait_until(lambda: rbs.gone("first"), 30, "retention to delete the first drill")

    # A GitOps tool applies the same manifest again: the ledger still knows its request id.
    rbs.create("first", **manifest)
    again = rbs.wait_finished("first")["status"]
    assert again["duplicateOf"] == f"{namespace}/first"
    assert (again["result"], again["exitCode"]) == ("success", 0)
    reasons = {c["type"]: c["reason"] for c in again["conditions"]}
    assert reasons["Succeeded"] == "Duplicate"
    # The re-created one finished now: it is the newest, and the second drill goes instead.
    wait_until(lambda: rbs.gone("second"), 30, "retention to delete the second drill")
    assert not rbs.gone("first")
    assert lines(witness) == ["req-first", "req-second"]  # each request ran once

    # The audit trail, from the controller's own output: who, what, when and the outcome of each step.
    wait_until(lambda: "Duplicate" in transitions(controller, "first"), 10, "the duplicate's audit line")
    assert transitions(controller, "first") == ["Started", "Succeeded", "Deleted", "Duplicate"]
    started, succeeded, deleted, duplicate = (r for r in audit_lines(controller) if r["name"] == "first")
    assert started["who"] == "gitops" and started["requestId"] == "req-first"
    assert (started["command"], started["namespace"], started["profile"]) == ("drill", namespace, "backup")
    assert (succeeded["result"], succeeded["exitCode"], succeeded["reason"]) == ("success", 0, "Succeeded")
    assert deleted["message"] == "deleted by retention (HistoryLimit)" and deleted["result"] == "success"
    assert (duplicate["reason"], duplicate["exitCode"]) == ("Duplicate", 0)
    assert started["when"] <= succeeded["when"] <= deleted["when"] <= duplicate["when"]


def test_a_runbook_beyond_the_namespaces_cap_fails_at_once_and_its_request_id_stays_free(
    start_controller, api_client, namespace, tmp_path, cluster
):
    witness, release = tmp_path / "runs.log", tmp_path / "release"
    scripts = tmp_path / "scripts"
    write_script(scripts, "health_check", WITNESS + HOLD)
    controller = start_controller(
        MDOPS_SCRIPTS_DIR=str(scripts),
        MDOPS_SCRIPT_ENV=json.dumps({"RUNS": str(witness), "RELEASE": str(release)}),
        MDOPS_MAX_UNFINISHED_PER_NAMESPACE="2",
    )
    rbs = Runbooks(api_client, namespace)
    for name in ("held-1", "held-2"):
        rbs.create(name, command="health_check")
    wait_until(lambda: sorted(lines(witness)) == ["held-1", "held-2"], 30, "two held runs")

    rbs.create("over", command="health_check", request_id="req-over")
    status = rbs.wait_finished("over")["status"]
    reasons = {c["type"]: c["reason"] for c in status["conditions"]}
    assert reasons["Succeeded"] == "QuotaExceeded" and status["exitCode"] == 125
    assert "2 Runbooks in this namespace are unfinished, at the cap of 2" in status["message"]
    lease = cluster.kubectl("get", "lease", "-n", namespace, ledger.lease_name("req-over"), check=False)
    assert lease.returncode != 0 and "NotFound" in lease.stderr  # it claimed no request id
    assert "over" in {r["name"] for r in audit_lines(controller) if r["transition"] == "QuotaExceeded"}

    release.touch()
    # Finished, as the controller counts them: their last audit line comes as they leave its count.
    for name in ("held-1", "held-2"):
        wait_until(lambda name=name: "Succeeded" in transitions(controller, name), 30, f"{name} to finish")
    rbs.delete("over")
    wait_until(lambda: rbs.gone("over"), 30, "the refused Runbook to go")
    rbs.create("over", command="health_check", request_id="req-over")  # tried again: now it runs
    again = rbs.wait_finished("over")["status"]
    assert again["result"] == "success", again
    assert sorted(lines(witness)) == ["held-1", "held-2", "req-over"]


def test_a_controller_restarted_with_a_lower_cap_refuses_none_of_the_runs_it_let_in_unseen(
    start_controller, api_client, namespace, tmp_path, cluster
):
    """One run at a time: the first health check runs, two more were let in (each claimed its request id)
    and wait for a slot, their statuses still empty. A controller restarted with a cap of one adopts the
    first and refuses neither of the others, which the ledger shows were let in (the claim it reads there
    is theirs: not claimed again, a create refused and a read more each); a new Runbook is refused, the
    namespace being over its cap. The three run, once each."""
    witness, release = tmp_path / "runs.log", tmp_path / "release"
    scripts = tmp_path / "scripts"
    write_script(scripts, "health_check", WITNESS + HOLD)
    settings = {
        "MDOPS_SCRIPTS_DIR": str(scripts),
        "MDOPS_SCRIPT_ENV": json.dumps({"RUNS": str(witness), "RELEASE": str(release)}),
        "MDOPS_MAX_PARALLEL": "1",
    }
    first = start_controller(**settings)
    rbs = Runbooks(api_client, namespace)
    rbs.create("check-1", command="health_check")
    wait_until(lambda: lines(witness) == ["check-1"], 30, "the first check to start")
    leases = client.CoordinationV1Api(api_client)
    for name in ("check-2", "check-3"):
        rbs.create(name, command="health_check")
    for name in ("check-2", "check-3"):
        wait_until(lambda name=name: claimed(leases, namespace, name), 30, f"{name} to claim its request id")
        assert not (rbs.get(name) or {}).get("status")  # nothing says so but the ledger
    os.kill(first.process.popen.pid, signal.SIGKILL)
    before = cluster.request_counts()
    start_controller(**settings, MDOPS_MAX_UNFINISHED_PER_NAMESPACE="1")  # the same state: it adopts
    rbs.create("over", command="health_check")
    over = rbs.wait_finished("over", timeout=60)["status"]
    assert {c["type"]: c["reason"] for c in over["conditions"]}["Succeeded"] == "QuotaExceeded"

    release.touch()
    for name in ("check-1", "check-2", "check-3"):
        status = rbs.wait_finished(name, timeout=90)["status"]
        assert status["result"] == "success", (name, status.get("message"))
    assert sorted(lines(witness)) == ["check-1", "check-2", "check-3"]
    # The run going on claims its request id again, as any adopted run; the two others, not.
    assert (cluster.request_counts() - before)["POST leases 409"] == 1


def claimed(leases: client.CoordinationV1Api, namespace: str, request_id: str) -> bool:
    try:
        leases.read_namespaced_lease(ledger.lease_name(request_id), namespace)
    except client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True
