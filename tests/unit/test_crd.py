"""The CRDs in manifests/ are generated from their models and must not drift."""

from pathlib import Path

import pytest

from runbooks import crd
from runbooks.schedule import ETC_GMT

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", crd.KINDS, ids=lambda kind: kind.kind)
def test_generated_crds_match_the_models(kind):
    committed = (REPO / "manifests" / kind.file).read_text()
    assert committed == crd.render(kind), f"manifests/{kind.file} is stale: run `make generate`"


def _schema(kind: crd.Kind) -> dict:
    return crd.build(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_schema_refuses_unknown_commands_and_bad_bounds_by_itself():
    spec = _schema(crd.RUNBOOK)["properties"]["spec"]
    props = spec["properties"]
    assert props["command"]["enum"] == [
        "start",
        "stop",
        "restart",
        "failover",
        "failback",
        "drill",
        "health_check",
    ]
    assert (props["timeoutSeconds"]["minimum"], props["timeoutSeconds"]["maximum"]) == (1, 86400)
    assert spec["required"] == ["command"]
    immutable = spec["x-kubernetes-validations"][0]["rule"]  # every field but cancel (its own rule)
    assert [f for f in props if f"self.{f} == oldSelf.{f}" not in immutable] == ["cancel"]


def test_the_rules_the_schema_cannot_say_are_cel():
    rules = _schema(crd.POLICY)["properties"]["spec"]["properties"]["rules"]
    assert (rules["x-kubernetes-list-type"], rules["x-kubernetes-list-map-keys"]) == ("map", ["name"])
    blackout = rules["items"]["properties"]["blackouts"]["items"]
    assert blackout["x-kubernetes-validations"][0]["rule"] == "self.end > self.start"
    assert rules["items"]["properties"]["allowedStates"]["x-kubernetes-list-type"] == "set"

    assert (
        _schema(crd.APPROVAL)["properties"]["spec"]["x-kubernetes-validations"][0]["rule"]
        == "self == oldSelf"
    )

    schedule = _schema(crd.SCHEDULE)
    assert "self.metadata.name.size() <= 48" in schedule["x-kubernetes-validations"][0]["rule"]
    trigger = schedule["properties"]["spec"]["properties"]["trigger"]
    assert [rule["message"] for rule in trigger["x-kubernetes-validations"]] == [
        "give exactly one of cron, every and session",
        "timeZone goes with cron only",
        ETC_GMT,
        "during goes with every only",
        "every is from 5s to 24h",
        "a session offset is at most 24h (1440m) before or after the event",
    ]
    assert "requestId" not in schedule["properties"]["spec"]["properties"]["template"]["properties"]


def _undescribed(node: dict, path: str) -> list[str]:
    found = []
    for name, sub in (node.get("properties") or {}).items():
        found += [f"{path}.{name}"] * ("description" not in sub) + _undescribed(sub, f"{path}.{name}")
    return found + (_undescribed(node["items"], f"{path}[]") if "items" in node else [])


@pytest.mark.parametrize("kind", crd.KINDS, ids=lambda kind: kind.kind)
def test_kubectl_explain_describes_every_field(kind):
    """`kubectl explain runbook.status.result` says what it is, not <no description>."""
    root = _schema(kind)
    parts = [part for part in ("spec", "status") if part in root["properties"]]
    assert [p for p in parts if "description" not in root["properties"][p]] == []
    assert [f for p in parts for f in _undescribed(root["properties"][p], p)] == []
