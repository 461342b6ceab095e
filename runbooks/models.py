"""The Runbook resource, typed: the one source of its CRD, the controller's and the API's view.

Field names are snake_case in Python and camelCase in Kubernetes (``dry_run`` is ``dryRun``).
Descriptions become the CRD's, so ``kubectl explain runbook.spec`` shows them. The constrained field types
below are declared once and shared by the CRD, the REST API's request schema and the settings.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from runbooks import keys
from runbooks.contract import LOG_LEVELS, Command, ConditionType, RunState, SessionState, finished, run_state

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
# Free text reaches scripts through their environment, which cannot carry a NUL character, and their logs
# and terminals, which act on control characters: none (C0, DEL, C1) is allowed, but tab and newline in a
# reason. Nor are the bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): they
# reorder what a reader sees (an approver reading a reason) against what was written, invisibly. Right-to-
# left text itself is allowed. Those are written as themselves, not escaped: the patterns are the schemas'
# too, which the API server reads as Go's regular expressions (no \u), and the CRD adds a CEL rule saying
# each in words (TEXT_PATTERNS); the models' checks say it in words too.
BIDI_CONTROLS = "\u202a-\u202e\u2066-\u2069"
TEXT_PATTERN = r"^[^\x00-\x1f\x7f-\x9f" + BIDI_CONTROLS + r"]*$"
REASON_PATTERN = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f" + BIDI_CONTROLS + r"]*$"
TEXT_PATTERNS = {
    TEXT_PATTERN: "must not contain control characters or bidirectional controls",
    REASON_PATTERN: "must not contain control characters or bidirectional controls (tab and newline are "
    "allowed)",
}


def _text(max_length: int, pattern: str) -> Any:
    """Free text of at most ``max_length`` characters that ``pattern`` (one of ``TEXT_PATTERNS``) allows; its
    error names the first character refused and where it is (never the text: the REST API echoes no value)."""
    matches = re.compile(pattern).fullmatch

    def check(value: str) -> str:
        if matches(value) is None:
            position, character = next((i, c) for i, c in enumerate(value) if matches(c) is None)
            raise PydanticCustomError(
                "control_character",
                "{refused}: U+{code} at position {position}",
                {"refused": TEXT_PATTERNS[pattern], "code": f"{ord(character):04X}", "position": position},
            )
        return value

    schema = Field(max_length=max_length, json_schema_extra={"pattern": pattern})
    return Annotated[str, schema, AfterValidator(check)]


# -- field types shared by the CRD, the REST API and the settings -----------------------------------------
# An environment mode or a feed profile: lower case only, as Kubernetes' names, so that one has one
# spelling. `mode: Live` went past a policy's `modes: [live]`, and `profile: Primary` took another lock
# than `primary`'s group, while a script may well read them alike.
Name = Annotated[str, Field(max_length=63, pattern=r"^[a-z0-9][a-z0-9._-]*$")]
RequestId = Annotated[str, Field(min_length=1, max_length=128, pattern=NAME_PATTERN)]
ConfigSet = _text(253, TEXT_PATTERN)
ReasonText = _text(1024, REASON_PATTERN)
Person = _text(253, TEXT_PATTERN)  # a Kubernetes user's or a REST API token's name
TimeoutSeconds = Annotated[int, Field(ge=1, le=86400)]
WindowChoice = Literal["day", "night", "auto"]
Window = Literal["day", "night"]
ApprovalDecision = Literal["Approve", "Reject"]  # a RunbookApproval's, and the status' record of it


def manifest(name: str, spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    """A Runbook object; ``spec`` as Kubernetes names it (camelCase), ``metadata`` beside the name."""
    return {
        "apiVersion": keys.API_VERSION,
        "kind": keys.KIND,
        "metadata": {"name": name, **metadata},
        "spec": spec,
    }


def named_after(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` to be named by the API server after its name, which another object has: its name and a
    dash (``generateName``, which the API server cuts to 58 characters), then 5 random characters."""
    metadata = {key: value for key, value in manifest["metadata"].items() if key != "name"}
    return {**manifest, "metadata": {**metadata, "generateName": f"{manifest['metadata']['name']}-"}}


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def to_k8s(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Cancel(_Model):
    """A request to stop a run, or to never start it."""

    requested_by: Person = Field(
        "",
        description="Who cancels: the REST API's token name, or the Kubernetes user who sets it (the API "
        "server refuses another name; empty: nobody is named).",
    )
    reason: ReasonText = Field("", description="Why the run is cancelled (kept for the audit).")


class RunbookSpec(_Model):
    """What to run. Immutable once created, but for ``cancel``: to run again, create a new Runbook."""

    command: Command = Field(description="The runbook command to run.")
    mode: Name = Field("live", description="Environment mode, e.g. live or uat.")
    window: WindowChoice = Field(
        "auto", description="Trading window; auto resolves it from the session calendar when the run starts."
    )
    profile: Name = Field("primary", description="Feed profile, e.g. primary or backup.")
    config: ConfigSet = Field("", description="Configuration set the script should use, e.g. backup.")
    request_id: RequestId | None = Field(
        None, description="Idempotency key: a request id runs at most once. Defaults to the Runbook's name."
    )
    enforce: bool = Field(False, description="Fail the run when the health gate fails (otherwise only warn).")
    dry_run: bool = Field(
        False, description="Validate and plan only: the script runs in dry-run mode and changes nothing."
    )
    reason: ReasonText = Field("", description="Why this runbook is run (kept for the audit).")
    timeout_seconds: TimeoutSeconds = Field(300, description="Stop the run and fail it after this long.")
    requested_by: Person = Field(
        "",
        description="Who asked for the run: the REST API's token name, or the Kubernetes user who creates "
        "the Runbook (the API server refuses another name; empty: nobody is named, no approval can count).",
    )
    cancel: Cancel | None = Field(
        None,
        description="Set once to cancel the run: one that has not started never starts, one running is "
        "stopped (exit code 130); refused on a finished Runbook, and never changed or removed once set.",
    )


# The spec fields that make a request: the same request id with another value of any is another request
# (the REST API answers it 409; the controller never settles it as a duplicate of the first).
REQUEST_FIELDS = (
    "command",
    "mode",
    "window",
    "profile",
    "config",
    "enforce",
    "dryRun",
    "reason",
    "timeoutSeconds",
)


def request_differences(existing: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The request fields in which two specs differ (a field left out is its default)."""
    defaults = RunbookSpec(command=wanted["command"]).to_k8s()
    return [
        key
        for key in REQUEST_FIELDS
        if existing.get(key, defaults.get(key)) != wanted.get(key, defaults.get(key))
    ]


OTHER_PARAMETERS = "not run: request id {request_id} was used by {runbook} with other parameters"


def other_parameters(request_id: str, runbook: str) -> str:
    """The message of a Runbook refused because its request id ran as ``runbook`` with other parameters."""
    return (
        OTHER_PARAMETERS.format(request_id=request_id, runbook=runbook)
        + f" (one of {', '.join(REQUEST_FIELDS)}); give this Runbook a new request id"
    )


def refused_for_other_parameters(message: str | None, request_id: str, runbook: str) -> bool:
    """Whether ``message`` is :func:`other_parameters`'s for this request id and first run."""
    return (message or "").startswith(OTHER_PARAMETERS.format(request_id=request_id, runbook=runbook))


def request_fingerprint(spec: dict[str, Any]) -> str:
    """A short digest of a spec's request fields: the same for the same request, defaults or not."""
    defaults = RunbookSpec(command=spec["command"]).to_k8s()
    values = [spec.get(key, defaults.get(key)) for key in REQUEST_FIELDS]
    return hashlib.sha256(json.dumps(values, separators=(",", ":")).encode()).hexdigest()[:32]


class Condition(_Model):
    type: str = Field(description="Condition type: Succeeded, Running, Queued, Ready, Reconciling, Stalled.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown (not yet known).")
    reason: str = Field(description="CamelCase reason for the last transition.")
    message: str = Field("", description="Human-readable detail.")
    last_transition_time: str = Field(description="When the status last changed (RFC 3339).")
    observed_generation: int | None = Field(None, description="The generation this condition was set for.")


class LogLine(_Model):
    time: str = Field(description="When the line was written (RFC 3339).")
    level: Literal[LOG_LEVELS] = Field(description="DEBUG, INFO, WARNING or ERROR.")  # type: ignore[valid-type]
    message: str = Field(max_length=1024, description="The line, cut to 1024 characters.")


class EnvironmentState(_Model):
    environment_mode: str | None = Field(None, description="The environment mode, e.g. live.")
    active_profile: str | None = Field(None, description="The feed profile in use, e.g. primary or backup.")
    active_window: str | None = Field(None, description="The trading window in use: day or night.")


class Execution(_Model):
    executor: Literal["local", "job"] = Field(description="How the run executes.")
    name: str = Field(description="The Job's name, or the local process id.")


class RunSession(_Model):
    """The venue's session when the window was resolved."""

    venue: str = Field(max_length=16, description="The venue, an exchange_calendars name (e.g. XHKG).")
    state: SessionState = Field(description="pre_open, open, lunch_break, closed or holiday.")


class PolicyRequirement(_Model):
    """What the RunbookPolicies of the namespace asked of the run."""

    rules: list[str] = Field(
        default_factory=list, max_length=64, description="The rules that matched (policy/rule)."
    )
    approvals_required: int = Field(0, ge=0, le=5, description="Approvals from distinct people needed.")
    approvals_expire_at: str | None = Field(
        None, description="When a run still short of its approvals fails (ApprovalExpired)."
    )


class ApprovalRecord(_Model):
    """One decision on the run, from a RunbookApproval."""

    approver: Person = Field(description="Who decided (the RunbookApproval's spec.approver).")
    decision: ApprovalDecision = Field(description="Approve or Reject.")
    at: str = Field(description="When it was given (the RunbookApproval's creation).")
    comment: str = Field("", max_length=1024, description="Why, as the approver said it.")
    ignored: str | None = Field(
        None, max_length=256, description="Why it did not count (the requester's own, expired, ...)."
    )


class RunbookStatus(_Model):
    """Written only by the controller, through the status subresource; read by the REST API."""

    observed_generation: int | None = Field(None, description="The generation this status was written for.")
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        description="Succeeded (kubectl wait --for=condition=Succeeded), Queued, Running, and the summary "
        "Ready, Reconciling and Stalled that kstatus and Argo CD read.",
    )
    request_id: str | None = Field(None, description="The request id in effect (spec.requestId or the name).")
    window: Window | None = Field(None, description="The trading window the run used (auto resolved).")
    target: str | None = Field(None, description="The lock target this run is serialised on.")
    exit_code: int | None = Field(
        None,
        description="Runner exit code: 0, 1, 2, 3, 124, 125 or 130; none for a run that ended without "
        "executing (reason OutsideChangeWindow, Rejected or ApprovalExpired).",
    )
    result: Literal["success", "failed"] | None = Field(
        None, description="success or failed, once the run has finished; never changed afterwards."
    )
    message: str | None = Field(None, max_length=1024, description="Summary of the outcome.")
    started_at: str | None = Field(None, description="When the run started (RFC 3339, UTC).")
    finished_at: str | None = Field(None, description="When the run finished (RFC 3339, UTC).")
    logs: list[LogLine] = Field(default_factory=list, max_length=100, description="The run's last log lines.")
    health: dict[str, Any] | None = Field(
        None, description="The health report, when the command produced one."
    )
    state: EnvironmentState | None = Field(
        None, description="Environment state after the run (not for dry runs)."
    )
    execution: Execution | None = Field(None, description="The Job or local process that ran it.")
    attempts: int = Field(0, ge=0, description="How many times an execution was started (at most 1).")
    duplicate_of: str | None = Field(
        None, description="The earlier Runbook (namespace/name) that already ran this request id."
    )
    session: RunSession | None = Field(None, description="The venue's session when the window was resolved.")
    waiting_until: str | None = Field(
        None, description="When a run held outside its change window expects to start (RFC 3339)."
    )
    policy: PolicyRequirement | None = Field(None, description="What the RunbookPolicies asked of the run.")
    approvals: list[ApprovalRecord] = Field(
        default_factory=list, max_length=32, description="The decisions on the run: who, when, why."
    )

    @classmethod
    def read(cls, data: Any) -> RunbookStatus:
        """A status as stored, for readers that must not fail on one odd object: a top-level field that does
        not validate (strictly: no coercion) is left out, the rest is kept."""
        fields = dict(data) if isinstance(data, dict) else {}
        while True:
            try:
                return cls.model_validate(fields, strict=True)
            except ValidationError as error:
                bad = {e["loc"][0] for e in error.errors() if e["loc"]}
                if not bad & fields.keys():
                    return cls()
                fields = {key: value for key, value in fields.items() if key not in bad}

    def condition(self, kind: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)

    @property
    def succeeded(self) -> Condition | None:
        return self.condition(ConditionType.SUCCEEDED)

    @property
    def finished(self) -> bool:
        succeeded = self.succeeded
        return succeeded is not None and finished(succeeded.status)

    @property
    def run_state(self) -> RunState:
        succeeded = self.succeeded
        return run_state(succeeded.status, succeeded.reason) if succeeded else RunState.PENDING
