"""Generated parts of the chart, from their one source each (Helm only reads files inside the chart).

- ``charts/mdops/values.schema.json`` from ``charts/mdops/values.yaml``: types from the defaults,
  descriptions from the comment above each key, and extra JSON-schema keywords from a
  ``# @schema {...}`` comment line, or from the code (``ENUMS``: the venues). A map that is empty or
  whose ``@schema`` sets ``additionalProperties`` is free-form (its keys are examples, not schema); every
  other map is closed (``additionalProperties: false``), so a misspelt value fails ``helm install``
  instead of being ignored.
- ``charts/mdops/files/crd*.yaml``, the CRDs of mdops (as ``python -m runbooks.crd`` writes them to
  manifests/), ``charts/mdops/files/kopfpeering-crd.yaml`` (from ``manifests/components/peering/``) and
  ``identities.yaml`` (from ``manifests/``), ``charts/mdops/files/prometheusrule.yaml`` (mdops's alerts,
  from ``manifests/components/alerts/``) and ``charts/mdops/files/dashboard.json`` (its Grafana
  dashboard, from ``manifests/components/dashboard/``).

``python charts/generate.py`` writes them (``make generate``); ``--check`` only reports drift (the tests).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from devcluster.prometheus import ALERTS, DASHBOARD
from runbooks import crd
from runbooks.venues import VENUES

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "mdops"
PEERING_CRD = REPO / "manifests" / "components" / "peering" / "kopfpeering-crd.yaml"
IDENTITIES = REPO / "manifests" / "identities.yaml"
SCHEMA_MARK = "@schema"
# Values whose allowed values come from the code, not from a comment: a venue's name is the library's
# (a typo fails `helm install`, not the pod as it starts).
ENUMS = {"calendar.venue": sorted(VENUES)}


def _comment_above(lines: list[str], line: int) -> tuple[str, dict[str, Any]]:
    """The description and @schema keywords in the contiguous comment lines above ``line`` (0-based)."""
    description: list[str] = []
    keywords: dict[str, Any] = {}
    index = line - 1
    while index >= 0 and lines[index].lstrip().startswith("#"):
        text = lines[index].lstrip()[1:].strip()
        if text.startswith(SCHEMA_MARK):
            keywords = {**json.loads(text[len(SCHEMA_MARK) :]), **keywords}
        else:
            description.insert(0, text)
        index -= 1
    return " ".join(description), keywords


def _scalar_type(node: yaml.ScalarNode) -> str | None:
    value = yaml.safe_load(yaml.serialize(node))
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _schema(node: yaml.Node, lines: list[str], path: str, free_form: bool = False) -> dict[str, Any]:
    if isinstance(node, yaml.MappingNode):
        if free_form or not node.value:
            return {"type": "object"}
        properties = {}
        for key, value in node.value:
            where = f"{path}.{key.value}" if path else key.value
            description, keywords = _comment_above(lines, key.start_mark.line)
            if not description:
                raise ValueError(f"values.yaml: {where} has no comment")
            child_free = "additionalProperties" in keywords
            prop = {"description": description, **_schema(value, lines, where, child_free), **keywords}
            if where in ENUMS:
                prop["enum"] = ENUMS[where]
            if "type" not in prop:
                raise ValueError(f"values.yaml: {where}: give its type in an @schema comment")
            properties[key.value] = prop
        return {"type": "object", "additionalProperties": False, "properties": properties}
    if isinstance(node, yaml.SequenceNode):
        schema: dict[str, Any] = {"type": "array"}
        if node.value and isinstance(node.value[0], yaml.ScalarNode):
            schema["items"] = {"type": _scalar_type(node.value[0])}
        return schema
    kind = _scalar_type(node)
    return {"type": kind} if kind else {}


def values_schema(text: str) -> dict[str, Any]:
    root = _schema(yaml.compose(text), text.splitlines(), "")
    # Helm passes "global" to every chart; allow it although the chart uses none.
    root["properties"]["global"] = {"description": "Helm's global values (unused).", "type": "object"}
    return {"$schema": "http://json-schema.org/draft-07/schema#", "title": "mdops chart values", **root}


def render_schema() -> str:
    return json.dumps(values_schema((CHART / "values.yaml").read_text()), indent=2) + "\n"


def expected() -> dict[Path, bytes]:
    """Every generated file and its content."""
    return {
        CHART / "values.schema.json": render_schema().encode(),
        **{CHART / "files" / kind.file: crd.render(kind).encode() for kind in crd.KINDS},
        CHART / "files" / "kopfpeering-crd.yaml": PEERING_CRD.read_bytes(),
        CHART / "files" / "identities.yaml": IDENTITIES.read_bytes(),
        CHART / "files" / "prometheusrule.yaml": ALERTS.read_bytes(),
        CHART / "files" / "dashboard.json": DASHBOARD.read_bytes(),
    }


def drift() -> list[str]:
    """What differs from the sources: stale and missing files."""
    files = expected()
    problems = [
        f"{p.relative_to(REPO)} is stale"
        for p, data in files.items()
        if p.exists() and p.read_bytes() != data
    ]
    problems += [f"{p.relative_to(REPO)} is missing" for p in files if not p.exists()]
    return problems


def write() -> None:
    for path, data in expected().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report drift instead of writing")
    args = parser.parse_args()
    if not args.check:
        write()
    problems = drift()
    for problem in problems:
        print(f"{problem}: run `make generate`", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
