"""Who a Runbook and a RunbookApproval may name, enforced by the API server itself (the
ValidatingAdmissionPolicies of manifests/identities.yaml): real users logging in with client certificates
of the control plane's CA, real RBAC, and mdops's ServiceAccount with its packaged Role."""

from __future__ import annotations

import datetime
import json

import pytest
import yaml

from devcluster.components import install_rbac
from devcluster.kubeconfig import write_kubeconfig
from devcluster.processes import wait_until
from runbooks import crd, keys, models
from runbooks.contract import parse_time
from tests.runbook_client import lines, write_script

USERS = ("alice", "bob")
NOT_YOURS = "spec.requestedBy must be your own user name, alice, or empty"
FORGED = "spec.approver must be your own user name, alice"
SELF_APPROVAL = "nobody approves their own request"
CANCEL_NOT_YOURS = "spec.cancel.requestedBy must be your own user name, alice, or empty"


def _role(name: str, verbs: list[str], resources: list[str], users, group: str = keys.GROUP) -> list[dict]:
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name},
        "rules": [{"apiGroups": [group], "resources": resources, "verbs": verbs}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u} for u in users],
    }
    return [role, binding]


@pytest.fixture
def users(identities, namespace) -> dict:
    """alice and bob: users who may create (and read) Runbooks and approvals in this namespace, and nothing
    more; their kubeconfigs, once the policies are in effect."""
    docs = _role("operators", ["create", "get"], ["runbooks", "runbookapprovals"], USERS)
    identities.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))
    kubeconfigs = {user: identities.user_kubeconfig(user) for user in USERS}

    def refused() -> bool:  # the API server loads a new policy within a second or so
        result = create(
            identities, namespace, kubeconfigs["alice"], runbook("probe", "bob"), "--dry-run=server"
        )
        return result.returncode != 0 and NOT_YOURS in result.stderr

    wait_until(refused, 30, "the identity policies to take effect")
    return kubeconfigs


def runbook(name: str, requested_by: str | None) -> dict:
    spec = {"command": "health_check"} | ({} if requested_by is None else {"requestedBy": requested_by})
    return models.manifest(name, spec)


def approval(name: str, approver: str, requester: str, decision: str = "Approve") -> dict:
    spec = {"requestId": "fo-1", "decision": decision, "approver": approver, "requester": requester}
    return crd.APPROVAL.manifest(name, spec)


def create(cluster, namespace: str, kubeconfig, manifest: dict, *flags: str):
    return cluster.kubectl(
        "create",
        "-n",
        namespace,
        *flags,
        "-f",
        "-",
        input=json.dumps(manifest),
        kubeconfig=kubeconfig,
        check=False,
    )


def requested_by(cluster, namespace: str, name: str) -> str:
    return cluster.kubectl("get", "rb", name, "-n", namespace, "-o", "jsonpath={.spec.requestedBy}").stdout


def test_a_kubectl_user_names_only_themselves_or_nobody(identities, namespace, users):
    alice = users["alice"]
    forged = create(identities, namespace, alice, runbook("forged", "bob"))
    assert forged.returncode != 0
    assert NOT_YOURS in forged.stderr and "mdops-requested-by" in forged.stderr
    assert create(identities, namespace, alice, runbook("mine", "alice")).returncode == 0
    assert requested_by(identities, namespace, "mine") == "alice"
    # Nobody named: allowed, and nothing fills it in (the API server only validates). Such a request
    # can never be approved: no approval counts for a request that names no requester.
    assert create(identities, namespace, alice, runbook("anonymous", None)).returncode == 0
    assert requested_by(identities, namespace, "anonymous") == ""
    assert identities.kubectl("get", "rb", "forged", "-n", namespace, check=False).returncode != 0


