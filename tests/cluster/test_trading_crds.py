"""The API server itself validates RunbookPolicies, RunbookApprovals and RunbookSchedules: schema,
enums, bounds, unknown fields and the CEL rules; and the examples under examples/ are accepted.

What the API server cannot check (a cron expression in full, a time zone's name) the models check
when the controller reads the object: the last tests show both sides of that line."""

from __future__ import annotations

import datetime
import json
import re

import pytest
from pydantic import ValidationError

from devcluster.controlplane import REPO
from runbooks import approval, crd, models, schedule

POLICY_RULE = {"name": "drills", "match": {"commands": ["drill"]}, "allowedStates": ["closed"]}
APPROVAL = {"requestId": "fo-1", "decision": "Approve", "approver": "bob", "requester": "alice"}
TEMPLATE = {"command": "health_check"}
BLACKOUT = {"start": "2026-12-24T00:00:00+08:00", "end": "2026-12-25T00:00:00+08:00"}

TEXT_REFUSED = models.TEXT_PATTERNS[models.TEXT_PATTERN]
REASON_REFUSED = models.TEXT_PATTERNS[models.REASON_PATTERN]


def _apply(cluster, namespace, kind: crd.Kind, spec: dict, name: str = "obj1", *flags: str):
    manifest = json.dumps(kind.manifest(name, spec))
    return cluster.kubectl("apply", "-n", namespace, *flags, "-f", "-", input=manifest, check=False)


def _get(cluster, namespace, kind: crd.Kind, name: str = "obj1") -> dict:
    return json.loads(cluster.kubectl("get", kind.plural, name, "-n", namespace, "-o", "json").stdout)


def test_valid_objects_get_their_defaults(mdops_crds, namespace):
    assert _apply(mdops_crds, namespace, crd.POLICY, {"rules": [POLICY_RULE]}).returncode == 0
    assert _get(mdops_crds, namespace, crd.POLICY)["spec"]["rules"][0]["outside"] == "Wait"

    assert _apply(mdops_crds, namespace, crd.APPROVAL, APPROVAL).returncode == 0
    assert _get(mdops_crds, namespace, crd.APPROVAL)["spec"] == {**APPROVAL, "comment": ""}

    spec = {"template": TEMPLATE, "trigger": {"every": "5m", "during": ["open"]}}
    assert _apply(mdops_crds, namespace, crd.SCHEDULE, spec).returncode == 0
    got = _get(mdops_crds, namespace, crd.SCHEDULE)["spec"]
    assert got["trigger"] == {"every": "5m", "during": ["open"], "tradingDaysOnly": False}
    assert got["template"]["timeoutSeconds"] == 300
    assert (got["suspend"], got["startingDeadlineSeconds"], got["concurrencyPolicy"]) == (False, 60, "Forbid")
    assert (got["successfulHistoryLimit"], got["failedHistoryLimit"]) == (3, 1)


def _schedule(**trigger) -> dict:
    return {"template": TEMPLATE, "trigger": trigger}


