"""``RunbookPolicy``: change windows and approval requirements, and their evaluation for one run.

A desk commits its policies with its runbooks. Each policy holds rules; a rule matches Runbooks by
command, mode and profile, and says in which session states of the venue they may start, which periods
are blacked out, what happens outside (``Wait`` for the next allowed time, or ``Reject``), and how many
approvals they need in which states.

Every rule that matches a Runbook applies, across all the policies of its namespace: a run may start
only when each of them allows it (the most restrictive wins, whatever the order of the rules or of the
files), and it needs the largest number of approvals any of them asks for. Dry runs are never held.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import AwareDatetime, ConfigDict, Field, ValidationError, model_validator

from runbooks import keys
from runbooks.calendar import CalendarError, SessionCalendar, State, VenueCalendar
from runbooks.contract import Command, Reason
from runbooks.models import TEXT_PATTERN, Name, RunbookSpec, _Model, _text

KIND = "RunbookPolicy"
PLURAL = "runbookpolicies"
SINGULAR = "runbookpolicy"
SHORT_NAMES = ["rbp"]

SET: dict[str, Any] = {"x-kubernetes-list-type": "set"}


def states_field(description: str) -> Any:
    """An optional set of session states (left out: every state)."""
    return Field(None, min_length=1, max_length=len(State), json_schema_extra=SET, description=description)


class Match(_Model):
    """Which Runbooks a rule applies to: all of the given lists must contain the Runbook's value; a
    list left out matches every value."""

    commands: list[Command] | None = Field(
        None,
        min_length=1,
        max_length=len(Command),
        json_schema_extra=SET,
        description="Commands, e.g. [failover].",
    )
    modes: list[Name] | None = Field(
        None, min_length=1, max_length=32, json_schema_extra=SET, description="Environment modes."
    )
    profiles: list[Name] | None = Field(
        None, min_length=1, max_length=32, json_schema_extra=SET, description="Feed profiles."
    )

    def matches(self, spec: RunbookSpec) -> bool:
        return (
            (self.commands is None or spec.command in self.commands)
            and (self.modes is None or spec.mode in self.modes)
            and (self.profiles is None or spec.profile in self.profiles)
        )


# What the API server's date-time format takes and Python's datetime does not: the year 0, an offset of
# 24 hours or more. RFC 3339 with a year from 0001 and an offset within a day.
TIME_PATTERN = (
    r"^([0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})-[0-9]{2}-[0-9]{2}"
    r"[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)


# A time on the first or last day a datetime holds may not exist in another zone, in which a blackout is
# shown (+08:00) and the venue's sessions are looked up: its times lie between these.
EARLIEST, LATEST = (
    datetime.datetime(1, 1, 2, tzinfo=datetime.UTC),
    datetime.datetime(9999, 12, 31, tzinfo=datetime.UTC),
)
TIMES_RANGE = "start and end must lie from 0001-01-02 to 9999-12-30 (UTC)"


class Blackout(_Model):
    """A period in which matched runbooks may not start, whatever the session."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "self.end > self.start", "message": "end must be after start"},
                {
                    "rule": f"self.start >= timestamp('{EARLIEST.isoformat()}') "
                    f"&& self.end < timestamp('{LATEST.isoformat()}')",
                    "message": TIMES_RANGE,
                },
            ]
        }
    )

    start: AwareDatetime = Field(
        description="Start (RFC 3339 with an offset, e.g. 2026-12-24T00:00:00+08:00).",
        json_schema_extra={"pattern": TIME_PATTERN},
    )
    end: AwareDatetime = Field(description="End, excluded.", json_schema_extra={"pattern": TIME_PATTERN})
    reason: _text(256, TEXT_PATTERN) = Field("", description="Why, for the message of a held run.")

    @model_validator(mode="after")
    def _within_range(self) -> Blackout:
        if self.start < EARLIEST or self.end >= LATEST:
            raise ValueError(TIMES_RANGE)
        return self

    def covers(self, at: datetime.datetime) -> bool:
        return self.start <= at < self.end


class Approvals(_Model):
    """Four eyes: distinct people other than the requester who must approve before the run starts."""

    required: int = Field(1, ge=1, le=5, description="Approvals needed, each from a different person.")
    in_states: list[State] | None = states_field(
        "Session states in which approvals are needed (at the time the run may start); left out: always."
    )
    expire_after_seconds: int = Field(
        3600,
        ge=60,
        le=604800,
        description="An approval counts for this long after it is given, and a run that has not "
        "gathered its approvals this long after it began to wait for them fails (ApprovalExpired).",
    )

    def needed_in(self, state: State) -> bool:
        return self.in_states is None or state in self.in_states