def test_a_schedules_request_id_is_refused_from_a_kubectl_user(identities, namespace, users):
    """Taken first, a slot's request id would make the slot's run a Duplicate: never run."""
    alice = users["alice"]
    slot = models.manifest(
        "nightly-x", {"command": "health_check", "requestId": "schedule.nightly.20260105013000"}
    )
    named = runbook("schedule.nightly.20260105013000", "alice")  # no requestId: the name is the request id
    for manifest in (slot, named):
        taken = create(identities, namespace, alice, manifest)
        assert taken.returncode != 0 and "reserved for the slots of RunbookSchedules" in taken.stderr
    # A request id that only looks like one is anyone's.
    alike = models.manifest("alike", {"command": "health_check", "requestId": "schedules.nightly.1"})
    assert create(identities, namespace, alice, alike).returncode == 0


SCHEDULE_NOT_YOURS = "spec.requestedBy must be your own user name"


def test_a_schedule_names_as_its_runs_requester_only_who_made_them_what_they_are(
    identities, namespace, users
):
    """Else whoever may write schedules could have a failover run at a time of their choosing, requested by
    someone else (or by schedule:<name>), and approve it themselves."""
    docs = _role("schedulers", ["create", "get", "patch"], ["runbookschedules"], USERS)
    identities.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))
    body = {"template": {"command": "failover"}, "trigger": {"cron": "0 10 * * 6"}}

    def as_alice(requested_by: str, *flags: str):
        manifest = crd.SCHEDULE.manifest("fo", {**body, "requestedBy": requested_by})
        return create(identities, namespace, users["alice"], manifest, *flags)

    def may_create() -> bool:  # RBAC's cache takes a moment
        return as_alice("alice", "--dry-run=server").returncode == 0

    wait_until(may_create, 30, "alice to be allowed to create schedules")
    forged = as_alice("bob")
    assert forged.returncode != 0 and SCHEDULE_NOT_YOURS in forged.stderr
    assert "mdops-schedule-requested-by" in forged.stderr
    assert as_alice("alice").returncode == 0

    def patch(who: str, change: dict):
        return identities.kubectl(
            "patch",
            "rbs",
            "fo",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            json.dumps({"spec": change}),
            kubeconfig=users[who],
            check=False,
        )

    # bob changes what runs (or when) under alice's name: refused; under his own, or nobody's: allowed.
    assert SCHEDULE_NOT_YOURS in patch("bob", {"template": {"command": "drill"}}).stderr
    assert SCHEDULE_NOT_YOURS in patch("bob", {"trigger": {"cron": "* * * * *"}}).stderr
    assert SCHEDULE_NOT_YOURS in patch("bob", {"requestedBy": "carol"}).stderr
    assert patch("bob", {"template": {"command": "drill"}, "requestedBy": "bob"}).returncode == 0
    assert patch("alice", {"suspend": True}).returncode == 0  # it runs nothing: anyone who may patch
    # Resuming decides that it runs: alice resumed bob's suspended schedule under his name, and approved
    # its next run herself.
    assert SCHEDULE_NOT_YOURS in patch("alice", {"suspend": False}).stderr
    assert patch("bob", {"suspend": False}).returncode == 0
    assert patch("alice", {"suspend": True}).returncode == 0
    assert patch("alice", {"requestedBy": ""}).returncode == 0
    spec = json.loads(identities.kubectl("get", "rbs", "fo", "-n", namespace, "-o", "json").stdout)["spec"]
    assert (spec["template"]["command"], spec["requestedBy"], spec["suspend"]) == ("drill", "", True)


