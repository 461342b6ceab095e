"""``POST /api/ops/runbooks/{request_id}/approve`` and ``/reject`` on the real API process, running as mdops's
ServiceAccount with its packaged Role, under the identity policies: a decision is a RunbookApproval made as
the token's name, which the API server accepts from that account only because its Role allows it.

No controller runs here: the runs stay pending, as a run on its way to the gate; the states a run reaches
later are written as only the controller does. A policy asks for approvals on failovers, as a namespace
with four eyes has one: a decision on a run that no policy holds would not count, and is refused.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cli.errors import Exit
from devcluster.controlplane import REPO
from devcluster.processes import wait_until
from runbooks import approval, crd, keys, models, policy
from runbooks.contract import parse_time
from tests.api.conftest import as_service_account, http

TOKENS = {
    "alice": ("alice-token-for-tests", ["runbooks:execute", "runbooks:approve", "status:read"]),
    "bob": ("bob-token-for-the-tests", ["runbooks:approve"]),
    "carol": ("carol-token-for-tests", ["status:read"]),
    "Alice": ("alice-token-in-capitals", ["runbooks:approve"]),  # alice's name, another spelling
}


def token(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name][0]}"}


FOUR_EYES = {
    "apiVersion": f"{keys.GROUP}/{keys.VERSION}",
    "kind": policy.KIND,
    "metadata": {"name": "four-eyes"},
    "spec": {
        "rules": [{"name": "failover", "match": {"commands": ["failover"]}, "approvals": {"required": 1}}]
    },
}


@pytest.fixture
def api(start_server, identities, namespace, tmp_path):
    identities.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(FOUR_EYES))
    return as_service_account(start_server, identities, namespace, tmp_path, TOKENS)


def execute(api, who: str, request_id: str) -> None:
    body = {"command": "failover", "request_id": request_id, "reason": "four eyes"}
    code, _, text = http("POST", f"{api.url}/api/ops/runbooks/execute", body, token(who))
    assert code == 202, text  # pending: no controller


def decide(api, who: str, request_id: str, decision: str = "approve", body: dict | None = None):
    code, _, text = http("POST", f"{api.url}/api/ops/runbooks/{request_id}/{decision}", body, token(who))
    return code, json.loads(text) if text else None


def approvals(cluster, namespace: str) -> list[dict]:
    listed = cluster.kubectl("get", approval.PLURAL, "-n", namespace, "-o", "json")
    return [
        item["spec"] | {"labels": item["metadata"].get("labels")}
        for item in json.loads(listed.stdout)["items"]
    ]


def shown(api, request_id: str) -> str:
    """The run's created_at as the runs list (and a run's page) shows it."""
    code, _, text = http("GET", f"{api.url}/api/ops/runbooks?limit=200", headers=token("alice"))
    assert code == 200, text
    return next(r["created_at"] for r in json.loads(text)["runbooks"] if r["request_id"] == request_id)


def uid(cluster, namespace: str, name: str) -> str:
    listed = cluster.kubectl("get", "rb", name, "-n", namespace, "-o", "json")
    return json.loads(listed.stdout)["metadata"]["uid"]


def mdops(api, who: str, *args: str, home: Path) -> subprocess.CompletedProcess:
    """The command line as ``who`` at a shell that set MDOPS_API_URL and MDOPS_API_TOKEN (no config); this
    checkout's (the venv's mdops may be installed, editable, from another)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "HOME": str(home),
        "MDOPS_API_URL": api.url,
        "MDOPS_API_TOKEN": TOKENS[who][0],
    }
    command = [str(Path(sys.executable).parent / "mdops"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_mdops_approve_and_reject_decide_as_the_rest_api_does(api, identities, namespace, tmp_path):
    """The person on shift decides from the command line: one RunbookApproval each, made as the token's
    name; the API's refusal of an approval of one's own run is exit 77 in its own words."""
    execute(api, "alice", "fo-cli")
    own = mdops(api, "alice", "approve", "fo-cli", home=tmp_path)
    assert own.returncode == Exit.NOT_ALLOWED and "nobody approves their own request" in own.stderr
    # Not "use a token that has the permission": alice's has it, and another person's is not hers to use.
    assert own.stderr.endswith(
        "; hint: another person approves it (four eyes); mdops reject fo-cli withdraws it\n"
    )
    lacking = mdops(api, "carol", "approve", "fo-cli", home=tmp_path)
    assert (
        lacking.returncode == Exit.NOT_ALLOWED and "lacks the permission 'runbooks:approve'" in lacking.stderr
    )
    assert lacking.stderr.endswith("; hint: use a token that has the permission (--context, --token)\n")
    # An unknown request id: the runs list has the recent ones, for a token that may read it (not bob's).
    for who, hint in (
        ("alice", "`mdops runs` lists the recent request ids"),
        ("bob", "`mdops runs`, with a token that has status:read, lists the recent request ids"),
    ):
        unknown = mdops(api, who, "approve", "fo-cli-typo", home=tmp_path)
        assert unknown.returncode == Exit.NOT_FOUND and unknown.stderr.endswith(f"; hint: {hint}\n"), (
            unknown.stderr
        )
    approved = mdops(api, "bob", "approve", "fo-cli", "--comment", "backup checked", home=tmp_path)
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout == "approved fo-cli (asked for by alice), as bob: backup checked\n"
    again = mdops(api, "bob", "reject", "fo-cli", home=tmp_path)
    assert again.returncode == Exit.CONFLICT, again.stderr  # one decision per person
    withdrawn = mdops(api, "alice", "reject", "fo-cli", "-o", "json", home=tmp_path)
    assert withdrawn.returncode == 0, withdrawn.stderr
    assert json.loads(withdrawn.stdout)["decision"] == "Reject"
    made = sorted((a["approver"], a["decision"], a["comment"]) for a in approvals(identities, namespace))
    assert made == [("alice", "Reject", ""), ("bob", "Approve", "backup checked")]


def test_mdops_decides_only_on_the_run_created_when_it_was_shown(api, identities, namespace, tmp_path):
    """bob read alice's failover in mdops runs (its CREATED) and mdops get (its uid); it was deleted and
    asked for again. Approving it --created-at that time, or --uid that uid, is exit 73 in the API's words
    and decides nothing; with the new run's, it is his decision, bound to that Runbook. A time without its
    UTC offset, or a uid that is none, is refused before asking."""
    execute(api, "alice", "fo-cli2")
    listed = mdops(api, "alice", "runs", "-o", "json", home=tmp_path)
    [seen] = [r["created_at"] for r in json.loads(listed.stdout) if r["request_id"] == "fo-cli2"]
    first = json.loads(mdops(api, "alice", "get", "fo-cli2", "-o", "json", home=tmp_path).stdout)
    identities.kubectl("delete", "rb", "fo-cli2", "-n", namespace)
    later = parse_time(seen) + datetime.timedelta(seconds=1)  # creation times are whole seconds

    def gone() -> bool:
        return http("GET", f"{api.url}/api/ops/runbooks/fo-cli2", headers=token("alice"))[0] == 404

    wait_until(
        lambda: gone() and datetime.datetime.now(datetime.UTC) >= later, 30, "fo-cli2 gone, a second on"
    )
    execute(api, "alice", "fo-cli2")
    stale = mdops(api, "bob", "approve", "fo-cli2", "--created-at", seen, home=tmp_path)
    assert stale.returncode == Exit.CONFLICT, stale.stderr
    assert f"run 'fo-cli2' is not the one you named (created at {seen})" in stale.stderr
    assert stale.stderr.count("nothing was decided") == 1
    # What to do next is to look at the run again (approve has no --request-id to give), which bob, with
    # runbooks:approve alone, does with another token.
    assert stale.stderr.endswith(
        "; hint: this token may not read the run (it lacks status:read): mdops get fo-cli2 with a token that "
        "has it shows the run as it is now\n"
    ), stale.stderr
    naive = mdops(api, "bob", "reject", "fo-cli2", "--created-at", seen[:19], home=tmp_path)
    assert naive.returncode == Exit.USAGE and "no UTC offset" in naive.stderr
    now = shown(api, "fo-cli2")
    other = mdops(api, "bob", "reject", "fo-cli2", "--uid", first["runbook"]["uid"], home=tmp_path)
    assert other.returncode == Exit.CONFLICT, other.stderr
    assert f"run 'fo-cli2' is not the one you named (Runbook {first['runbook']['uid']}); " in other.stderr
    for wrong in ("fo-cli2", ""):
        refused = mdops(api, "bob", "reject", "fo-cli2", "--uid", wrong, home=tmp_path)
        assert refused.returncode == Exit.USAGE and "not a uid" in refused.stderr, refused.stderr
    assert approvals(identities, namespace) == []
    made_again = json.loads(mdops(api, "alice", "get", "fo-cli2", "-o", "json", home=tmp_path).stdout)
    assert made_again["runbook"]["created_at"] == now
    approved = mdops(
        api,
        "bob",
        "approve",
        "fo-cli2",
        "--created-at",
        now,
        "--uid",
        made_again["runbook"]["uid"],
        home=tmp_path,
    )
    assert approved.returncode == 0, approved.stderr
    [made] = approvals(identities, namespace)
    assert (made["approver"], made["runbookUid"]) == ("bob", uid(identities, namespace, "fo-cli2"))


def test_a_mistyped_uid_is_said_to_name_another_run_and_only_a_reader_is_told_the_run_s(
    api, identities, namespace, tmp_path
):
    """fo-mt was never asked for again: a uid (or a time) that is not its own is a typo, or a run made again.
    The API says that it names another run than the request id's, not that the run was created again; the
    run's own uid and time only to a token that may read it (alice, status:read), not to bob (runbooks:approve
    alone). mdops's hint is what the token may do: mdops get for alice; for bob, another token."""
    execute(api, "alice", "fo-mt")
    now, real, typo = shown(api, "fo-mt"), uid(identities, namespace, "fo-mt"), str(uuid.uuid4())
    later = (parse_time(now) + datetime.timedelta(hours=1)).isoformat()
    for named, body in ((f"Runbook {typo}", {"uid": typo}), (f"created at {later}", {"created_at": later})):
        code, refused = decide(api, "bob", "fo-mt", body=body)
        assert code == 409, refused
        assert refused["detail"] == (
            f"run 'fo-mt' is not the one you named ({named}); either the run you named was deleted and its "
            "request id asked for again since you looked, or what you gave is mistyped: nothing was decided"
        )
        code, refused = decide(api, "alice", "fo-mt", "reject", body=body)
        assert code == 409, refused
        assert refused["detail"].startswith(
            f"run 'fo-mt' is not the one you named ({named}): its request id names Runbook {real}, created "
            f"at {now}; either the run you named"
        ), refused
    bob = mdops(api, "bob", "approve", "fo-mt", "--uid", typo, home=tmp_path)
    assert bob.returncode == Exit.CONFLICT, bob.stderr
    assert "created again" not in bob.stderr and real not in bob.stderr
    assert bob.stderr.endswith(
        "; hint: this token may not read the run (it lacks status:read): mdops get fo-mt with a token that "
        "has it shows the run as it is now\n"
    ), bob.stderr
    alice = mdops(api, "alice", "reject", "fo-mt", "--uid", typo, home=tmp_path)
    assert alice.returncode == Exit.CONFLICT, alice.stderr
    assert real in alice.stderr and alice.stderr.endswith(
        "; hint: mdops get fo-mt shows the run as it is now\n"
    )
    assert approvals(identities, namespace) == []


def test_another_person_approves_and_the_requester_may_only_withdraw(api, identities, namespace):
    execute(api, "alice", "fo-1")
    assert decide(api, "alice", "fo-1") == (
        403,
        {"detail": "'alice' asked for run 'fo-1': nobody approves their own request"},
    )
    # The count tells names apart without case: Alice's approval would not count, so it is not made.
    assert decide(api, "Alice", "fo-1") == (
        403,
        {
            "detail": "'Alice' is 'alice' to the count (names are told apart without case, spaces or "
            "invisible characters), who asked for run 'fo-1': nobody approves their own request"
        },
    )
    code, made = decide(api, "bob", "fo-1", body={"comment": "backup checked"})
    assert code == 201, made
    assert (made["approver"], made["requester"], made["decision"], made["comment"]) == (
        "bob",
        "alice",
        "Approve",
        "backup checked",
    )
    assert made["created_at"].endswith("+08:00")
    assert decide(api, "bob", "fo-1", "reject")[0] == 409  # one decision per person: not changed
    assert decide(api, "alice", "fo-1", "reject")[0] == 201  # withdrawing one's own request
    # The decisions are Kubernetes objects, made as the tokens' names by the API's ServiceAccount.
    assert sorted(approvals(identities, namespace), key=lambda a: a["approver"]) == [
        {
            "requestId": "fo-1",
            "decision": "Reject",
            "approver": "alice",
            "requester": "alice",
            "comment": "",
            "runbookUid": uid(identities, namespace, "fo-1"),
            "labels": {keys.MANAGED_BY: keys.API_MANAGER},
        },
        {
            "requestId": "fo-1",
            "decision": "Approve",
            "approver": "bob",
            "requester": "alice",
            "comment": "backup checked",
            "runbookUid": uid(identities, namespace, "fo-1"),
            "labels": {keys.MANAGED_BY: keys.API_MANAGER},
        },
    ]
    selected = identities.kubectl(
        "get", "rba", "-n", namespace, "--field-selector", "spec.requestId=fo-1", "-o", "name"
    ).stdout.split()
    assert len(selected) == 2


def test_a_runbook_made_again_with_a_request_id_is_decided_on_again(api, identities, namespace):
    """Bob rejected the first failover; it was deleted and asked for again (its request id freed): his new
    decision is on another Runbook, not a change of the old one. Each approval names the Runbook the API
    checked, so that the count never takes one for the other."""
    execute(api, "alice", "fo-4")
    first = uid(identities, namespace, "fo-4")
    assert decide(api, "bob", "fo-4", "reject")[0] == 201
    identities.kubectl("delete", "rb", "fo-4", "-n", namespace)

    def gone() -> bool:
        return http("GET", f"{api.url}/api/ops/runbooks/fo-4", headers=token("alice"))[0] == 404

    wait_until(gone, 30, "the API to see the run deleted")
    execute(api, "alice", "fo-4")
    code, made = decide(api, "bob", "fo-4")
    assert code == 201, made
    assert decide(api, "bob", "fo-4", "reject")[0] == 409  # still one decision per person on this Runbook
    decisions = sorted((a["decision"], a["runbookUid"]) for a in approvals(identities, namespace))
    assert decisions == [("Approve", uid(identities, namespace, "fo-4")), ("Reject", first)]
    assert first != uid(identities, namespace, "fo-4")


def test_a_decision_on_the_run_the_client_saw_is_refused_once_it_was_made_again(api, identities, namespace):
    """Carol's page showed alice's failover fo-5; it was deleted and asked for again with the same request
    id. Bob approving from the old page (its created_at) is refused, and nothing is recorded: the new
    Runbook, perhaps with other parameters, is not what he saw. From the new page, it is his decision."""
    execute(api, "alice", "fo-5")
    seen = shown(api, "fo-5")
    identities.kubectl("delete", "rb", "fo-5", "-n", namespace)
    later = parse_time(seen) + datetime.timedelta(seconds=1)  # creation times are whole seconds

    def gone() -> bool:
        return http("GET", f"{api.url}/api/ops/runbooks/fo-5", headers=token("alice"))[0] == 404

    wait_until(lambda: gone() and datetime.datetime.now(datetime.UTC) >= later, 30, "fo-5 gone, a second on")
    execute(api, "alice", "fo-5")
    now = shown(api, "fo-5")
    for verb in ("approve", "reject"):
        code, body = decide(api, "bob", "fo-5", verb, body={"created_at": seen, "comment": "as I saw it"})
        assert code == 409, body
        assert body["detail"] == (
            f"run 'fo-5' is not the one you named (created at {seen}); either the run you named was deleted "
            "and its request id asked for again since you looked, or what you gave is mistyped: nothing was "
            "decided"
        )  # bob may not read alice's run (runbooks:approve alone): the API says nothing of it
    code, body = decide(api, "alice", "fo-5", "reject", body={"created_at": seen})
    assert code == 409 and body["detail"].startswith(
        f"run 'fo-5' is not the one you named (created at {seen}): its request id names Runbook "
        f"{uid(identities, namespace, 'fo-5')}, created at {now}; either "
    ), body
    assert approvals(identities, namespace) == []
    code, made = decide(api, "bob", "fo-5", body={"created_at": now})
    assert code == 201, made
    [approved] = approvals(identities, namespace)
    assert approved["runbookUid"] == uid(identities, namespace, "fo-5")
    # The same instant in another zone names the same Runbook; a time that is no date is refused.
    utc = parse_time(now).astimezone(datetime.UTC).isoformat()
    assert decide(api, "alice", "fo-5", "reject", body={"created_at": utc})[0] == 201
    for wrong in (1764900000, "yesterday", "2026-12-05T10:00:00"):  # a number, no time, no offset
        code, body = decide(api, "bob", "fo-5", "reject", body={"created_at": wrong})
        assert (code, body["detail"][0]["loc"]) == (422, ["body", "created_at"]), body


def test_a_run_made_again_within_the_second_of_the_one_seen_is_told_apart_by_its_uid(
    api, identities, namespace
):
    """Creation times are whole seconds: a failover deleted and asked for again within the second it was
    made in has the created_at of the one bob saw. The uid he was shown (a run's page, mdops get) tells
    them apart: his approval is refused and nothing is recorded; with the new run's uid it is his."""
    execute(api, "alice", "fo-6")
    seen = uid(identities, namespace, "fo-6")
    identities.kubectl("delete", "rb", "fo-6", "-n", namespace)

    def gone() -> bool:
        return http("GET", f"{api.url}/api/ops/runbooks/fo-6", headers=token("alice"))[0] == 404

    wait_until(gone, 30, "the API to see the run deleted")
    execute(api, "alice", "fo-6")
    now, made_again = shown(api, "fo-6"), uid(identities, namespace, "fo-6")
    for verb in ("approve", "reject"):  # as if within its second: the time is the new run's
        code, body = decide(api, "bob", "fo-6", verb, body={"created_at": now, "uid": seen})
        assert code == 409, body
        assert body["detail"].startswith(f"run 'fo-6' is not the one you named (Runbook {seen}); either")
    code, body = decide(api, "alice", "fo-6", "reject", body={"created_at": now, "uid": seen})
    assert code == 409 and body["detail"].startswith(
        f"run 'fo-6' is not the one you named (Runbook {seen}): its request id names Runbook {made_again}, "
        f"created at {now}; either"
    ), body
    assert approvals(identities, namespace) == []
    code, made = decide(api, "bob", "fo-6", body={"uid": made_again.upper()})  # a uid in any case
    assert code == 201, made
    assert [a["runbookUid"] for a in approvals(identities, namespace)] == [made_again]
    for wrong in ("fo-6", 42, ""):
        code, body = decide(api, "alice", "fo-6", "reject", body={"uid": wrong})
        assert (code, body["detail"][0]["loc"]) == (422, ["body", "uid"]), body


def test_a_run_of_a_schedule_that_names_nobody_may_be_rejected_never_approved(api, identities, namespace):
    """Whoever wrote the schedule could otherwise approve the run they set up (it names schedule:<name>)."""
    spec = {"command": "failover", "requestedBy": "schedule:nightly"}
    identities.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(models.manifest("fo-s", spec)))

    def seen() -> bool:
        return http("GET", f"{api.url}/api/ops/runbooks/fo-s", headers=token("alice"))[0] == 200

    wait_until(seen, 30, "the API to see the run")
    code, body = decide(api, "bob", "fo-s")
    assert code == 409 and body["detail"].endswith(
        "a schedule that names nobody (its spec.requestedBy), so no approval can count for it; reject it, or "
        "cancel the run, to stop it"
    )
    code, made = decide(api, "bob", "fo-s", "reject")
    assert code == 201 and made["requester"] == "schedule:nightly"


def test_who_may_decide_and_on_what(api, identities, namespace):
    execute(api, "alice", "fo-2")
    assert decide(api, "carol", "fo-2")[0] == 403  # no runbooks:approve
    assert http("POST", f"{api.url}/api/ops/runbooks/fo-2/approve")[0] == 401
    assert decide(api, "bob", "no-such-run") == (404, {"detail": "no runbook with request_id 'no-such-run'"})
    code, body = decide(api, "bob", "fo-2", body={"comment": "x" * 2000})
    assert code == 422 and "comment" in json.dumps(body)
    code, body = decide(api, "bob", "fo-2", body={"comment": "\u001b[2J"})
    assert (code, body["detail"][0]["type"]) == (422, "control_character")
    assert decide(api, "bob", "fo-2", body={"colour": "red"})[0] == 422
    assert approvals(identities, namespace) == []


def _run_in(cluster, namespace: str, name: str, status: dict | None, requested_by: str = "alice") -> None:
    spec = {"command": "restart", "requestedBy": requested_by} if requested_by else {"command": "restart"}
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(models.manifest(name, spec)))
    if status is not None:
        patch = json.dumps({"status": status})
        cluster.kubectl(
            "patch", "rb", name, "-n", namespace, "--subresource=status", "--type=merge", "-p", patch
        )


