"""The CRD in manifests/ is generated from runbooks/models.py and must not drift."""

from pathlib import Path

from runbooks import crd

REPO = Path(__file__).resolve().parents[2]


def test_generated_crd_matches_the_models():
    committed = (REPO / "manifests" / "crd.yaml").read_text()
    assert committed == crd.render(), "manifests/crd.yaml is stale: run `make generate`"


def test_schema_refuses_unknown_commands_and_bad_bounds_by_itself():
    spec = crd.build()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
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
    assert spec["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"
