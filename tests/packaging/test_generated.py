"""Generated copies (CRD, values schema) match their sources; the scripts have no copies at all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from pkgtools import CHART, REPO, SCRIPTS


def script_files() -> list[Path]:
    """What a scripts ConfigMap holds: the files of examples/scripts/ but its README and kustomization."""
    skip = {"README.md", "kustomization.yaml"}
    return sorted(p for p in SCRIPTS.iterdir() if p.is_file() and p.name not in skip)


def test_generated_files_are_up_to_date():
    result = subprocess.run(
        [sys.executable, str(REPO / "charts" / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_scripts_configmap_lists_every_script():
    kustomization = yaml.safe_load((SCRIPTS / "kustomization.yaml").read_text())
    (generator,) = kustomization["configMapGenerator"]
    assert generator["name"] == "mdops-scripts"
    assert sorted(generator["files"]) == [p.name for p in script_files()]


def test_no_script_is_committed_twice():
    """The image, the kustomization beside the scripts and the chart (by a ConfigMap's name) all use
    examples/scripts/ itself: no file elsewhere in the repository holds a copy of a script."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    scripts = {path.read_bytes() for path in script_files()}
    copies = [
        name
        for name in listed.split("\0")
        if name
        and not name.startswith("examples/scripts/")
        and (REPO / name).is_file()
        and (REPO / name).read_bytes() in scripts
    ]
    assert copies == []


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
