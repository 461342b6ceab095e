"""The API server itself validates Runbooks: schema, bounds, unknown fields and an immutable spec."""

from __future__ import annotations

import json

import pytest

from devcluster.controlplane import REPO
from devcluster.processes import wait_until
from runbooks import crd, keys, models

TEXT_REFUSED = models.TEXT_PATTERNS[models.TEXT_PATTERN]
REASON_REFUSED = 'spec.reason: Invalid value: "string": ' + models.TEXT_PATTERNS[models.REASON_PATTERN]


def _apply(cluster, namespace, spec: dict, name: str = "rb1"):
    manifest = json.dumps(models.manifest(name, spec))
    return cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest, check=False)


def test_valid_runbook_gets_its_defaults(mdops_crds, namespace):
    assert _apply(mdops_crds, namespace, {"command": "health_check"}).returncode == 0
    got = json.loads(mdops_crds.kubectl("get", "rb", "rb1", "-n", namespace, "-o", "json").stdout)
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
        ({"command": "failover", "mode": "Live"}, "spec.mode: Invalid value"),  # one spelling: a policy's
        ({"command": "failover", "profile": "Primary"}, "spec.profile: Invalid value"),  # and the lock's
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
        # Nor a bidirectional control, which reorders what a reader sees.
        ({"command": "start", "reason": "approve \u202eevil"}, REASON_REFUSED),
        (
            {"command": "start", "config": "\u2066x\u2069"},
            'spec.config: Invalid value: "string": ' + TEXT_REFUSED,
        ),
    ],
)
def test_api_server_refuses_invalid_runbooks(mdops_crds, namespace, spec, message):
    result = _apply(mdops_crds, namespace, spec)
    assert result.returncode != 0
    assert message in result.stderr


def test_free_text_keeps_tabs_newlines_and_any_printable_character(mdops_crds, namespace):
    text = "--dry-run -x -- $(id) `id` 'q' \"qq\" Ünï ✓ 日本 \U0001f680 \u2028"
    spec = {"command": "start", "reason": f"{text}\ttab\nnewline", "config": text, "requestedBy": text}
    assert _apply(mdops_crds, namespace, spec).returncode == 0
    got = json.loads(mdops_crds.kubectl("get", "rb", "rb1", "-n", namespace, "-o", "json").stdout)
    assert {key: got["spec"][key] for key in spec} == spec


def test_a_name_too_long_to_label_a_job_is_refused(mdops_crds, namespace):
    longest = "n" * crd.MAX_RUNBOOK_NAME_LENGTH
    assert _apply(mdops_crds, namespace, {"command": "start"}, name=longest).returncode == 0
    refused = _apply(mdops_crds, namespace, {"command": "start"}, name=longest + "x")
    assert refused.returncode != 0
    assert crd.RUNBOOK_NAME in refused.stderr


def test_a_long_named_runbook_from_before_the_rule_still_gets_its_status(mdops_crds, namespace):
    """An upgrade: a Runbook created before the name rule existed is never refused a status write."""
    long_name, spec = "l" * 80, {"command": "start"}
    rules = "/spec/versions/0/schema/openAPIV3Schema/x-kubernetes-validations"
    removal = json.dumps([{"op": "remove", "path": rules}])
    mdops_crds.kubectl("patch", "crd", f"{keys.PLURAL}.{keys.GROUP}", "--type=json", "-p", removal)
    try:
        wait_until(lambda: _apply(mdops_crds, namespace, spec, name=long_name).returncode == 0, 30, "no rule")
    finally:
        mdops_crds.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "manifests/crd.yaml")
        )
    wait_until(
        lambda: crd.RUNBOOK_NAME in _apply(mdops_crds, namespace, spec, name=long_name + "x").stderr,
        30,
        "the rule back",
    )
    status = json.dumps({"status": {"message": "queued"}})
    patch = ("patch", "rb", long_name, "-n", namespace, "--subresource=status", "--type=merge", "-p", status)
    patched = mdops_crds.kubectl(*patch, check=False)
    assert patched.returncode == 0, patched.stderr


def test_spec_is_immutable(mdops_crds, namespace):
    assert _apply(mdops_crds, namespace, {"command": "failover"}).returncode == 0
    changed = _apply(mdops_crds, namespace, {"command": "failback"})
    assert changed.returncode != 0
    assert crd.SPEC_IMMUTABLE in changed.stderr


def _cancel(cluster, namespace, cancel: dict | None, name: str = "rb1"):
    patch = json.dumps({"spec": {"cancel": cancel}})
    return cluster.kubectl("patch", "rb", name, "-n", namespace, "--type=merge", "-p", patch, check=False)


