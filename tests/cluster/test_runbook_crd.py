"""The API server itself validates Runbooks: schema, bounds, unknown fields and an immutable spec."""

from __future__ import annotations

import json

import pytest

from runbooks import crd, models


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
        ({"command": "start", "reason": "a\u0000b"}, "spec.reason: Invalid value"),  # scripts get it in env
        ({"command": "start", "config": "\u0000"}, "spec.config: Invalid value"),
    ],
)
def test_api_server_refuses_invalid_runbooks(mdops_crds, namespace, spec, message):
    result = _apply(mdops_crds, namespace, spec)
    assert result.returncode != 0
    assert message in result.stderr


def test_spec_is_immutable(mdops_crds, namespace):
    assert _apply(mdops_crds, namespace, {"command": "failover"}).returncode == 0
    changed = _apply(mdops_crds, namespace, {"command": "failback"})
    assert changed.returncode != 0
    assert crd.SPEC_IMMUTABLE in changed.stderr


def test_printer_columns_and_explain(mdops_crds, namespace):
    _apply(mdops_crds, namespace, {"command": "drill", "profile": "backup"})
    table = mdops_crds.kubectl("get", "rb", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "COMMAND", "PROFILE", "WINDOW", "RESULT", "EXIT", "AGE"]
    assert table[1].split()[:3] == ["rb1", "drill", "backup"]
    explain = mdops_crds.kubectl("explain", "runbook.spec.dryRun").stdout
    assert "changes nothing" in explain