class Rule(_Model):
    name: str = Field(max_length=63, pattern=keys.DNS_LABEL, description="Unique within the policy.")
    match: Match = Field(default_factory=Match, description="Which Runbooks the rule applies to.")
    allowed_states: list[State] | None = states_field(
        "Session states in which matched Runbooks may start: pre_open, open, lunch_break, closed, "
        "holiday. Left out: any."
    )
    blackouts: list[Blackout] = Field(
        default_factory=list, max_length=64, description="Periods in which matched Runbooks may not start."
    )
    outside: Literal["Wait", "Reject"] = Field(
        "Wait",
        description="Outside the allowed times: Wait (queued, holding no lock) until the next allowed "
        "time, or Reject (the run fails at once).",
    )
    approvals: Approvals | None = Field(None, description="Approvals needed before the run starts.")

    @property
    def uses_sessions(self) -> bool:
        """Whether it needs the venue's session state: to allow a start, or to ask for approvals."""
        return self.allowed_states is not None or (
            self.approvals is not None and self.approvals.in_states is not None
        )

    def allows(self, state: State | None, at: datetime.datetime) -> bool:
        """Whether it allows a start at ``at``, the venue being in ``state`` then (None: not asked, for a
        rule without allowedStates)."""
        in_state = self.allowed_states is None or state in self.allowed_states
        return in_state and not any(b.covers(at) for b in self.blackouts)

    def next_allowed(
        self, calendar: SessionCalendar | None, at: datetime.datetime
    ) -> datetime.datetime | None:
        """The first instant at or after ``at`` that this rule allows; None if that is past the calendar's
        table. Only a rule with allowedStates needs the calendar: a blackout's end needs none."""
        candidate = at
        for _ in range(len(self.blackouts) + 1):  # each turn moves past one blackout's end
            if self.allowed_states is not None:
                covered = calendar.covers(candidate)
                candidate = calendar.next_start(candidate, self.allowed_states) if covered else None
                if candidate is None:
                    return None
            blackout = next((b for b in self.blackouts if b.covers(candidate)), None)
            if blackout is None:
                return candidate
            candidate = blackout.end
        return None


class RunbookPolicySpec(_Model):
    """Change windows and approvals for the Runbooks of this namespace."""

    rules: list[Rule] = Field(
        min_length=1,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Every rule that matches a Runbook applies to it.",
    )


@dataclass(frozen=True)
class Allowed:
    """The run may start now, once it has ``approvals`` approvals (0: at once, unless rejected).
    ``expire_after`` is set when a rule that matches it asks for approvals, in some session state: then
    decisions on it count, and a rejection stops it even when none are needed now (approvals asked for
    while the venue is open, the run rejected at the lunch break)."""

    approvals: int = 0
    expire_after: datetime.timedelta | None = None
    rules: tuple[str, ...] = ()  # "policy/rule" of every rule that matched


@dataclass(frozen=True)
class Wait:
    """The run waits, holding no lock, until ``until`` (then it is evaluated again). ``expire_after`` is set
    when a rule that matches it asks for approvals, in some session state: a rejection stops it while it
    waits, as it does when none are needed now (:class:`Allowed`)."""

    until: datetime.datetime
    message: str
    reason: Reason = Reason.OUTSIDE_CHANGE_WINDOW
    expire_after: datetime.timedelta | None = None


@dataclass(frozen=True)
class Reject:
    """The run fails at once."""

    message: str
    reason: Reason = Reason.OUTSIDE_CHANGE_WINDOW


Decision = Allowed | Wait | Reject


@dataclass(frozen=True)
class Unreadable:
    """A RunbookPolicy the API server accepted but the models refuse (its schema cannot say everything:
    a year 0): which, why, and the commands its rules name (None: it may match any)."""

    name: str
    why: str
    commands: frozenset[str] | None

    def concerns(self, spec: RunbookSpec) -> bool:
        """Whether it might hold this run: never a dry run, nor a command none of its rules names."""
        return not spec.dry_run and (self.commands is None or spec.command in self.commands)

    @property
    def message(self) -> str:
        return f"RunbookPolicy {self.name} cannot be read: {self.why}"


def parse(items: list[dict[str, Any]]) -> tuple[dict[str, RunbookPolicySpec], list[Unreadable]]:
    """RunbookPolicy objects, as listed: those that parse by name, and those that do not. One that does
    not cannot be evaluated: a run it might concern waits (never run ungated), the others need not."""
    policies: dict[str, RunbookPolicySpec] = {}
    unreadable: list[Unreadable] = []
    for item in items:
        name = item["metadata"]["name"]
        try:
            policies[name] = RunbookPolicySpec.model_validate(item["spec"])
        except ValidationError as error:
            first = error.errors()[0]
            why = f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
            unreadable.append(Unreadable(name, why, _commands(item.get("spec"))))
    return policies, unreadable


def _commands(spec: Any) -> frozenset[str] | None:
    """The commands a policy's rules name, read from the raw object (None: a rule may match any)."""
    rules = spec.get("rules") if isinstance(spec, dict) else None
    if not isinstance(rules, list):
        return None
    named: set[str] = set()
    for rule in rules:
        match = rule.get("match") if isinstance(rule, dict) else None
        commands = match.get("commands") if isinstance(match, dict) else None
        if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
            return None  # no list of commands: the rule matches any
        named.update(commands)
    return frozenset(named)