@pytest.mark.parametrize(
    ("kind", "spec", "message"),
    [
        (crd.POLICY, {"rules": []}, "spec.rules: Invalid value: 0"),
        (crd.POLICY, {"rules": [{**POLICY_RULE, "colour": "red"}]}, 'unknown field "spec.rules[0].colour"'),
        (crd.POLICY, {"rules": [{**POLICY_RULE, "allowedStates": ["lunch"]}]}, 'Unsupported value: "lunch"'),
        (crd.POLICY, {"rules": [{**POLICY_RULE, "outside": "Later"}]}, 'Unsupported value: "Later"'),
        (crd.POLICY, {"rules": [POLICY_RULE, POLICY_RULE]}, "spec.rules[1]: Duplicate value"),
        (crd.POLICY, {"rules": [{**POLICY_RULE, "match": {"commands": ["reboot"]}}]}, '"reboot"'),
        (crd.POLICY, {"rules": [{**POLICY_RULE, "approvals": {"required": 0}}]}, "approvals.required"),
        (
            crd.POLICY,
            {
                "rules": [
                    {
                        **POLICY_RULE,
                        "blackouts": [{"start": "2026-12-24T12:00:00+08:00", "end": "2026-12-24"}],
                    }
                ]
            },
            "spec.rules[0].blackouts[0].end",
        ),
        (
            crd.POLICY,
            {
                "rules": [
                    {
                        **POLICY_RULE,
                        "blackouts": [
                            {"start": "2026-12-24T12:00:00+08:00", "end": "2026-12-24T09:00:00+08:00"}
                        ],
                    }
                ]
            },
            "end must be after start",
        ),
        *(
            (
                crd.POLICY,
                {"rules": [{**POLICY_RULE, "blackouts": [{"start": start, "end": "2027-01-01T00:00:00Z"}]}]},
                "spec.rules[0].blackouts[0].start",
            )
            for start in ("0000-01-01T00:00:00Z", "2026-12-04T10:30:00+24:00")  # no datetime in Python
        ),
        *(  # a time on the first or last day a datetime holds, not in every zone
            (
                crd.POLICY,
                {"rules": [{**POLICY_RULE, "blackouts": [{"start": start, "end": end}]}]},
                "start and end must lie from 0001-01-02 to 9999-12-30 (UTC)",
            )
            for start, end in (
                ("2026-12-01T00:00:00Z", "9999-12-31T23:59:59Z"),
                ("0001-01-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            )
        ),
        (crd.APPROVAL, {**APPROVAL, "decision": "Maybe"}, 'spec.decision: Unsupported value: "Maybe"'),
        (crd.APPROVAL, {**APPROVAL, "approver": ""}, "spec.approver: Invalid value"),
        (crd.APPROVAL, {"requestId": "fo-1", "decision": "Approve"}, "spec.approver: Required value"),
        (crd.APPROVAL, {**APPROVAL, "requester": ""}, "spec.requester: Invalid value"),
        (
            crd.APPROVAL,
            {k: v for k, v in APPROVAL.items() if k != "requester"},
            "spec.requester: Required value",
        ),
        (crd.APPROVAL, {**APPROVAL, "requestId": "../etc"}, "spec.requestId: Invalid value"),
        (crd.APPROVAL, {**APPROVAL, "approver": "bob\u001b[2J"}, TEXT_REFUSED),
        (crd.APPROVAL, {**APPROVAL, "comment": "ok\r"}, REASON_REFUSED),
        (
            crd.POLICY,
            {"rules": [{**POLICY_RULE, "blackouts": [{**BLACKOUT, "reason": "a\u0085"}]}]},
            TEXT_REFUSED,
        ),
        (
            crd.SCHEDULE,
            _schedule(cron="0 10 * * 6", every="5m"),
            "give exactly one of cron, every and session",
        ),
        (crd.SCHEDULE, _schedule(), "give exactly one of cron, every and session"),
        (crd.SCHEDULE, _schedule(session="open-30m", timeZone="+08:00"), "timeZone goes with cron only"),
        (crd.SCHEDULE, _schedule(cron="0 10 * * 6", during=["open"]), "during goes with every only"),
        (crd.SCHEDULE, _schedule(every="2s"), "every is from 5s to 24h"),
        (crd.SCHEDULE, _schedule(every="25h"), "every is from 5s to 24h"),
        (crd.SCHEDULE, _schedule(every="5x"), "spec.trigger.every: Invalid value"),
        (crd.SCHEDULE, _schedule(session="lunch+5m"), "spec.trigger.session: Invalid value"),
        (crd.SCHEDULE, _schedule(session="open-9999h"), schedule.SESSION_OFFSET),
        (crd.SCHEDULE, _schedule(session="close+1441m"), schedule.SESSION_OFFSET),
        (crd.SCHEDULE, _schedule(cron="0 10 *"), "spec.trigger.cron: Invalid value"),
        (crd.SCHEDULE, _schedule(cron="0 10 * * 6", timeZone="Etc/GMT+8"), schedule.ETC_GMT),
        (
            crd.SCHEDULE,
            _schedule(cron="0 10 * * 6", timeZone="+24:00"),
            "spec.trigger.timeZone: Invalid value",
        ),
        (
            crd.SCHEDULE,
            _schedule(cron="0 10 * * 6", timeZone="+08:60"),
            "spec.trigger.timeZone: Invalid value",
        ),
        (
            crd.SCHEDULE,
            _schedule(cron="0 10 * * 6", timeZone="Mars Base"),
            "spec.trigger.timeZone: Invalid value",
        ),
        (
            crd.SCHEDULE,
            {"template": {**TEMPLATE, "requestId": "x"}, "trigger": {"every": "5m"}},
            'unknown field "spec.template.requestId"',
        ),
        (
            crd.SCHEDULE,
            {"template": {"command": "reboot"}, "trigger": {"every": "5m"}},
            'spec.template.command: Unsupported value: "reboot"',
        ),
        (
            crd.SCHEDULE,
            {**_schedule(every="5m"), "concurrencyPolicy": "Allow"},
            'spec.concurrencyPolicy: Unsupported value: "Allow"',
        ),
        (crd.SCHEDULE, {**_schedule(every="5m"), "startingDeadlineSeconds": 0}, "startingDeadlineSeconds"),
        # the controller looks once a second: a slot on time could be missed by its own cadence
        (crd.SCHEDULE, {**_schedule(every="5m"), "startingDeadlineSeconds": 1}, schedule.SHORT_DEADLINE),
    ],
)
def test_api_server_refuses_invalid_objects(mdops_crds, namespace, kind, spec, message):
    result = _apply(mdops_crds, namespace, kind, spec)
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.parametrize("session", ["open", "close+1440m", "open-24h", "close-45m"])
def test_session_offsets_up_to_a_day_are_accepted(mdops_crds, namespace, session):
    result = _apply(mdops_crds, namespace, crd.SCHEDULE, _schedule(session=session))
    assert result.returncode == 0, result.stderr


def test_a_schedule_name_leaves_room_for_the_slot(mdops_crds, namespace):
    longest = "s" * schedule.MAX_NAME_LENGTH
    assert _apply(mdops_crds, namespace, crd.SCHEDULE, _schedule(every="5m"), longest).returncode == 0
    refused = _apply(mdops_crds, namespace, crd.SCHEDULE, _schedule(every="5m"), longest + "s")
    assert refused.returncode != 0
    assert crd.SCHEDULE_NAME in refused.stderr


def test_a_slot_runbook_of_the_longest_name_is_a_valid_runbook(mdops_crds, namespace):
    spec = schedule.RunbookScheduleSpec.model_validate(_schedule(every="5m"))
    slot = datetime.datetime(2026, 12, 3, 9, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=8)))
    manifest = schedule.slot_runbook("s" * schedule.MAX_NAME_LENGTH, spec, slot)
    assert manifest["metadata"]["name"] == "s" * 48 + "-20261203010000"
    created = mdops_crds.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=False)
    assert created.returncode == 0, created.stderr