def test_a_kubectl_user_cancels_in_their_own_name_or_nobodys(identities, namespace, users):
    """Who cancelled a run is kept for the audit: a person names only themselves, or nobody."""
    docs = _role("cancellers", ["patch"], ["runbooks"], USERS)
    identities.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))
    for name in ("by-bob", "by-alice", "by-nobody"):
        assert create(identities, namespace, users["bob"], runbook(name, "bob")).returncode == 0

    def cancel(name: str, cancelled_by: str | None, *flags: str):
        cancel = {"reason": "not now"} | ({} if cancelled_by is None else {"requestedBy": cancelled_by})
        return identities.kubectl(
            "patch",
            "rb",
            name,
            "-n",
            namespace,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"cancel": cancel}}),
            *flags,
            kubeconfig=users["alice"],
            check=False,
        )

    wait_until(lambda: cancel("by-alice", "alice", "--dry-run=server").returncode == 0, 30, "alice may patch")
    forged = cancel("by-bob", "bob")
    assert forged.returncode != 0 and CANCEL_NOT_YOURS in forged.stderr
    assert cancel("by-alice", "alice").returncode == 0
    assert cancel("by-nobody", None).returncode == 0

    def spec(name: str) -> dict:
        return json.loads(identities.kubectl("get", "rb", name, "-n", namespace, "-o", "json").stdout)["spec"]

    assert (
        spec("by-alice")["cancel"]["requestedBy"] == "alice"
        and spec("by-nobody")["cancel"]["requestedBy"] == ""
    )
    assert "cancel" not in spec("by-bob")
    # bob's own name on the Runbook is not looked at again as alice changes it.
    assert spec("by-alice")["requestedBy"] == "bob"


def test_a_forged_approver_is_refused(identities, namespace, users):
    forged = create(identities, namespace, users["alice"], approval("by-bob", "bob", "carol"))
    assert forged.returncode != 0 and FORGED in forged.stderr
    assert create(identities, namespace, users["bob"], approval("by-bob", "bob", "carol")).returncode == 0


def test_nobody_approves_their_own_request_with_kubectl(identities, namespace, users):
    alice, bob = users["alice"], users["bob"]
    own = create(identities, namespace, alice, approval("own", "alice", "alice"))
    assert own.returncode != 0 and SELF_APPROVAL in own.stderr
    # Rejecting one's own request (withdrawing it) is allowed; someone else approves.
    assert (
        create(identities, namespace, alice, approval("withdrawn", "alice", "alice", "Reject")).returncode
        == 0
    )
    assert create(identities, namespace, bob, approval("second-pair", "bob", "alice")).returncode == 0


def test_rbac_decides_who_may_name_someone_else(identities, namespace, users):
    """The policies let users allowed the verb impersonate on runbooks name anyone: an RBAC decision."""
    docs = _role("speaks-for-others", ["impersonate"], ["runbooks"], ["alice"])
    identities.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))

    def allowed() -> bool:  # RBAC's cache takes a moment too
        return create(identities, namespace, users["alice"], runbook("for-bob", "bob")).returncode == 0

    wait_until(allowed, 30, "alice to be allowed to name bob")
    assert requested_by(identities, namespace, "for-bob") == "bob"
    # ... on runbooks only: approvals are another resource.
    forged = create(identities, namespace, users["alice"], approval("by-bob", "bob", "carol"))
    assert forged.returncode != 0 and FORGED in forged.stderr


def test_mdops_service_account_acts_for_token_names_but_not_for_self_approval(
    identities, namespace, tmp_path
):
    """The REST API creates Runbooks and approvals for its tokens, and the controller Runbooks for
    schedules, under mdops's ServiceAccount: its packaged Role allows it to name them, never to approve a
    request by the one who asked."""
    account = install_rbac(identities, namespace, tmp_path)
    sa = identities.service_account_kubeconfig(namespace, account, tmp_path / "sa.kubeconfig")
    assert create(identities, namespace, sa, runbook("for-a-token", "console-user")).returncode == 0
    slot = models.manifest(
        "nightly-20260105013000",
        {
            "command": "health_check",
            "requestId": "schedule.nightly.20260105013000",
            "requestedBy": "schedule:nightly",
        },
    )
    assert create(identities, namespace, sa, slot).returncode == 0
    assert requested_by(identities, namespace, "for-a-token") == "console-user"
    assert (
        create(identities, namespace, sa, approval("token-approves", "ops-bob", "console-user")).returncode
        == 0
    )
    own = create(identities, namespace, sa, approval("token-self", "console-user", "console-user"))
    assert own.returncode != 0 and SELF_APPROVAL in own.stderr


