"""Generated copies (CRD, values schema, scripts) match their sources."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml
from pkgtools import CHART, MANIFESTS, REPO


def test_generated_files_are_up_to_date():
    result = subprocess.run(
        [sys.executable, str(REPO / "charts" / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_kustomize_scripts_configmap_lists_every_script():
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    scripts = sorted(p.name for p in (REPO / "examples" / "scripts").iterdir() if p.name != "README.md")
    assert generator["name"] == "mdops-scripts"
    assert sorted(f.removeprefix("scripts/") for f in generator["files"]) == scripts


def _keys(values: dict, schema: dict, prefix: str = "") -> tuple[set[str], set[str]]:
    """Dotted keys of the values and of the schema's properties, down to free-form maps."""
    in_values, in_schema = set(), set()
    properties = schema.get("properties", {})
    for key, value in values.items():
        in_values.add(prefix + key)
        if isinstance(value, dict) and "properties" in properties.get(key, {}):
            sub_values, sub_schema = _keys(value, properties[key], f"{prefix}{key}.")
            in_values |= sub_values
            in_schema |= sub_schema
    in_schema |= {prefix + key for key in properties}
    return in_values, in_schema


def test_every_value_is_in_the_schema_and_documented_and_vice_versa():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    in_values, in_schema = _keys(values, schema)
    assert in_values == in_schema - {"global"}

    def walk(node: dict, where: str) -> None:
        for key, prop in node.get("properties", {}).items():
            assert prop.get("description"), f"{where}{key} has no description"
            walk(prop, f"{where}{key}.")

    walk(schema, "")