def test_an_approval_is_immutable_and_selectable_by_request(mdops_crds, namespace):
    assert _apply(mdops_crds, namespace, crd.APPROVAL, APPROVAL, "a1").returncode == 0
    assert (
        _apply(mdops_crds, namespace, crd.APPROVAL, {**APPROVAL, "requestId": "fo-2"}, "a2").returncode == 0
    )
    changed = _apply(mdops_crds, namespace, crd.APPROVAL, {**APPROVAL, "decision": "Reject"}, "a1")
    assert changed.returncode != 0
    assert approval.SPEC_IMMUTABLE in changed.stderr
    # The Runbook it decides on is its spec too: neither bound afterwards (to count for a Runbook made
    # again with its request id) nor changed.
    uid = "6f1c2d9e-2b7a-4c8e-9d51-3f0e8a7b1c22"
    bound = _apply(mdops_crds, namespace, crd.APPROVAL, {**APPROVAL, "runbookUid": uid}, "a1")
    assert bound.returncode != 0 and approval.SPEC_IMMUTABLE in bound.stderr
    assert _apply(mdops_crds, namespace, crd.APPROVAL, {**APPROVAL, "runbookUid": uid}, "a3").returncode == 0
    rebound = _apply(mdops_crds, namespace, crd.APPROVAL, {**APPROVAL, "runbookUid": uid[::-1]}, "a3")
    assert rebound.returncode != 0 and approval.SPEC_IMMUTABLE in rebound.stderr
    assert (
        _apply(mdops_crds, namespace, crd.APPROVAL, {**APPROVAL, "runbookUid": "a b"}, "a4").returncode != 0
    )
    selected = mdops_crds.kubectl(
        "get", "rba", "-n", namespace, "--field-selector", "spec.requestId=fo-2", "-o", "name"
    )
    assert selected.stdout.split() == [f"{crd.APPROVAL.singular}.{crd.keys.GROUP}/a2"]