def test_a_runbook_is_cancelled_once_and_only_before_it_finished(mdops_crds, namespace):
    assert _apply(mdops_crds, namespace, {"command": "failover"}).returncode == 0
    # Nothing else changes with it; it is set once, and stays as it was set.
    both = json.dumps({"spec": {"cancel": {}, "profile": "backup"}})
    changed = mdops_crds.kubectl(
        "patch", "rb", "rb1", "-n", namespace, "--type=merge", "-p", both, check=False
    )
    assert changed.returncode != 0 and crd.SPEC_IMMUTABLE in changed.stderr
    assert _cancel(mdops_crds, namespace, {"reason": "wrong feed"}).returncode == 0
    got = json.loads(mdops_crds.kubectl("get", "rb", "rb1", "-n", namespace, "-o", "json").stdout)
    assert got["spec"]["cancel"] == {"requestedBy": "", "reason": "wrong feed"}
    again = _cancel(mdops_crds, namespace, {"reason": "another"})
    assert again.returncode != 0 and crd.CANCEL_ONCE in again.stderr
    removed = _cancel(mdops_crds, namespace, None)
    assert removed.returncode != 0 and crd.CANCEL_ONCE in removed.stderr
    bad = _cancel(mdops_crds, namespace, {"reason": "\u001b[2J"}, name="rb1")
    assert bad.returncode != 0
    # A finished Runbook has no run to cancel.
    assert _apply(mdops_crds, namespace, {"command": "drill"}, name="rb2").returncode == 0
    assert (
        _write_status(mdops_crds, namespace, {"result": "success", "exitCode": 0}, name="rb2").returncode == 0
    )
    late = _cancel(mdops_crds, namespace, {"reason": "too late"}, name="rb2")
    assert late.returncode != 0 and crd.CANCEL_FINISHED in late.stderr


def test_printer_columns_and_explain(mdops_crds, namespace):
    _apply(mdops_crds, namespace, {"command": "drill", "profile": "backup"})
    table = mdops_crds.kubectl("get", "rb", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "COMMAND", "PROFILE", "WINDOW", "STATUS", "RESULT", "EXIT", "AGE"]
    assert table[1].split()[:3] == ["rb1", "drill", "backup"]
    # A run without a result yet says where it is.
    running = {"reason": "Running", "message": "running", "lastTransitionTime": "2026-12-06T01:00:00Z"}
    condition = {"type": "Succeeded", "status": "Unknown", **running}
    assert _write_status(mdops_crds, namespace, {"conditions": [condition]}).returncode == 0
    row = mdops_crds.kubectl("get", "rb", "rb1", "-n", namespace, "--no-headers").stdout.split()
    assert row[:4] == ["rb1", "drill", "backup", "Running"]  # no window yet: an empty cell
    explain = mdops_crds.kubectl("explain", "runbook.spec.dryRun").stdout
    assert "changes nothing" in explain


def _write_status(cluster, namespace, status: dict, name: str = "rb1"):
    patch = json.dumps([{"op": "add", "path": "/status", "value": status}])
    return cluster.kubectl(
        "patch", "rb", name, "-n", namespace, "--subresource=status", "--type=json", "-p", patch, check=False
    )


def test_a_finished_status_is_final(mdops_crds, namespace):
    """Whoever writes it (a second controller replica that ran the same Runbook as peering settled, a
    person with kubectl), a recorded result stands; an unfinished status changes freely until then."""
    assert _apply(mdops_crds, namespace, {"command": "failover"}).returncode == 0
    running = {"attempts": 1, "startedAt": "2026-12-03T01:00:00Z", "message": "running"}
    assert _write_status(mdops_crds, namespace, running).returncode == 0
    finished = {**running, "result": "success", "exitCode": 0, "finishedAt": "2026-12-03T01:00:05Z"}
    assert _write_status(mdops_crds, namespace, finished).returncode == 0
    for other in (running, {**finished, "result": "failed", "exitCode": 1}, {**finished, "message": "again"}):
        refused = _write_status(mdops_crds, namespace, other)
        assert refused.returncode != 0
        assert crd.STATUS_FINAL in refused.stderr
    assert _write_status(mdops_crds, namespace, finished).returncode == 0  # the same record again: no change
    # Nor is it removed whole (then anything could be written again): a rule on the status itself is only
    # evaluated while there is one.
    for removal in (
        ("--type=json", "-p", json.dumps([{"op": "remove", "path": "/status"}])),
        ("--type=merge", "-p", json.dumps({"status": None})),
    ):
        patch = ("patch", "rb", "rb1", "-n", namespace, "--subresource=status", *removal)
        refused = mdops_crds.kubectl(*patch, check=False)
        assert refused.returncode != 0
        assert "status: Invalid value" in refused.stderr and crd.STATUS_FINAL in refused.stderr
    got = json.loads(mdops_crds.kubectl("get", "rb", "rb1", "-n", namespace, "-o", "json").stdout)
    assert got["status"] == finished
