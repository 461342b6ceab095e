"""The CustomResourceDefinitions of mdops, generated from their typed models: the Runbook
(:mod:`runbooks.models`), RunbookPolicy, RunbookApproval and RunbookSchedule.

``python -m runbooks.crd`` prints them all; ``python -m runbooks.crd --write manifests`` (``make
generate``) writes each to its file there (the Runbook's also to the chart), and a test fails when
those copies drift. Nested CEL rules live on the models (``json_schema_extra``); the rules on a whole
spec or object, and the printer columns, live here with the rest of each kind's CRD.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from runbooks import approval, keys, models, policy, schedule

SPEC_IMMUTABLE = "spec is immutable: create a new Runbook (with a new name) to run again"
# spec.cancel is the one field a Runbook may be given after its creation: once, while it has not finished.
CANCEL_ONCE = "spec.cancel is set once: it is never changed or removed"
CANCEL_FINISHED = "the Runbook has finished: there is no run to cancel"
# A finished Runbook's status is its record: no writer changes it afterwards, not even a second controller
# replica that ran the same Runbook while kopf's peering settled (the API server refuses the write), nor
# removes it whole (a rule on the status itself would only be evaluated while there is one: on the object).
STATUS_FINAL = "status is final: the Runbook has finished and its result is recorded"
# As Kubernetes does for a Job (its name labels its pods): the Runbook's name labels its Job and pods.
MAX_RUNBOOK_NAME_LENGTH = 63
RUNBOOK_NAME = (
    f"a Runbook's name is at most {MAX_RUNBOOK_NAME_LENGTH} characters: it labels the Job that runs it"
)

PRINTER_COLUMNS = [
    {"name": "Command", "type": "string", "jsonPath": ".spec.command"},
    {"name": "Profile", "type": "string", "jsonPath": ".spec.profile"},
    {"name": "Window", "type": "string", "jsonPath": ".status.window"},
    # Where the run is (Queued, AwaitingApproval, Running, ...) before it has a result, and why it ended.
    {"name": "Status", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Succeeded')].reason"},
    {"name": "Result", "type": "string", "jsonPath": ".status.result"},
    {"name": "Exit", "type": "integer", "jsonPath": ".status.exitCode"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Request", "type": "string", "priority": 1, "jsonPath": ".status.requestId"},
    {"name": "By", "type": "string", "priority": 1, "jsonPath": ".spec.requestedBy"},
]

POLICY_PRINTER_COLUMNS = [
    {"name": "Rules", "type": "string", "jsonPath": ".spec.rules[*].name"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

APPROVAL_PRINTER_COLUMNS = [
    {"name": "Request", "type": "string", "jsonPath": ".spec.requestId"},
    {"name": "Decision", "type": "string", "jsonPath": ".spec.decision"},
    {"name": "Approver", "type": "string", "jsonPath": ".spec.approver"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Requester", "type": "string", "priority": 1, "jsonPath": ".spec.requester"},
    {"name": "Comment", "type": "string", "priority": 1, "jsonPath": ".spec.comment"},
    {"name": "Runbook", "type": "string", "priority": 1, "jsonPath": ".spec.runbookUid"},
]

# NEXT is a string: kubectl shows a future "date" as <invalid>.
SCHEDULE_PRINTER_COLUMNS = [
    {"name": "Schedule", "type": "string", "jsonPath": ".status.schedule"},
    {"name": "Next", "type": "string", "jsonPath": ".status.nextSlot"},
    {"name": "Last", "type": "date", "jsonPath": ".status.lastSlot"},
    {"name": "Result", "type": "string", "jsonPath": ".status.lastResult"},
    {"name": "Suspended", "type": "boolean", "jsonPath": ".spec.suspend"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Runbook", "type": "string", "priority": 1, "jsonPath": ".status.lastRunbook"},
    {"name": "Missed", "type": "integer", "priority": 1, "jsonPath": ".status.missedSlots"},
    {"name": "Skipped", "type": "integer", "priority": 1, "jsonPath": ".status.skippedSlots"},
]
SCHEDULE_NAME = (
    f"a schedule's name is at most {schedule.MAX_NAME_LENGTH} characters: "
    "its slots' Runbooks are named <schedule>-<yyyymmddhhmmss>"
)

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
    "minItems",
    "maxItems",
    "items",
    "properties",
    "required",
    "format",
}


def _kept(key: str) -> bool:
    return key in _KEEP or key.startswith("x-kubernetes-")


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
            merged = {**convert(options[0]), **{k: v for k, v in node.items() if _kept(k)}}
            if node.get("default", "missing") is None:
                merged.pop("default", None)
            return merged
        if "const" in node:
            node = {**node, "enum": [node["const"]]}
        out = {k: v for k, v in node.items() if _kept(k)}
        if out.get("default", "missing") is None or out.get("default") == []:
            out.pop("default")
        if "properties" in out:
            out["properties"] = {name: convert(sub) for name, sub in out["properties"].items()}
        if "items" in out:
            out["items"] = convert(out["items"])
        if out.get("type") == "object" and "properties" not in out:
            out["x-kubernetes-preserve-unknown-fields"] = True
        if out.get("pattern") in models.TEXT_PATTERNS:
            out["x-kubernetes-validations"] = [_text_rule(out["pattern"])]
        return out

    return convert(schema)


def _text_rule(pattern: str) -> dict[str, str]:
    """The free-text pattern ``^[^...]*$`` as a CEL rule, whose message (the API server shows it beside the
    pattern's) says in words which characters are refused."""
    refused = pattern.removeprefix("^[^").removesuffix("]*$").replace("\\", "\\\\")
    return {"rule": f"!self.matches('[{refused}]')", "message": models.TEXT_PATTERNS[pattern]}


@dataclass(frozen=True)
class Kind:
    """One custom resource: its names, models, CRD-level rules and printer columns."""

    kind: str
    plural: str
    singular: str
    short_names: list[str]
    description: str
    spec: type[BaseModel]
    file: str  # under manifests/
    status: type[BaseModel] | None = None
    printer_columns: list[dict[str, Any]] = field(default_factory=list)
    spec_rules: list[dict[str, str]] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)  # on the object: may read metadata and status
    selectable_fields: list[str] = field(default_factory=list)

    def manifest(self, name: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
        """An object of this kind; ``spec`` as Kubernetes names it (camelCase)."""
        return {**models.manifest(name, spec, **metadata), "kind": self.kind}


def _all_but_cancel_unchanged() -> str:
    """A CEL rule on a Runbook's spec: each field but ``cancel`` as it was, present or absent alike."""
    names = [to_camel(name) for name in models.RunbookSpec.model_fields if name != "cancel"]
    return " && ".join(
        f"has(self.{n}) == has(oldSelf.{n}) && (!has(self.{n}) || self.{n} == oldSelf.{n})" for n in names
    )


RUNBOOK = Kind(
    keys.KIND,
    keys.PLURAL,
    keys.SINGULAR,
    keys.SHORT_NAMES,
    "A request to run one market-data runbook command, exactly once.",
    models.RunbookSpec,
    "crd.yaml",
    models.RunbookStatus,
    PRINTER_COLUMNS,
    spec_rules=[
        {"rule": _all_but_cancel_unchanged(), "message": SPEC_IMMUTABLE},
        {
            "rule": "!has(oldSelf.cancel) || has(self.cancel) && self.cancel == oldSelf.cancel",
            "message": CANCEL_ONCE,
        },
    ],
    rules=[
        # At creation only: a Runbook that exists is never refused a status write (the name cannot change).
        {
            "rule": f"oldSelf.hasValue() || self.metadata.name.size() <= {MAX_RUNBOOK_NAME_LENGTH}",
            "optionalOldSelf": True,
            "message": RUNBOOK_NAME,
        },
        {
            "rule": "!has(oldSelf.status) || !has(oldSelf.status.result)"
            " || has(self.status) && self.status == oldSelf.status",
            "fieldPath": ".status",
            "message": STATUS_FINAL,
        },
        {
            "rule": "!has(self.spec.cancel) || has(oldSelf.spec.cancel)"
            " || !has(oldSelf.status) || !has(oldSelf.status.result)",
            "fieldPath": ".spec.cancel",
            "message": CANCEL_FINISHED,
        },
    ],
    # Empty until the run has finished: the controller watches `status.result=` only (Kubernetes >= 1.31).
    selectable_fields=[".status.result"],
)
POLICY = Kind(
    policy.KIND,
    policy.PLURAL,
    policy.SINGULAR,
    policy.SHORT_NAMES,
    "Change windows and approvals for the Runbooks of this namespace.",
    policy.RunbookPolicySpec,
    "crd-runbookpolicy.yaml",
    printer_columns=POLICY_PRINTER_COLUMNS,
)
APPROVAL = Kind(
    approval.KIND,
    approval.PLURAL,
    approval.SINGULAR,
    approval.SHORT_NAMES,
    "One person's decision, approve or reject, on one Runbook request.",
    approval.RunbookApprovalSpec,
    "crd-runbookapproval.yaml",
    printer_columns=APPROVAL_PRINTER_COLUMNS,
    spec_rules=[{"rule": "self == oldSelf", "message": approval.SPEC_IMMUTABLE}],
    selectable_fields=[".spec.requestId"],
)
SCHEDULE = Kind(
    schedule.KIND,
    schedule.PLURAL,
    schedule.SINGULAR,
    schedule.SHORT_NAMES,
    "Runbooks at the venue's session rhythm or on a cron schedule: one Runbook per slot, at most once.",
    schedule.RunbookScheduleSpec,
    "crd-runbookschedule.yaml",
    schedule.RunbookScheduleStatus,
    SCHEDULE_PRINTER_COLUMNS,
    rules=[{"rule": f"self.metadata.name.size() <= {schedule.MAX_NAME_LENGTH}", "message": SCHEDULE_NAME}],
)
KINDS = (RUNBOOK, POLICY, APPROVAL, SCHEDULE)


def build(kind: Kind = RUNBOOK) -> dict[str, Any]:
    spec = openapi(kind.spec)
    if kind.spec_rules:
        spec["x-kubernetes-validations"] = kind.spec_rules
    properties: dict[str, Any] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": spec,
    }
    version: dict[str, Any] = {"name": keys.VERSION, "served": True, "storage": True}
    if kind.status is not None:
        status = openapi(kind.status)
        status["properties"]["conditions"]["x-kubernetes-list-type"] = "map"
        status["properties"]["conditions"]["x-kubernetes-list-map-keys"] = ["type"]
        properties["status"] = status
        version["subresources"] = {"status": {}}
    if kind.printer_columns:
        version["additionalPrinterColumns"] = kind.printer_columns
    if kind.selectable_fields:
        version["selectableFields"] = [{"jsonPath": path} for path in kind.selectable_fields]
    root: dict[str, Any] = {
        "type": "object",
        "description": kind.description,
        "required": ["spec"],
        "properties": properties,
    }
    if kind.rules:
        root["x-kubernetes-validations"] = kind.rules
    version["schema"] = {"openAPIV3Schema": root}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{keys.GROUP}"},
        "spec": {
            "group": keys.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": kind.short_names,
                "categories": ["mdops"],
            },
            "versions": [version],
        },
    }


def render(kind: Kind = RUNBOOK) -> str:
    source = "runbooks/models.py" if kind is RUNBOOK else f"{kind.spec.__module__.replace('.', '/')}.py"
    header = f"# Generated by `python -m runbooks.crd` from {source}. Do not edit.\n"
    return header + yaml.safe_dump(build(kind), sort_keys=False, width=120)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m runbooks.crd", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=Path, metavar="DIR", help="write each CRD to its file in DIR")
    args = parser.parse_args(argv)
    for kind in KINDS:
        if args.write:
            (args.write / kind.file).write_text(render(kind))
        else:
            sys.stdout.write("---\n" + render(kind))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
