"""The Runbook CustomResourceDefinition, generated from :mod:`runbooks.models`.

``python -m runbooks.crd`` prints it; ``make generate`` writes it to
``manifests/`` (and the chart), and a test fails when those copies drift.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from pydantic import BaseModel

from runbooks import keys, models

SPEC_IMMUTABLE = "spec is immutable: create a new Runbook (with a new name) to run again"

PRINTER_COLUMNS = [
    {"name": "Command", "type": "string", "jsonPath": ".spec.command"},
    {"name": "Profile", "type": "string", "jsonPath": ".spec.profile"},
    {"name": "Window", "type": "string", "jsonPath": ".status.window"},
    {"name": "Result", "type": "string", "jsonPath": ".status.result"},
    {"name": "Exit", "type": "integer", "jsonPath": ".status.exitCode"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {
        "name": "Status",
        "type": "string",
        "priority": 1,
        "jsonPath": ".status.conditions[?(@.type=='Succeeded')].reason",
    },
    {"name": "Request", "type": "string", "priority": 1, "jsonPath": ".status.requestId"},
    {"name": "By", "type": "string", "priority": 1, "jsonPath": ".spec.requestedBy"},
]

_KEEP = {
    "type",
    "description",
    "enum",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "maxItems",
    "items",
    "properties",
    "required",
    "format",
}


def openapi(model: type[BaseModel]) -> dict[str, Any]:
    """A structural OpenAPI v3 schema for ``model``, as Kubernetes wants it: refs inlined,
    ``Optional`` unwrapped, free-form objects marked ``x-kubernetes-preserve-unknown-fields``."""
    schema = model.model_json_schema(by_alias=True, mode="serialization")
    definitions = schema.pop("$defs", {})

    def convert(node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            target = convert(definitions[node["$ref"].rsplit("/", 1)[1]])
            return {**target, **{k: v for k, v in node.items() if k in ("description", "default")}}
        if "anyOf" in node:
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            assert len(options) == 1, f"unsupported union: {node}"
            merged = {**convert(options[0]), **{k: v for k, v in node.items() if k in _KEEP}}
            if node.get("default", "missing") is None:
                merged.pop("default", None)
            return merged
        if "const" in node:
            node = {**node, "enum": [node["const"]]}
        out = {k: v for k, v in node.items() if k in _KEEP}
        if out.get("default", "missing") is None or out.get("default") == []:
            out.pop("default")
        if "properties" in out:
            out["properties"] = {name: convert(sub) for name, sub in out["properties"].items()}
        if "items" in out:
            out["items"] = convert(out["items"])
        if out.get("type") == "object" and "properties" not in out:
            out["x-kubernetes-preserve-unknown-fields"] = True
        return out

    return convert(schema)


def build() -> dict[str, Any]:
    spec = openapi(models.RunbookSpec)
    spec["x-kubernetes-validations"] = [{"rule": "self == oldSelf", "message": SPEC_IMMUTABLE}]
    status = openapi(models.RunbookStatus)
    status["properties"]["conditions"]["x-kubernetes-list-type"] = "map"
    status["properties"]["conditions"]["x-kubernetes-list-map-keys"] = ["type"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{keys.PLURAL}.{keys.GROUP}"},
        "spec": {
            "group": keys.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": keys.KIND,
                "plural": keys.PLURAL,
                "singular": keys.SINGULAR,
                "shortNames": keys.SHORT_NAMES,
                "categories": ["mdops"],
            },
            "versions": [
                {
                    "name": keys.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A request to run one market-data runbook command, exactly once.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    header = "# Generated by `python -m runbooks.crd` from runbooks/models.py. Do not edit.\n"
    return header + yaml.safe_dump(build(), sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(render())