CONDITION = {"type": "Succeeded", "lastTransitionTime": "2026-01-05T02:00:00Z"}


@pytest.mark.parametrize(
    ("status", "requested_by", "detail"),
    [
        (
            {
                "result": "success",
                "exitCode": 0,
                "conditions": [{**CONDITION, "status": "True", "reason": "Succeeded"}],
            },
            "alice",
            "has finished: too late to decide on it",
        ),
        (
            {"conditions": [{**CONDITION, "status": "Unknown", "reason": "Running"}]},
            "alice",
            "has started: too late to decide on it",
        ),
        (
            {"conditions": [{**CONDITION, "status": "Unknown", "reason": "Queued"}]},
            "alice",
            "has passed the gate and waits for its target's lock: too late to approve it",
        ),
        (
            None,
            "",
            # Read in the console as well as by mdops: the way to stop it named as both have it.
            "names no requester (spec.requestedBy), so no approval can count for it; cancel the run to "
            "stop it",
        ),
    ],
    ids=["finished", "running", "queued", "anonymous"],
)
def test_a_decision_comes_too_late_or_cannot_count(api, identities, namespace, status, requested_by, detail):
    _run_in(identities, namespace, "rs-1", status, requested_by)

    def seen() -> bool:  # the API's cache has the run in the state written
        code, _, text = http("GET", f"{api.url}/api/ops/runbooks/rs-1", headers=token("alice"))
        reason = status and status["conditions"][0]["reason"]
        wanted = {None: "pending", "Succeeded": "success", "Running": "running", "Queued": "queued"}[reason]
        return code == 200 and json.loads(text)["runbook"]["status"] == wanted

    wait_until(seen, 30, "the API to see the run")
    code, body = decide(api, "bob", "rs-1")
    assert code == 409 and detail in body["detail"]
    assert approvals(identities, namespace) == []