def test_printer_columns_and_explain(mdops_crds, namespace):
    _apply(mdops_crds, namespace, crd.POLICY, {"rules": [POLICY_RULE]})
    _apply(mdops_crds, namespace, crd.APPROVAL, APPROVAL)
    _apply(mdops_crds, namespace, crd.SCHEDULE, {**_schedule(every="5m"), "suspend": True})

    def table(short_name: str) -> list[list[str]]:
        return [
            row.split() for row in mdops_crds.kubectl("get", short_name, "-n", namespace).stdout.splitlines()
        ]

    policies, approvals, schedules = table("rbp"), table("rba"), table("rbs")
    assert policies[0] == ["NAME", "RULES", "AGE"]
    assert policies[1][:2] == ["obj1", "drills"]
    assert approvals[0] == ["NAME", "REQUEST", "DECISION", "APPROVER", "AGE"]
    assert approvals[1][:4] == ["obj1", "fo-1", "Approve", "bob"]
    assert schedules[0] == ["NAME", "SCHEDULE", "NEXT", "LAST", "RESULT", "SUSPENDED", "AGE"]
    assert "true" in schedules[1]
    explain = mdops_crds.kubectl("explain", "runbookschedule.spec.trigger.session").stdout
    assert "open-30m" in explain


def test_examples_are_accepted_by_the_api_server(mdops_crds, namespace):
    """The objects of examples/ and the README's own Runbook (The Runbook resource), as users apply them."""
    folders = ("policies", "runbooks", "schedules", "gitops/runbooks")
    files = sorted(path for folder in folders for path in (REPO / "examples" / folder).glob("*.yaml"))
    manifests = {path.name: path.read_text() for path in files if path.name != "kustomization.yaml"}
    readme = (REPO / "README.md").read_text()
    inline = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "apiVersion: ops.mdops.io/" in b]
    manifests |= {f"README's Runbook {n}": block for n, block in enumerate(inline)}
    assert len(manifests) == 14
    for name, manifest in manifests.items():
        flags = ("--dry-run=server", "--validate=strict", "-f", "-")
        result = mdops_crds.kubectl("apply", "-n", namespace, *flags, input=manifest, check=False)
        assert result.returncode == 0, f"{name}: {result.stderr}"


def test_what_only_the_models_check(mdops_crds, namespace):
    """A cron expression and a time zone's name pass the API server's pattern but not the model, which
    the controller reads them with (a status condition then says why the schedule does not run)."""
    for trigger in ({"cron": "61 * * * *"}, {"cron": "0 10 * * 6", "timeZone": "Mars/Base"}):
        spec = _schedule(**trigger)
        assert _apply(mdops_crds, namespace, crd.SCHEDULE, spec, "obj1", "--dry-run=server").returncode == 0
        with pytest.raises(ValidationError):
            schedule.RunbookScheduleSpec.model_validate(spec)


@pytest.mark.parametrize("approver", ["Alice", "ALICE", " alice", "alice\u3000"])
def test_the_api_server_refuses_an_approval_by_the_requester_under_another_case_or_spaces(
    identities, namespace, approver
):
    """Even from one who may name anyone (the admin): that is one person, to an identity provider that
    ignores case, or a name with a space around it. The count ignores more spellings (runbooks.approval)."""
    own = _apply(
        identities, namespace, crd.APPROVAL, {**APPROVAL, "approver": approver, "requester": "alice"}
    )
    assert own.returncode != 0 and "nobody approves their own request" in own.stderr
    withdrawn = {**APPROVAL, "decision": "Reject", "approver": approver, "requester": "alice"}
    assert _apply(identities, namespace, crd.APPROVAL, withdrawn, "withdrawn").returncode == 0
