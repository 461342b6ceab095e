"""The API server itself validates Runbooks: schema, bounds, unknown fields and an immutable spec."""

from __future__ import annotations

import json

import pytest

from devcluster.controlplane import REPO
from devcluster.processes import wait_until
from runbooks import crd, models

TEXT_REFUSED = models.TEXT_PATTERNS[models.TEXT_PATTERN]
REASON_REFUSED = 'spec.reason: Invalid value: "string": ' + models.TEXT_PATTERNS[models.REASON_PATTERN]


def _apply(cluster, namespace, spec: dict, name: str = "rb1"):
    manifest = json.dumps(models.manifest(name, spec))
    return cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest, check=False)


def test_valid_runbook_gets_its_defaults(runbook_crd, namespace):
    assert _apply(runbook_crd, namespace, {"command": "health_check"}).returncode == 0
    got = json.loads(runbook_crd.kubectl("get", "rb", "rb1", "-n", namespace, "-o", "json").stdout)
    assert got["spec"] == {
        "command": "health_check",
        "mode": "live",
        "window": "auto",
        "profile": "primary",
        "config": "",
        "enforce": False,
        "dryRun": False,
        "reason": "",
        "timeoutSeconds": 300,
        "requestedBy": "",
    }


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"command": "reboot"}, 'spec.command: Unsupported value: "reboot"'),
        ({"command": "start", "timeoutSeconds": -5}, "spec.timeoutSeconds: Invalid value: -5"),
        ({"command": "start", "window": "lunch"}, 'spec.window: Unsupported value: "lunch"'),
        ({"command": "start", "colour": "red"}, 'unknown field "spec.colour"'),
        ({"mode": "live"}, "spec.command: Required value"),
        ({"command": "start", "requestId": "../etc"}, "spec.requestId: Invalid value"),
        ({"command": "start", "reason": "a\u0000b"}, "spec.reason: Invalid value"),  # scripts get it in env
        ({"command": "start", "config": "\u0000"}, "spec.config: Invalid value"),
        # No other control character either (C0, DEL, C1), but tab and newline in a reason; said in words.
        ({"command": "start", "reason": "a\u0001b"}, REASON_REFUSED),
        ({"command": "start", "reason": "line\r\n"}, REASON_REFUSED),
        ({"command": "start", "reason": "\u001b[2J"}, REASON_REFUSED),
        ({"command": "start", "reason": "del\u007f"}, REASON_REFUSED),
        ({"command": "start", "reason": "c1\u0085"}, REASON_REFUSED),
        ({"command": "start", "config": "a\tb"}, 'spec.config: Invalid value: "string": ' + TEXT_REFUSED),
        ({"command": "start", "config": "a\nb"}, 'spec.config: Invalid value: "string": ' + TEXT_REFUSED),
        ({"command": "start", "requestedBy": "eve\u001b]0;root\u0007"}, "spec.requestedBy: Invalid value"),
    ],
)
def test_api_server_refuses_invalid_runbooks(runbook_crd, namespace, spec, message):
    result = _apply(runbook_crd, namespace, spec)
    assert result.returncode != 0
    assert message in result.stderr


def test_free_text_keeps_tabs_newlines_and_any_printable_character(runbook_crd, namespace):
    text = "--dry-run -x -- $(id) `id` 'q' \"qq\" Ünï ✓ 日本 \U0001f680 \u2028"
    spec = {"command": "start", "reason": f"{text}\ttab\nnewline", "config": text, "requestedBy": text}
    assert _apply(runbook_crd, namespace, spec).returncode == 0
    got = json.loads(runbook_crd.kubectl("get", "rb", "rb1", "-n", namespace, "-o", "json").stdout)
    assert {key: got["spec"][key] for key in spec} == spec


def test_spec_is_immutable(runbook_crd, namespace):
    assert _apply(runbook_crd, namespace, {"command": "failover"}).returncode == 0
    changed = _apply(runbook_crd, namespace, {"command": "failback"})
    assert changed.returncode != 0
    assert crd.SPEC_IMMUTABLE in changed.stderr


def test_printer_columns_and_explain(runbook_crd, namespace):
    _apply(runbook_crd, namespace, {"command": "drill", "profile": "backup"})
    table = runbook_crd.kubectl("get", "rb", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "COMMAND", "PROFILE", "WINDOW", "RESULT", "EXIT", "AGE"]
    assert table[1].split()[:3] == ["rb1", "drill", "backup"]
    explain = runbook_crd.kubectl("explain", "runbook.spec.dryRun").stdout
    assert "changes nothing" in explain


def test_requested_by_policy_records_the_kubectl_user(runbook_crd, namespace):
    """The optional MutatingAdmissionPolicy of manifests/components/requested-by, bound to this test's
    namespace only (a binding for all namespaces would change every other test's Runbooks)."""
    policy = REPO / "manifests" / "components" / "requested-by" / "policy.yaml"
    runbook_crd.kubectl("apply", "-f", str(policy))
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1beta1",
        "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": f"requested-by-{namespace}"},
        "spec": {
            "policyName": "mdops-requested-by",
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    runbook_crd.kubectl("apply", "-f", "-", input=json.dumps(binding))
    try:

        def recorded(name: str, spec: dict) -> str:
            _apply(runbook_crd, namespace, spec, name=name)
            got = runbook_crd.kubectl(
                "get", "rb", name, "-n", namespace, "-o", "jsonpath={.spec.requestedBy}"
            )
            runbook_crd.kubectl("delete", "rb", name, "-n", namespace, "--wait=false")
            return got.stdout

        # The policy takes effect a moment after it is created.
        attempts = iter(range(1000))
        assert wait_until(
            lambda: recorded(f"who-{next(attempts)}", {"command": "health_check"}) == "mdops-admin",
            30,
            "the policy to fill in requestedBy",
        )
        given = {"command": "health_check", "requestedBy": "ops-console"}
        assert recorded("told", given) == "ops-console"
    finally:
        runbook_crd.kubectl("delete", "mutatingadmissionpolicybinding", f"requested-by-{namespace}")