def test_a_run_queued_for_its_lock_may_still_be_rejected(api, identities, namespace):
    """A failover the gate let through waits for its target's lock; the gate asks again before it starts,
    and a rejection then stops it (tests/cluster/test_gate.py): the API takes one, not 409."""
    queued = {"conditions": [{**CONDITION, "status": "Unknown", "reason": "Queued"}]}
    spec = {"command": "failover", "requestedBy": "alice"}
    identities.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(models.manifest("fo-q", spec)))
    patch = json.dumps({"status": queued})
    identities.kubectl(
        "patch", "rb", "fo-q", "-n", namespace, "--subresource=status", "--type=merge", "-p", patch
    )

    def seen() -> bool:
        code, _, text = http("GET", f"{api.url}/api/ops/runbooks/fo-q", headers=token("alice"))
        return code == 200 and json.loads(text)["runbook"]["status"] == "queued"

    wait_until(seen, 30, "the API to see the run queued")
    assert decide(api, "bob", "fo-q")[0] == 409  # its approvals are in: too late to approve
    code, made = decide(api, "bob", "fo-q", "reject", body={"comment": "not now"})
    assert code == 201, made
    assert [(a["approver"], a["decision"]) for a in approvals(identities, namespace)] == [("bob", "Reject")]


def test_a_rejection_counts_on_a_run_that_needs_approvals_in_another_session_state(
    api, identities, namespace
):
    """A rule that asks approvals for drills only in a session state the venue is not in now: the gate
    lets such a drill through without approvals, but counts the decisions on it (a rejection wins until
    it starts), so the API takes a rejection rather than answer that no policy asks for approvals."""
    code, _, text = http("GET", f"{api.url}/readyz")
    now = json.loads(text)["session"]
    assert code == 200 and now is not None, text
    other = "holiday" if now != "holiday" else "open"
    drills = {
        **FOUR_EYES,
        "metadata": {"name": "drills-elsewhere"},
        "spec": {
            "rules": [
                {"name": "drills", "match": {"commands": ["drill"]}, "approvals": {"inStates": [other]}}
            ]
        },
    }
    identities.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(drills))
    body = {"command": "drill", "request_id": "dr-1"}
    code, _, text = http("POST", f"{api.url}/api/ops/runbooks/execute", body, token("alice"))
    assert code == 202, text
    code, made = decide(api, "bob", "dr-1", "reject")
    assert code == 201, made