MAX_ROUNDS = 1000  # rounds of the search for a time every matched rule allows
WAIT_HORIZON = datetime.timedelta(days=365)  # how far ahead that time is looked for


def evaluate(
    policies: Mapping[str, RunbookPolicySpec],
    spec: RunbookSpec,
    at: datetime.datetime,
    calendar: SessionCalendar | VenueCalendar,
) -> Decision:
    """What the policies (by name) say about starting the run of ``spec`` at ``at``.

    The venue's calendar is asked only if a rule that matches needs the session state (``allowedStates``,
    ``approvals.inStates``): a dry run, and a run that no rule matches or that only blackouts and
    approvals without inStates concern, are decided without it. A VenueCalendar may load its table then
    (a child process: call this in a thread), and again further ahead when the next allowed time lies
    beyond it; a SessionCalendar answers as far as its table goes. CalendarError: the calendar cannot
    answer (nor, past what the library knows of the venue, say when a wait would end), and the run
    cannot be decided: it is never refused for that."""
    if spec.dry_run:
        return Allowed()
    matched = [
        (f"{name}/{rule.name}", rule)
        for name, policy in sorted(policies.items())
        for rule in policy.rules
        if rule.match.matches(spec)
    ]
    names = tuple(name for name, _ in matched)
    sessions = _sessions(calendar, at) if any(rule.uses_sessions for _, rule in matched) else None
    state = sessions.state(at) if sessions is not None else None
    blocking = [(name, rule) for name, rule in matched if not rule.allows(state, at)]
    asking = [r.approvals for _, r in matched if r.approvals is not None]
    if not blocking:
        if not asking:
            return Allowed(rules=names)
        needing = [a for a in asking if a.needed_in(state)]
        return Allowed(
            approvals=max((a.required for a in needing), default=0),
            expire_after=datetime.timedelta(seconds=min(a.expire_after_seconds for a in needing or asking)),
            rules=names,
        )
    why = _why(blocking, at, calendar.zone, sessions)
    if any(rule.outside == "Reject" for _, rule in blocking):
        return Reject(f"{spec.command} may not start now: {why}")
    until = _next_common(matched, sessions, at)
    if until is None and sessions is not None and not sessions.answers(at, at + WAIT_HORIZON):
        sessions = _sessions(calendar, at, WAIT_HORIZON)  # a table that goes further, if one can be had
        until = _next_common(matched, sessions, at)
    if until is None and sessions is not None and sessions.ended(at + WAIT_HORIZON):
        raise CalendarError(
            f"{spec.command} may not start now ({why}) and no time until {sessions.table.last} allows it; "
            f"after that, {sessions.beyond(sessions.end)}"
        )
    if until is None:
        within = f" until {sessions.table.last}" if sessions is not None else ""
        return Reject(f"{spec.command} may not start now and no time{within} allows it: {why}")
    until = until.astimezone(calendar.zone)
    decided = datetime.timedelta(seconds=min(a.expire_after_seconds for a in asking)) if asking else None
    return Wait(until, f"{spec.command} waits until {until.isoformat()}: {why}", expire_after=decided)


def _sessions(
    calendar: SessionCalendar | VenueCalendar,
    at: datetime.datetime,
    ahead: datetime.timedelta = VenueCalendar.BEHIND,
) -> SessionCalendar:
    """The sessions around ``at`` and ``ahead`` after it: a VenueCalendar loads them if it holds none (a
    child process); a SessionCalendar has what it has."""
    return calendar.at(at, ahead) if isinstance(calendar, VenueCalendar) else calendar


def _why(
    blocking: list[tuple[str, Rule]],
    at: datetime.datetime,
    zone: datetime.tzinfo,
    sessions: SessionCalendar | None,
) -> str:
    reasons = []
    for name, rule in blocking:
        blackout = next((b for b in rule.blackouts if b.covers(at)), None)
        if blackout is not None:
            until = blackout.end.astimezone(zone).isoformat()
            reasons.append(
                f"{name}: blackout until {until}" + (f" ({blackout.reason})" if blackout.reason else "")
            )
        else:
            allowed = ", ".join(rule.allowed_states or [])
            reasons.append(f"{name}: allowed while {allowed}; {sessions.venue} is {sessions.state(at)}")
    return "; ".join(reasons)


def _next_common(
    rules: list[tuple[str, Rule]], calendar: SessionCalendar | None, at: datetime.datetime
) -> datetime.datetime | None:
    """The first instant at or after ``at`` that every rule allows: each rule's next allowed instant
    from a candidate is never later than that common one, so moving to the latest of them converges."""
    candidate = at
    for _ in range(MAX_ROUNDS):
        nexts = [rule.next_allowed(calendar, candidate) for _, rule in rules]
        if any(n is None for n in nexts):
            return None
        latest = max(nexts)
        if latest == candidate:
            return latest
        candidate = latest
    return None
