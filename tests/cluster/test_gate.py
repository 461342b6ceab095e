"""The gate on the real control plane: RunbookPolicies hold or refuse a run before it takes its lock, and
RunbookApprovals let it go, reject it or let it expire; a controller restarted meanwhile resumes each run,
and none runs twice.

The change windows are blackouts around now (a session state cannot be chosen by a test, a blackout can).
What counts is what each run's script wrote to its own witness file, never the controller's report.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import os
import signal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from devcluster.components import SESSIONS
from devcluster.processes import answers_200, wait_until
from runbooks import approval, crd, keys, policy
from runbooks.calendar import Session, SessionTable
from runbooks.contract import parse_time
from tests.runbook_client import HOLD, Runbooks, lines, wait_events, write_script

COMMANDS = ("failover", "failback", "drill", "restart", "health_check")
WITNESSED = 'echo "$MDOPS_REQUEST_ID $(date +%s.%N)" >> "$WITNESS"\n'


@pytest.fixture
def rbs(api_client, namespace):
    return Runbooks(api_client, namespace)


@pytest.fixture
def scripts(tmp_path) -> dict[str, str]:
    """Every command's script appends its request id and its own clock to the witness file."""
    for command in COMMANDS:
        write_script(tmp_path / "scripts", command, WITNESSED)
    return {
        "MDOPS_SCRIPTS_DIR": str(tmp_path / "scripts"),
        "MDOPS_SCRIPT_ENV": json.dumps({"WITNESS": str(tmp_path / "witness.log")}),
    }


@pytest.fixture
def witness(tmp_path):
    """The runs as their scripts recorded them: request id -> the script's start time (epoch seconds)."""

    def read() -> dict[str, list[float]]:
        runs: dict[str, list[float]] = {}
        for line in lines(tmp_path / "witness.log"):
            request_id, at = line.split()
            runs.setdefault(request_id, []).append(float(at))
        return runs

    return read