def test_a_decision_no_policy_would_count_is_refused(api, identities, namespace):
    """A run the policies let start at once passes the gate without counting decisions: a rejection
    answered 201 would be ignored, and the run would go on."""
    refused = "no RunbookPolicy asks for approvals for run"
    _run_in(identities, namespace, "rs-2", None)  # a restart: the policy holds failovers only

    def seen() -> bool:
        return http("GET", f"{api.url}/api/ops/runbooks/rs-2", headers=token("alice"))[0] == 200

    wait_until(seen, 30, "the API to see the run")
    code, body = decide(api, "bob", "rs-2", "reject")
    assert code == 409 and refused in body["detail"]
    assert body["detail"].endswith("so this one would not count; cancel the run to stop it")
    execute(api, "alice", "fo-3")
    identities.kubectl("delete", policy.PLURAL, "four-eyes", "-n", namespace)
    code, body = decide(api, "bob", "fo-3", "reject")  # no policy at all in the namespace now
    assert code == 409 and refused in body["detail"]
    assert approvals(identities, namespace) == []


def test_a_decision_on_a_run_held_for_its_window_is_refused_unless_approvals_may_count(
    api, identities, namespace
):
    """A restart held for its window by a rule that asks for no approvals passes the gate at the window
    without counting decisions: a rejection answered 201 would be ignored, and the run would start then."""
    restarts = {
        "name": "restarts",
        "match": {"commands": ["restart"]},
        "blackouts": [{"start": "2000-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z"}],
    }
    freeze = crd.POLICY.manifest("freeze", {"rules": [restarts]})
    identities.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(freeze))
    _run_in(identities, namespace, "rs-3", None)

    def seen() -> bool:
        return http("GET", f"{api.url}/api/ops/runbooks/rs-3", headers=token("alice"))[0] == 200

    wait_until(seen, 30, "the API to see the run")
    code, body = decide(api, "bob", "rs-3", "reject")
    assert code == 409 and "no RunbookPolicy asks for approvals for run" in body["detail"]
    assert approvals(identities, namespace) == []
    # A rule that asks for approvals on restarts: counted when the wait ends, so it counts.
    rules = [
        *freeze["spec"]["rules"],
        {"name": "four-eyes", "match": {"commands": ["restart"]}, "approvals": {}},
    ]
    patch = json.dumps({"spec": {"rules": rules}})
    identities.kubectl("patch", policy.PLURAL, "freeze", "-n", namespace, "--type=merge", "-p", patch)
    code, made = decide(api, "bob", "rs-3", "reject")
    assert code == 201, made


def test_an_approval_given_at_once_is_made_after_the_run_s_second(api, identities, namespace):
    """Creation times are whole seconds, and the count ignores an approval from its Runbook's own second
    (it cannot be told from one made before it). An approver as quick as a script would get a 201 for a
    decision that never counts, and could not decide again (one decision per person and Runbook)."""
    for n in range(3):
        execute(api, "alice", f"fo-q{n}")
        code, made = decide(api, "bob", f"fo-q{n}")
        assert code == 201, made
        listed = identities.kubectl("get", "rb", f"fo-q{n}", "-n", namespace, "-o", "json")
        created = json.loads(listed.stdout)["metadata"]["creationTimestamp"]
        assert parse_time(made["created_at"]) > parse_time(created)