def test_an_approval_by_a_service_account_the_requester_holds_a_token_of_never_counts(
    identities, start_controller, namespace, users, tmp_path
):
    """A ServiceAccount is no person: alice, who may get tokens of the desk's approval bot (as may anyone
    who can create a pod that mounts it), approved her own failover as the bot, and it ran. The bot's
    approval is recorded as ignored; bob's lets the failover run, once (its script's own witness)."""
    witness = tmp_path / "witness.log"
    write_script(tmp_path / "scripts", "failover", f'echo "$MDOPS_REQUEST_ID" >> {witness}\n')
    start_controller(MDOPS_SCRIPTS_DIR=str(tmp_path / "scripts"))
    identities.kubectl("create", "serviceaccount", "approval-bot", "-n", namespace)
    bot = f"system:serviceaccount:{namespace}:approval-bot"
    approves = _role("bot-approves", ["create"], ["runbookapprovals"], [])
    approves[1]["subjects"] = [{"kind": "ServiceAccount", "name": "approval-bot", "namespace": namespace}]
    holds = _role("holds-bot", ["create"], ["serviceaccounts/token"], ["alice"], group="")
    four_eyes = {"name": "failovers", "match": {"commands": ["failover"]}, "approvals": {"required": 1}}
    docs = [*approves, *holds, crd.POLICY.manifest("desk", {"rules": [four_eyes]})]
    identities.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))
    manifest = models.manifest("fo-1", {"command": "failover", "requestedBy": "alice"})
    assert create(identities, namespace, users["alice"], manifest).returncode == 0

    def bot_token() -> str | None:  # alice's own request for one; RBAC's cache takes a moment
        made = identities.kubectl(
            "create", "token", "approval-bot", "-n", namespace, kubeconfig=users["alice"], check=False
        )
        return made.stdout.strip() if made.returncode == 0 else None

    token = wait_until(bot_token, 30, "alice to be allowed tokens of the bot")
    as_bot = write_kubeconfig(
        tmp_path / "bot.kubeconfig", identities.server, identities.ca.cert_path, token, bot
    )

    def runbook_now() -> dict:
        return json.loads(identities.kubectl("get", "rb", "fo-1", "-n", namespace, "-o", "json").stdout)

    def status() -> dict:
        return runbook_now().get("status") or {}

    def awaiting() -> bool:
        conditions = status().get("conditions") or []
        return any(c["type"] == "Queued" and c["reason"] == "AwaitingApproval" for c in conditions)

    wait_until(awaiting, 60, "the failover to wait for its approval")
    # An approval from the Runbook's own second never counts (creation times are whole seconds).
    later = parse_time(runbook_now()["metadata"]["creationTimestamp"]) + datetime.timedelta(seconds=1)
    wait_until(lambda: datetime.datetime.now(datetime.UTC) >= later, 5, "a second after the Runbook's")

    def bot_approves() -> bool:  # RBAC's cache again
        return create(identities, namespace, as_bot, approval("by-bot", bot, "alice")).returncode == 0

    wait_until(bot_approves, 30, "the bot's approval to be made")
    wait_until(lambda: status().get("approvals"), 30, "the bot's approval to be counted or ignored")
    assert "not a person" in (status()["approvals"][0].get("ignored") or ""), status()
    assert lines(witness) == []
    assert create(identities, namespace, users["bob"], approval("by-bob", "bob", "alice")).returncode == 0
    wait_until(lambda: status().get("result") == "success", 60, "the failover approved by bob to run")
    assert lines(witness) == ["fo-1"]