class Gate:
    """Policies and approvals in the test's namespace, made by the admin (who may name anyone)."""

    def __init__(self, api: client.ApiClient, namespace: str):
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace

    def policy(self, name: str, *rules: dict) -> None:
        body = crd.POLICY.manifest(name, {"rules": list(rules)})
        self.custom.create_namespaced_custom_object(
            keys.GROUP, keys.VERSION, self.namespace, policy.PLURAL, body
        )

    def delete_policy(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(
            keys.GROUP, keys.VERSION, self.namespace, policy.PLURAL, name
        )

    def decide(
        self,
        request_id: str,
        approver: str,
        decision: str = "Approve",
        requester: str = "alice",
        runbook_uid: str | None = None,
    ) -> None:
        """A decision, made in a later second than the Runbook (named after its request id): creation times
        are whole seconds, and an approval from the Runbook's own second does not count. ``runbook_uid``:
        the Runbook it names (none: whichever the request id names)."""
        runbook = self.custom.get_namespaced_custom_object(
            keys.GROUP, keys.VERSION, self.namespace, keys.PLURAL, request_id
        )
        later = parse_time(runbook["metadata"]["creationTimestamp"]) + datetime.timedelta(seconds=1)
        wait_until(lambda: datetime.datetime.now(datetime.UTC) >= later, 5, "a second after the Runbook's")
        spec = {"requestId": request_id, "decision": decision, "approver": approver, "requester": requester}
        if runbook_uid is not None:
            spec["runbookUid"] = runbook_uid
        body = crd.APPROVAL.manifest(f"{request_id}-{approver}-{decision.lower()}", spec)
        self.custom.create_namespaced_custom_object(
            keys.GROUP, keys.VERSION, self.namespace, approval.PLURAL, body
        )


@pytest.fixture
def gate(api_client, namespace):
    return Gate(api_client, namespace)


def blackout(seconds_from_now: float, reason: str = "test freeze") -> dict:
    """A blackout from an hour ago until ``seconds_from_now``."""
    now = datetime.datetime.now(datetime.UTC)
    return {
        "start": (now - datetime.timedelta(hours=1)).isoformat(),
        "end": (now + datetime.timedelta(seconds=seconds_from_now)).isoformat(),
        "reason": reason,
    }


def rule(name: str, commands: list[str], **fields) -> dict:
    return {"name": name, "match": {"commands": commands}, **fields}


def reason(runbook: dict, kind: str = "Succeeded") -> str:
    return next(c["reason"] for c in runbook["status"]["conditions"] if c["type"] == kind)


def wait_reason(rbs: Runbooks, name: str, kind: str, wanted: str, timeout: float = 60) -> dict:
    last: list[dict] = []

    def check():
        found = rbs.get(name)
        last[:] = [(found or {}).get("status", {})]
        if any(c["type"] == kind and c["reason"] == wanted for c in last[0].get("conditions", [])):
            return found
        return None

    try:
        return wait_until(check, timeout, f"{name}: {kind} with reason {wanted}")
    except TimeoutError as error:  # what it showed instead
        raise TimeoutError(f"{error}; its status: {last}") from None


def gate_counts(controller) -> dict[tuple[str, str], float]:
    """md_runbook_gate_total by (command, outcome), from the controller's /metrics."""
    found = {}
    for family in text_string_to_metric_families(controller.metrics()):
        for sample in family.samples:
            if sample.name == "md_runbook_gate_total":
                found[sample.labels["command"], sample.labels["outcome"]] = sample.value
    return found


def test_each_window_outcome_wait_reject_dry_run_and_a_policy_change(
    start_controller, gate, rbs, scripts, witness, api_client, namespace
):
    controller = start_controller(**scripts)
    gate.policy(
        "windows",
        rule("drills-wait", ["drill"], blackouts=[blackout(20)], outside="Wait"),  # seen held when busy
        rule("restarts-refused", ["restart"], blackouts=[blackout(3600)], outside="Reject"),
        rule("failbacks-wait-long", ["failback"], blackouts=[blackout(3600)], outside="Wait"),
    )
    rbs.create("drill-1", command="drill")
    rbs.create("restart-1", command="restart")
    rbs.create("restart-dry", command="restart", dry_run=True)
    rbs.create("failback-1", command="failback")
    rbs.create("check-1", command="health_check")  # no rule matches it

    held = wait_reason(rbs, "drill-1", "Queued", "OutsideChangeWindow")
    expected = parse_time(held["status"]["waitingUntil"])
    assert expected is not None and expected > datetime.datetime.now(datetime.UTC)
    queued = next(c for c in held["status"]["conditions"] if c["type"] == "Queued")
    assert "blackout" in queued["message"] and "test freeze" in queued["message"]

    refused = rbs.wait_finished("restart-1")["status"]
    assert (refused["result"], reason(rbs.get("restart-1"))) == ("failed", "OutsideChangeWindow")
    assert "exitCode" not in refused
    assert (refused["requestId"], refused["target"]) == ("restart-1", f"{namespace}/default")  # as a run's
    assert rbs.wait_finished("restart-dry")["status"]["result"] == "success"
    assert rbs.wait_finished("check-1")["status"]["result"] == "success"

    # The held drill starts at its window, not before; the refused restart never ran.
    rbs.wait_finished("drill-1", timeout=60)
    runs = witness()
    assert len(runs["drill-1"]) == 1 and runs["drill-1"][0] >= expected.timestamp()
    assert "restart-1" not in runs and runs["restart-dry"] and runs["check-1"]

    # A policy change applies to runs not started: without its policy, the failback runs at once.
    assert "failback-1" not in witness()
    assert reason(rbs.get("failback-1"), "Queued") == "OutsideChangeWindow"
    gate.delete_policy("windows")
    assert rbs.wait_finished("failback-1", timeout=30)["status"]["result"] == "success"
    assert len(witness()["failback-1"]) == 1

    wait_events(api_client, namespace, keys.KIND, "drill-1", "OutsideChangeWindow", "Started", "Succeeded")
    wait_events(api_client, namespace, keys.KIND, "restart-1", "OutsideChangeWindow")
    counts = gate_counts(controller)
    assert counts[("drill", "held")] == 1 and counts[("restart", "refused")] == 1


def test_approvals_by_others_let_the_run_go_and_a_rejection_ends_it(
    start_controller, gate, rbs, scripts, witness, api_client, namespace
):
    controller = start_controller(**scripts)
    four_eyes = {"required": 2, "expireAfterSeconds": 600}
    gate.policy("four-eyes", rule("failovers", ["failover", "failback"], approvals=four_eyes))
    rbs.create("failover-1", command="failover", requested_by="alice")
    rbs.create("failback-1", command="failback", requested_by="alice")
    awaiting = wait_reason(rbs, "failover-1", "Queued", "AwaitingApproval")
    assert "0 of 2 approvals" in json.dumps(awaiting["status"]["conditions"])
    assert awaiting["status"]["policy"]["approvalsRequired"] == 2

    # Her own, naming another requester: the API server's identity policies (when installed; other tests
    # apply them cluster-wide) cannot tell, the controller reads the Runbook's requester and never counts it.
    gate.decide("failover-1", "alice", requester="mallory")
    gate.decide("failover-1", "bob")

    def counted() -> bool:
        found = rbs.get("failover-1")["status"]
        return "1 of 2 approvals (bob)" in json.dumps(found["conditions"]) and len(found["approvals"]) == 2

    wait_until(counted, 30, "bob's approval counted and alice's recorded as ignored")
    own = next(a for a in rbs.get("failover-1")["status"]["approvals"] if a["approver"] == "alice")
    assert "own request" in own["ignored"]
    assert "failover-1" not in witness()

    gate.decide("failover-1", "carol")
    assert rbs.wait_finished("failover-1")["status"]["result"] == "success"
    assert len(witness()["failover-1"]) == 1
    approvers = {a["approver"] for a in rbs.get("failover-1")["status"]["approvals"] if not a.get("ignored")}
    assert approvers == {"bob", "carol"}

    gate.decide("failback-1", "bob")
    gate.decide("failback-1", "carol", "Reject")
    rejected = rbs.wait_finished("failback-1")["status"]
    assert (rejected["result"], reason(rbs.get("failback-1"))) == ("failed", "Rejected")
    assert "rejected by carol" in rejected["message"]
    assert "failback-1" not in witness()

    wait_events(api_client, namespace, keys.KIND, "failover-1", "AwaitingApproval", "Approved", "Succeeded")
    wait_events(api_client, namespace, keys.KIND, "failback-1", "Rejected")
    counts = gate_counts(controller)
    assert counts[("failover", "approved")] == 1 and counts[("failback", "rejected")] == 1


def test_a_restarted_controller_resumes_held_runs_keeps_the_deadline_and_runs_each_once(
    start_controller, gate, rbs, scripts, witness, api_client, namespace
):
    first = start_controller("first", **scripts)
    gate.policy(
        "desk",
        rule("drills", ["drill"], blackouts=[blackout(25)], outside="Wait"),
        rule("failovers", ["failover"], approvals={"required": 1, "expireAfterSeconds": 600}),
        rule("failbacks", ["failback"], approvals={"required": 1, "expireAfterSeconds": 60}),
    )
    rbs.create("drill-1", command="drill")
    rbs.create("failover-1", command="failover", requested_by="alice")
    rbs.create("failback-1", command="failback", requested_by="alice")
    expected = parse_time(
        wait_reason(rbs, "drill-1", "Queued", "OutsideChangeWindow")["status"]["waitingUntil"]
    )
    wait_reason(rbs, "failover-1", "Queued", "AwaitingApproval")
    deadline = wait_reason(rbs, "failback-1", "Queued", "AwaitingApproval")["status"]["policy"]
    deadline = parse_time(deadline["approvalsExpireAt"])

    os.kill(first.process.popen.pid, signal.SIGKILL)
    gate.decide("failover-1", "bob")  # while no controller runs
    second = start_controller("second", **scripts)
    wait_until(lambda: answers_200(second.metrics_url), 30, "the second controller", [second.process])

    assert rbs.wait_finished("failover-1", timeout=60)["status"]["result"] == "success"
    assert rbs.wait_finished("drill-1", timeout=90)["status"]["result"] == "success"
    expired = rbs.wait_finished("failback-1", timeout=120)
    assert reason(expired) == "ApprovalExpired" and "exitCode" not in expired["status"]
    assert parse_time(expired["status"]["finishedAt"]) >= deadline
    # The deadline was set before the restart and kept: it did not start again from the restart.
    assert parse_time(expired["status"]["policy"]["approvalsExpireAt"]) == deadline

    runs = witness()
    assert len(runs["failover-1"]) == 1 and len(runs["drill-1"]) == 1 and "failback-1" not in runs
    assert runs["drill-1"][0] >= expected.timestamp()
    wait_events(api_client, namespace, keys.KIND, "failback-1", "ApprovalExpired")
    assert gate_counts(second)[("failback", "expired")] == 1


def held_when_killed(start_controller, gate, rbs: Runbooks, held: list[str], **settings: str) -> None:
    """Health checks ``held`` by a freeze (each claimed its request id), then their controller killed."""
    first = start_controller("first", **settings)
    gate.policy("freeze", rule("checks", ["health_check"], blackouts=[blackout(3600)]))
    for name in held:
        rbs.create(name, command="health_check")
    for name in held:
        wait_reason(rbs, name, "Queued", "OutsideChangeWindow")
    os.kill(first.process.popen.pid, signal.SIGKILL)


def test_a_controller_restarted_with_a_lower_cap_keeps_the_runs_it_held_and_refuses_a_new_one(
    start_controller, gate, rbs, scripts, witness
):
    """Three runs a freeze holds were let in (each claimed its request id). The controller is restarted
    with a cap of one: it refuses none of them (a lower cap never refuses what was let in), though it
    admits a new Runbook before them (runs held before come last), and it refuses that one: the namespace
    is over its cap. Ended, the freeze lets the three run, once each."""
    held = ["held-1", "held-2", "held-3"]
    held_when_killed(start_controller, gate, rbs, held, **scripts)
    start_controller("second", **scripts, MDOPS_MAX_UNFINISHED_PER_NAMESPACE="1")
    rbs.create("over", command="health_check")
    assert reason(rbs.wait_finished("over", timeout=60)) == "QuotaExceeded"
    assert all(reason(rbs.get(name)) == "OutsideChangeWindow" for name in held)

    gate.delete_policy("freeze")
    for name in held:
        assert rbs.wait_finished(name, timeout=60)["status"]["result"] == "success"
    assert sorted(witness()) == held and all(len(times) == 1 for times in witness().values())


def test_a_restarted_controller_counts_the_runs_let_in_before_it_admits_one_listed_ahead_of_them(
    start_controller, gate, rbs, scripts, tmp_path
):
    """A cap of three, three runs a freeze holds (let in). A Runbook created while no controller runs, its
    name listed first, came before the restarted controller had seen the held ones: it was let in too, and
    at the freeze's end four ran at once. The scripts' own start and end times are the witness."""
    spans, release = tmp_path / "spans.log", tmp_path / "release"
    span = 'echo "$MDOPS_REQUEST_ID start $(date +%s.%N)" >> "$SPANS"\n'
    write_script(tmp_path / "scripts", "health_check", span + HOLD + span.replace("start", "end"))
    env = {**json.loads(scripts["MDOPS_SCRIPT_ENV"]), "SPANS": str(spans), "RELEASE": str(release)}
    settings = {**scripts, "MDOPS_SCRIPT_ENV": json.dumps(env), "MDOPS_MAX_UNFINISHED_PER_NAMESPACE": "3"}
    held = ["held-1", "held-2", "held-3"]
    held_when_killed(start_controller, gate, rbs, held, **settings)
    rbs.create("a-new", command="health_check")  # listed before the held runs
    second = start_controller("second", **settings)
    wait_until(
        lambda: (
            (rbs.condition("a-new", "Succeeded") or {}).get("reason")
            in ("OutsideChangeWindow", "QuotaExceeded")
        ),
        60,
        "the new Runbook let in or refused",
        [second.process],
    )

    def started() -> set[str]:
        return {line.split()[0] for line in lines(spans) if line.split()[1] == "start"}

    gate.delete_policy("freeze")
    wait_until(
        lambda: set(held) <= started() and ("a-new" in started() or rbs.get("a-new")["status"].get("result")),
        60,
        "every run let in to start",
        [second.process],
    )
    release.touch()
    for name in held:
        assert rbs.wait_finished(name, timeout=60)["status"]["result"] == "success"
    changes = sorted(
        (float(at), 1 if kind == "start" else -1) for _, kind, at in map(str.split, lines(spans))
    )
    at_once = max(itertools.accumulate(change for _, change in changes))
    assert (at_once, reason(rbs.wait_finished("a-new"))) == (3, "QuotaExceeded"), lines(spans)


def test_a_deleted_runbook_is_never_refused_by_the_cap_and_goes_away(
    start_controller, gate, rbs, scripts, witness
):
    """A controller killed as it let go of a deleted Runbook (its request id freed, its finalizer not yet
    removed) leaves it Terminating with no claim in the ledger. The next controller, its namespace at the
    cap, must still remove the finalizer: a cap's refusal would finish it as QuotaExceeded, out of the
    watch, Terminating for ever."""
    held_when_killed(start_controller, gate, rbs, ["held-1"], **scripts)
    rbs.create("withdrawn", command="drill")  # listed after held-1 (by name): held-1 fills the cap first
    rbs.set_finalizers("withdrawn", [keys.FINALIZER])
    rbs.delete("withdrawn")
    second = start_controller("second", **scripts, MDOPS_MAX_UNFINISHED_PER_NAMESPACE="1")
    wait_until(lambda: rbs.gone("withdrawn"), 60, "the deleted Runbook to go", [second.process])
    assert "withdrawn" not in witness() and reason(rbs.get("held-1")) == "OutsideChangeWindow"


def test_a_held_run_deleted_while_no_controller_ran_frees_its_request_id_and_a_run_that_started_never_does(
    start_controller, gate, rbs, scripts, witness, tmp_path
):
    """A held run has no finalizer: deleted while no controller runs, it goes at once, and its claim stayed
    in the ledger. Created again, its request id was a Duplicate ('the earlier run was deleted
    unfinished') though nothing ever ran. A run held, then let through, that started and was deleted by
    force (its finalizer taken away) while no controller ran, keeps its claim: created again, it is a
    Duplicate, and its script ran once."""
    write_script(tmp_path / "scripts", "drill", WITNESSED + f"RELEASE={tmp_path / 'go'}\n" + HOLD)
    first = start_controller("first", **scripts)
    gate.policy(
        "desk",
        rule("checks", ["health_check"], blackouts=[blackout(3600)]),
        rule("drills", ["drill"], approvals={"required": 1, "expireAfterSeconds": 600}),
    )
    rbs.create("held", command="health_check")
    rbs.create("ran", command="drill", requested_by="alice")
    wait_reason(rbs, "held", "Queued", "OutsideChangeWindow")
    wait_reason(rbs, "ran", "Queued", "AwaitingApproval")
    gate.decide("ran", "bob")
    wait_until(lambda: "ran" in witness(), 30, "the approved drill to start")
    os.kill(first.process.popen.pid, signal.SIGKILL)
    rbs.delete("held")
    rbs.set_finalizers("ran", [])
    rbs.delete("ran")
    wait_until(lambda: rbs.gone("held") and rbs.gone("ran"), 30, "both Runbooks to go")
    gate.delete_policy("desk")

    second = start_controller("second", **scripts)
    rbs.create("held-again", command="health_check", request_id="held")
    rbs.create("ran-again", command="drill", request_id="ran", requested_by="alice")
    again = rbs.wait_finished("held-again", timeout=60)
    assert reason(again) == "Succeeded", again["status"].get("message")
    assert reason(rbs.wait_finished("ran-again", timeout=60)) == "Duplicate"
    (tmp_path / "go").touch()
    assert {name: len(times) for name, times in witness().items()} == {"held": 1, "ran": 1}
    assert second.process.popen.poll() is None


def test_a_held_run_that_a_client_put_the_finalizer_on_never_starts_with_its_claim_held(
    start_controller, gate, rbs, scripts, witness, tmp_path
):
    """The claim says that the gate holds a run while it has no finalizer. A client put the controller's
    finalizer on a held run: let through, it started with its claim still saying held, and deleted by
    force while no controller ran, its request id was free again: created again, its script ran twice."""
    write_script(tmp_path / "scripts", "drill", WITNESSED + f"RELEASE={tmp_path / 'go'}\n" + HOLD)
    first = start_controller("first", **scripts)
    gate.policy("desk", rule("drills", ["drill"], approvals={"required": 1, "expireAfterSeconds": 600}))
    rbs.create("ran", command="drill", requested_by="alice")
    wait_reason(rbs, "ran", "Queued", "AwaitingApproval")
    rbs.set_finalizers("ran", [keys.FINALIZER])
    gate.decide("ran", "bob")
    wait_until(lambda: "ran" in witness(), 30, "the approved drill to start")
    os.kill(first.process.popen.pid, signal.SIGKILL)
    rbs.set_finalizers("ran", [])
    rbs.delete("ran")
    wait_until(lambda: rbs.gone("ran"), 30, "the Runbook to go")
    gate.delete_policy("desk")

    second = start_controller("second", **scripts)
    rbs.create("ran-again", command="drill", request_id="ran", requested_by="alice")
    (tmp_path / "go").touch()
    again = rbs.wait_finished("ran-again", timeout=60)
    assert {name: len(times) for name, times in witness().items()} == {"ran": 1}
    assert reason(again) == "Duplicate"
    assert second.process.popen.poll() is None


def test_runs_queued_for_their_lock_are_asked_again_before_they_start(
    start_controller, gate, rbs, scripts, witness, tmp_path
):
    """A freeze that begins, and a withdrawal, while runs the gate let through wait for their target's lock:
    they never start, and the lock goes on to the next."""
    write_script(tmp_path / "scripts", "failover", WITNESSED + f"RELEASE={tmp_path / 'go'}\n" + HOLD)
    start_controller(**scripts)
    gate.policy("four-eyes", rule("drills", ["drill"], approvals={"required": 1, "expireAfterSeconds": 600}))
    rbs.create("holder", command="failover")
    wait_until(lambda: "holder" in witness(), 30, "the holder's script to start")
    rbs.create("withdrawn", command="drill", requested_by="alice")
    wait_reason(rbs, "withdrawn", "Queued", "AwaitingApproval")
    gate.decide("withdrawn", "bob")
    rbs.create("frozen", command="failback")
    rbs.create("last", command="restart")

    def queued_behind(name: str, ahead: str):
        found = rbs.get(name) or {}
        conditions = found.get("status", {}).get("conditions", [])
        queued = next((c for c in conditions if c["type"] == "Queued"), {})
        return found if queued.get("reason") == "Queued" and ahead in queued.get("message", "") else None

    wait_until(lambda: queued_behind("withdrawn", "holder"), 30, "the approved drill to queue for the lock")
    wait_until(lambda: queued_behind("frozen", "withdrawn"), 30, "the failback to queue behind the drill")
    gate.policy("freeze", rule("no-failbacks", ["failback"], blackouts=[blackout(3600)], outside="Reject"))
    gate.decide("withdrawn", "alice", "Reject")  # the requester withdraws her approved request
    (tmp_path / "go").touch()

    assert rbs.wait_finished("holder")["status"]["result"] == "success"
    assert reason(rbs.wait_finished("withdrawn")) == "Rejected"
    assert reason(rbs.wait_finished("frozen")) == "OutsideChangeWindow"
    assert rbs.wait_finished("last")["status"]["result"] == "success"
    assert sorted(witness()) == ["holder", "last"]


def test_a_held_run_looked_at_again_reads_the_policies_and_claims_its_request_id_no_more(
    start_controller, gate, rbs, scripts, witness, cluster
):
    """Each policy change (and the end of each wait, and every 5 minutes) looks again at every held run:
    a look is one read of the policies. It also claimed the run's request id again, a create that failed
    (409) and a read of its Lease: three times the cost, for each of 2,000 runs held by one freeze, again
    in the herd at its end. The claim made at the first look is the run's while it is held."""
    start_controller(**scripts)
    gate.policy("freeze", rule("checks", ["health_check"], blackouts=[blackout(3600)]))
    rbs.create("check-1", command="health_check")
    wait_reason(rbs, "check-1", "Queued", "OutsideChangeWindow")

    before = cluster.request_counts()
    for index in range(1, 4):  # each change, once its look is over: three looks
        gate.policy(f"other-{index}", rule("restarts", ["restart"], blackouts=[blackout(3600)]))
        wait_until(
            lambda index=index: (cluster.request_counts() - before)["LIST runbookpolicies"] >= index,
            30,
            f"look {index} at the held run",
        )
    calls = cluster.request_counts() - before
    assert (calls["POST leases 409"], calls["POST leases"]) == (0, 0), dict(calls)

    gate.delete_policy("freeze")
    assert rbs.wait_finished("check-1", timeout=30)["status"]["result"] == "success"
    assert len(witness()["check-1"]) == 1


def test_a_held_run_ended_not_run_or_deleted_frees_its_request_id_after_a_duplicate_wrote_its_claim(
    start_controller, gate, rbs, scripts, witness
):
    """A held run keeps the claim it made at its first look. A Runbook with its request id but other
    parameters (a re-apply with another reason) is refused, and noted in that claim's Lease, which changes
    its version. Then the held run's approvals expire, or it is deleted: it never ran, so its request id is
    freed, and created again it asks the gate anew. Freed at the version it first claimed, the Lease
    stayed: the new Runbook became a Duplicate of a run that never ran."""
    start_controller(**scripts)
    gate.policy(
        "four-eyes",
        rule("failovers", ["failover"], approvals={"required": 1, "expireAfterSeconds": 60}),
        rule("failbacks", ["failback"], approvals={"required": 1}),
    )
    for command, first in (("failover", "expired"), ("failback", "deleted")):
        rbs.create(first, command=command, requested_by="alice")
        wait_reason(rbs, first, "Queued", "AwaitingApproval")
        rbs.create(f"{first}-other", command=command, request_id=first, reason="another reason")
        assert reason(rbs.wait_finished(f"{first}-other")) == "Duplicate"
        if first == "expired":
            assert reason(rbs.wait_finished(first, timeout=90)) == "ApprovalExpired"
        else:
            rbs.delete(first)
            wait_until(lambda first=first: rbs.get(first) is None, 30, f"{first} to go")
        rbs.create(f"{first}-again", command=command, request_id=first, requested_by="alice")
        wait_reason(rbs, f"{first}-again", "Queued", "AwaitingApproval")
    assert not witness()


def test_an_approval_made_for_a_deleted_runbook_does_not_count_for_the_one_made_again_with_its_request_id(
    start_controller, gate, rbs, scripts, witness
):
    """bob saw drill-1 held for approval; it was deleted and asked for again, with another reason. His
    approval, made after that, names the Runbook he saw (its uid, as the REST API writes it): it does not
    count for the new one, and says why. carol's, made with kubectl without a uid, counts as before."""
    start_controller(**scripts)
    gate.policy("desk", rule("drills", ["drill"], approvals={"required": 1, "expireAfterSeconds": 600}))
    first = rbs.create("drill-1", command="drill", requested_by="alice", reason="the drill bob saw")
    wait_reason(rbs, "drill-1", "Queued", "AwaitingApproval")
    rbs.delete("drill-1")
    wait_until(lambda: rbs.gone("drill-1"), 30, "the first drill-1 to go")
    rbs.create("drill-1", command="drill", requested_by="alice", reason="another drill")
    wait_reason(rbs, "drill-1", "Queued", "AwaitingApproval")

    gate.decide("drill-1", "bob", runbook_uid=first["metadata"]["uid"])

    def ignored() -> dict | None:
        return next(
            (a for a in rbs.get("drill-1")["status"].get("approvals", []) if a["approver"] == "bob"), None
        )

    bobs = wait_until(ignored, 30, "bob's approval recorded")
    assert (
        bobs.get("ignored")
        == f"made for another Runbook with this request id (uid {first['metadata']['uid']})"
    )
    assert reason(rbs.get("drill-1"), "Queued") == "AwaitingApproval"
    assert "drill-1" not in witness()

    gate.decide("drill-1", "carol")
    done = rbs.wait_finished("drill-1")
    assert (reason(done), done["spec"]["reason"]) == ("Succeeded", "another drill")
    assert len(witness()["drill-1"]) == 1
    assert [a["approver"] for a in done["status"]["approvals"] if not a.get("ignored")] == ["carol"]


def test_a_calendar_that_cannot_be_loaded_holds_only_the_runs_that_need_it_and_they_block_no_other(
    start_controller, gate, rbs, scripts, witness, unloadable_calendar
):
    """The venue's calendar cannot be loaded. A dry run, a run that no rule matches and one that only a
    blackout concerns go on, giving their window as a run must without the calendar. One that a rule of
    session states concerns waits at the gate, and one with window auto cannot start: each says why, neither
    fails, and neither keeps the runs behind it on their target (the same one) waiting."""
    start_controller(**scripts, **unloadable_calendar)
    freeze = blackout(10)
    gate.policy(
        "desk",
        rule("drills-while-closed", ["drill"], allowedStates=["closed", "holiday"]),
        rule("restart-freeze", ["restart"], blackouts=[freeze], outside="Wait"),
    )
    rbs.create("failback-auto", command="failback")  # no rule: through the gate, then its window
    rbs.create("drill-1", command="drill", window="night")
    rbs.create("check-1", command="health_check", window="night")
    rbs.create("drill-dry", command="drill", dry_run=True, window="night")
    rbs.create("restart-1", command="restart", window="night")

    for name in ("check-1", "drill-dry", "restart-1"):
        assert rbs.wait_finished(name)["status"]["result"] == "success"
    assert witness()["restart-1"][0] >= parse_time(freeze["end"]).timestamp()  # not before the freeze's end

    def said(name: str, start: str) -> bool:
        condition = rbs.condition(name, "Succeeded") or {}
        message = condition.get("message", "")
        return (
            condition.get("status") == "Unknown"
            and message.startswith(start)
            and "XSHG calendar could not be built" in message
        )

    wait_until(lambda: said("drill-1", "waits at the gate: "), 30, "the held drill to say why")
    wait_until(lambda: said("failback-auto", "cannot start: "), 30, "the auto window to say why")
    assert "drill-1" not in witness() and "failback-auto" not in witness()


def lunch_in(cache: Path, kept: Path, seconds: float) -> datetime.datetime:
    """Keep at ``cache`` the default venue's session table (``kept``) with today's session made to be open
    now and to break for lunch ``seconds`` from now, for an hour: a session state a test can time. The
    lunch break's start."""
    table = SessionTable.from_json(kept.read_text())
    cache.parent.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    today = now.astimezone(ZoneInfo(table.tz)).date()
    hour, lunch = datetime.timedelta(hours=1), now + datetime.timedelta(seconds=seconds)
    session = Session(today, now - hour, now + 2 * hour, lunch, lunch + hour)
    others = [s for s in table.sessions if s.day != today]
    sessions = tuple(sorted([*others, session], key=lambda s: s.open))
    cache.write_text(dataclasses.replace(table, sessions=sessions).to_json())
    return lunch


def test_a_rejection_stops_a_run_held_for_approvals_though_none_are_needed_any_more(
    start_controller, gate, rbs, scripts, witness, kept_calendar, tmp_path
):
    """Approvals are needed while the venue is open. A failover asked for then waits for one; at the lunch
    break it needs none. bob rejected it then (the REST API answers such a rejection 201: the run waits
    for approvals), and his rejection woke the run, which started at once: a rejection wins until the
    start, whatever the session."""
    lunch = lunch_in(tmp_path / "controller" / SESSIONS, kept_calendar(tmp_path / "kept.json"), 30)
    start_controller(**scripts)
    approvals = {"required": 1, "inStates": ["open"], "expireAfterSeconds": 600}
    gate.policy("four-eyes", rule("failovers", ["failover"], approvals=approvals))
    rbs.create("fo-1", command="failover", requested_by="alice")
    wait_reason(rbs, "fo-1", "Queued", "AwaitingApproval")
    assert datetime.datetime.now(datetime.UTC) < lunch, "the failover came to the gate too late to test"
    wait_until(lambda: datetime.datetime.now(datetime.UTC) >= lunch, 60, "the lunch break")
    gate.decide("fo-1", "bob", "Reject")
    rejected = rbs.wait_finished("fo-1", timeout=60)
    assert (reason(rejected), "fo-1" in witness()) == ("Rejected", False), rejected["status"]


def test_a_rejection_ends_a_run_held_for_its_change_window_that_will_need_approvals(
    start_controller, gate, rbs, scripts, witness
):
    """A failover held by a freeze, which a four-eyes rule also matches: bob rejects it while it waits for
    its window (the REST API answers 201). It waited on, queued, until the freeze's end, and would then have
    been rejected; now the rejection ends it at once."""
    start_controller(**scripts)
    gate.policy(
        "freeze-and-four-eyes",
        rule("freeze", ["failover"], blackouts=[blackout(3600)], outside="Wait"),
        rule("four-eyes", ["failover"], approvals={"required": 1, "expireAfterSeconds": 600}),
    )
    rbs.create("fo-1", command="failover", requested_by="alice")
    wait_reason(rbs, "fo-1", "Queued", "OutsideChangeWindow")
    gate.decide("fo-1", "bob", "Reject")
    rejected = rbs.wait_finished("fo-1", timeout=30)
    assert (reason(rejected), "fo-1" in witness()) == ("Rejected", False), rejected["status"]
    assert "rejected by bob" in rejected["status"]["message"]
