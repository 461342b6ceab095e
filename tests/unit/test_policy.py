"""Policy evaluation at fixed instants, with the three example policies of examples/policies/ and a
few rules of our own for what they do not show (several rules at once, blackouts)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import yaml

from runbooks.calendar import CalendarError, SessionTable, VenueCalendar, build_table
from runbooks.contract import Reason
from runbooks.models import RunbookSpec
from runbooks.policy import Allowed, Reject, RunbookPolicySpec, Wait, evaluate, parse
from tests.unit.conftest import at

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"
QUARTER = datetime.timedelta(minutes=15)  # failover-four-eyes.yaml's expireAfterSeconds


def _examples() -> dict[str, RunbookPolicySpec]:
    docs = [yaml.safe_load(p.read_text()) for p in sorted(EXAMPLES.glob("*.yaml"))]
    return {
        d["metadata"]["name"]: RunbookPolicySpec.model_validate(d["spec"])
        for d in docs
        if d["kind"] == "RunbookPolicy"
    }


EXAMPLE_POLICIES = _examples()


def _spec(command: str, **fields) -> RunbookSpec:
    return RunbookSpec(command=command, **fields)


@pytest.mark.parametrize(
    ("command", "fields", "instant", "expected"),
    [
        # drills only while closed: wait for the close, or go at once when closed
        ("drill", {}, "2026-01-05 10:00", Wait(at("2026-01-05 16:00"), "")),
        ("drill", {}, "2026-01-05 12:30", Wait(at("2026-01-05 16:00"), "")),  # lunch is not closed
        ("drill", {}, "2025-12-24 11:00", Wait(at("2025-12-24 12:00"), "")),  # the early close
        ("drill", {}, "2026-01-05 08:00", Allowed(rules=("drills-while-closed/drills",))),
        ("drill", {}, "2025-12-25 10:00", Allowed(rules=("drills-while-closed/drills",))),  # holiday
        ("drill", {"dry_run": True}, "2026-01-05 10:00", Allowed()),  # dry runs are never held
        # live restarts at lunch or closed, refused otherwise, and never in the year-end freeze
        ("restart", {}, "2026-01-05 12:30", Allowed(rules=("restarts-at-lunch-or-closed/live-restarts",))),
        ("restart", {}, "2026-01-05 10:00", Reject("")),
        ("restart", {}, "2026-12-31 12:30", Reject("")),  # a lunch break inside the blackout
        ("restart", {"mode": "uat"}, "2026-01-05 10:00", Allowed()),  # not matched
        # failover at any time; while open with a second person's approval, valid for 15 minutes
        (
            "failover",
            {},
            "2026-01-05 10:00",
            Allowed(1, QUARTER, ("failover-four-eyes/failover",)),
        ),
        # ... none needed at the lunch break or closed, but a rejection still counts
        ("failover", {}, "2026-01-05 12:30", Allowed(0, QUARTER, ("failover-four-eyes/failover",))),
        ("failback", {}, "2026-01-05 20:00", Allowed(0, QUARTER, ("failover-four-eyes/failover",))),
        ("health_check", {}, "2026-01-05 10:00", Allowed()),
    ],
)
def test_the_example_policies(xhkg, command, fields, instant, expected):
    decision = evaluate(EXAMPLE_POLICIES, _spec(command, **fields), at(instant), xhkg)
    assert type(decision) is type(expected)
    if isinstance(expected, Allowed):
        assert decision == expected
    else:
        assert decision.reason == Reason.OUTSIDE_CHANGE_WINDOW
    if isinstance(expected, Wait):
        assert decision.until == expected.until


def test_messages_say_why_and_until_when(xhkg):
    waiting = evaluate(EXAMPLE_POLICIES, _spec("drill"), at("2026-01-05 10:00"), xhkg)
    assert waiting.message == (
        "drill waits until 2026-01-05T16:00:00+08:00: drills-while-closed/drills: allowed while closed, "
        "holiday; XHKG is open"
    )
    frozen = evaluate(EXAMPLE_POLICIES, _spec("restart"), at("2026-12-31 12:30"), xhkg)
    assert "blackout until 2027-01-02T00:00:00+08:00 (year-end freeze)" in frozen.message


def test_no_policy_allows_everything(xhkg):
    assert evaluate({}, _spec("restart"), at("2026-01-05 10:00"), xhkg) == Allowed()


def _policy(*rules: dict) -> RunbookPolicySpec:
    return RunbookPolicySpec.model_validate({"rules": list(rules)})


def test_every_matching_rule_must_allow_the_start(xhkg):
    """Closed only, and not between 16:00 and 18:00 that day: the first time both allow is 18:00."""
    policies = {
        "desk": _policy({"name": "closed", "allowedStates": ["closed"]}),
        "ops": _policy(
            {
                "name": "evening",
                "match": {"commands": ["drill"]},
                "blackouts": [{"start": "2026-01-05T15:00:00+08:00", "end": "2026-01-05T18:00:00+08:00"}],
            }
        ),
    }
    decision = evaluate(policies, _spec("drill"), at("2026-01-05 10:00"), xhkg)
    assert isinstance(decision, Wait)
    assert decision.until == at("2026-01-05 18:00")
    assert "desk/closed" in decision.message and "ops/evening" not in decision.message  # not yet blocking


def test_a_wait_says_whether_decisions_count_as_it_waits(xhkg):
    """A rule asking for approvals in some state (open) matches a run held while closed: a rejection
    stops it as it waits (the shortest expiry of those asking), and without such a rule none counts."""
    freeze = {"name": "closed-only", "allowedStates": ["closed"]}
    asking = {
        "name": "four-eyes",
        "approvals": {"required": 1, "inStates": ["open"], "expireAfterSeconds": 90},
    }
    held = evaluate({"p": _policy(freeze, asking)}, _spec("failover"), at("2026-01-05 10:00"), xhkg)
    assert isinstance(held, Wait) and held.expire_after == datetime.timedelta(seconds=90)
    alone = evaluate({"p": _policy(freeze)}, _spec("failover"), at("2026-01-05 10:00"), xhkg)
    assert isinstance(alone, Wait) and alone.expire_after is None


def test_a_blackout_over_a_whole_window_moves_the_wait_to_the_next_one(xhkg):
    policy = _policy(
        {
            "name": "lunch",
            "allowedStates": ["lunch_break"],
            "blackouts": [{"start": "2026-01-05T00:00:00+08:00", "end": "2026-01-06T12:30:00+08:00"}],
        }
    )
    decision = evaluate({"p": policy}, _spec("restart"), at("2026-01-05 10:00"), xhkg)
    assert decision.until == at("2026-01-06 12:30")  # the rest of the next day's lunch break


def test_rules_that_never_agree_reject(xhkg):
    policy = _policy(
        {"name": "open", "allowedStates": ["open"]}, {"name": "closed", "allowedStates": ["closed"]}
    )
    decision = evaluate({"p": policy}, _spec("start"), at("2026-01-05 10:00"), xhkg)
    assert isinstance(decision, Reject)
    assert "no time until 2027-01-31 allows it" in decision.message


def test_reject_wins_over_wait(xhkg):
    policy = _policy(
        {"name": "wait", "allowedStates": ["closed"], "outside": "Wait"},
        {"name": "reject", "allowedStates": ["lunch_break", "closed"], "outside": "Reject"},
    )
    assert isinstance(evaluate({"p": policy}, _spec("stop"), at("2026-01-05 10:00"), xhkg), Reject)
    assert isinstance(evaluate({"p": policy}, _spec("stop"), at("2026-01-05 12:30"), xhkg), Wait)


def test_the_most_approvals_and_the_shortest_expiry_apply(xhkg):
    policy = _policy(
        {"name": "one", "approvals": {"required": 1, "inStates": ["open"], "expireAfterSeconds": 600}},
        {"name": "two", "match": {"profiles": ["backup"]}, "approvals": {"required": 2}},
    )
    primary = evaluate({"p": policy}, _spec("failover"), at("2026-01-05 10:00"), xhkg)
    assert (primary.approvals, primary.expire_after) == (1, datetime.timedelta(minutes=10))
    backup = evaluate({"p": policy}, _spec("failover", profile="backup"), at("2026-01-05 10:00"), xhkg)
    assert (backup.approvals, backup.expire_after) == (2, datetime.timedelta(minutes=10))
    closed = evaluate({"p": policy}, _spec("failover", profile="backup"), at("2026-01-05 20:00"), xhkg)
    assert (closed.approvals, closed.expire_after) == (2, datetime.timedelta(hours=1))


# -- a calendar that cannot answer ---------------------------------------------------------------

DESK = _policy(
    {
        "name": "freeze",
        "match": {"commands": ["stop"]},
        "blackouts": [
            {"start": "2026-12-31T00:00:00+08:00", "end": "2027-01-02T00:00:00+08:00", "reason": "year-end"}
        ],
    },
    {"name": "starts", "match": {"commands": ["start"]}, "approvals": {"required": 1}},
)
POLICIES = {**EXAMPLE_POLICIES, "desk": DESK}
FREEZE_ENDS = at("2027-01-02 00:00")


def _unloadable() -> VenueCalendar:
    """The venue's calendar whose load fails (its child process timed out, ran out of memory...)."""

    def fail(venue: str, first: datetime.date, last: datetime.date) -> SessionTable:
        raise CalendarError(f"the {venue} calendar took more than 120 s to build")

    return VenueCalendar("XHKG", loader=fail)


@pytest.mark.parametrize(
    ("command", "fields", "instant", "expected"),
    [
        ("drill", {"dry_run": True}, "2027-01-05 10:00", Allowed()),
        ("health_check", {}, "2027-01-05 10:00", Allowed()),  # no rule matches it
        ("restart", {"mode": "uat"}, "2027-01-05 10:00", Allowed()),
        ("stop", {}, "2026-12-31 10:00", Wait(FREEZE_ENDS, "")),  # only a blackout concerns it
        ("stop", {}, "2027-01-05 10:00", Allowed(rules=("desk/freeze",))),
        ("start", {}, "2027-01-05 10:00", Allowed(1, datetime.timedelta(hours=1), ("desk/starts",))),
    ],
)
def test_runs_that_no_session_rule_concerns_are_decided_without_the_calendar(
    xshg, command, fields, instant, expected
):
    """A load that fails, and XSHG past the end of what the library knows of it (2026-12-31): neither
    holds a run whose rules do not depend on the session state."""
    for calendar in (_unloadable(), xshg):
        decision = evaluate(POLICIES, _spec(command, **fields), at(instant), calendar)
        if isinstance(expected, Wait):
            assert (type(decision), decision.until) == (Wait, expected.until)
        else:
            assert decision == expected


def test_a_wait_for_the_end_of_a_blackout_says_so_without_the_calendar():
    decision = evaluate(POLICIES, _spec("stop"), at("2026-12-31 10:00"), _unloadable())
    assert decision.message == (
        "stop waits until 2027-01-02T00:00:00+08:00: desk/freeze: blackout until 2027-01-02T00:00:00+08:00 "
        "(year-end)"
    )


@pytest.mark.parametrize("command", ["drill", "failover", "restart"])  # allowedStates, approvals.inStates
def test_a_run_that_a_session_rule_concerns_is_not_decided_without_the_calendar(xshg, command):
    with pytest.raises(CalendarError, match="took more than 120 s"):
        evaluate(POLICIES, _spec(command), at("2026-12-30 10:00"), _unloadable())
    with pytest.raises(CalendarError, match="beyond the XSHG calendar"):
        evaluate(POLICIES, _spec(command), at("2027-01-05 10:00"), xshg)


HOLIDAY_DRILLS = {
    "drills": _policy({"name": "on-holidays", "match": {"commands": ["drill"]}, "allowedStates": ["holiday"]})
}


def test_a_wait_past_the_table_held_is_found_in_a_table_that_goes_further():
    """A controller that loaded its XHKG table on 2025-08-06 holds sessions up to 2026-08-07; the next
    holiday after 2026-07-02 is National Day: the table is loaded further rather than the run refused, and
    the answer does not depend on how long the controller has run."""
    loads = []

    def loader(venue: str, first: datetime.date, last: datetime.date) -> SessionTable:
        loads.append(last)
        return build_table(venue, first, last)

    venue = VenueCalendar("XHKG", loader=loader)
    assert venue.at(at("2025-08-06 10:00")).table.last == datetime.date(2026, 8, 7)
    decision = evaluate(HOLIDAY_DRILLS, _spec("drill"), at("2026-07-02 16:23"), venue)
    assert (type(decision), decision.until) == (Wait, at("2026-10-01 00:00"))
    assert len(loads) == 2 and loads[1] > datetime.date(2027, 7, 2)
    fresh = evaluate(HOLIDAY_DRILLS, _spec("drill"), at("2026-07-02 16:23"), VenueCalendar("XHKG"))
    assert fresh == decision


def test_a_wait_past_what_the_library_knows_of_the_venue_holds_the_run_and_never_refuses_it(xshg):
    """XSHG's next holiday after 2026-12-30 is New Year's Day, past the last day the library knows."""
    for calendar in (xshg, VenueCalendar("XSHG")):
        with pytest.raises(CalendarError) as raised:
            evaluate(HOLIDAY_DRILLS, _spec("drill"), at("2026-12-30 10:00"), calendar)
        assert str(raised.value) == (
            "drill may not start now (drills/on-holidays: allowed while holiday; XSHG is open) and no time "
            "until 2026-12-31 allows it; after that, 2027-01-01T00:00:00+08:00 is beyond the XSHG calendar: "
            "exchange_calendars 4.13.2 records its holidays only up to 2026-12-31"
        )


def _item(name: str, spec) -> dict:
    return {"metadata": {"name": name}, "spec": spec}


def test_a_policy_that_does_not_parse_holds_only_the_runs_it_may_concern():
    """The API server took it (its schema cannot refuse a year 0): the gate cannot evaluate it, so a run it
    might hold waits, named; a dry run, or a command none of its rules names, need not."""
    frozen = {"start": "0000-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"}
    items = [
        _item("ok", {"rules": [{"name": "any", "match": {"commands": ["drill"]}}]}),
        _item("bad", {"rules": [{"name": "fb", "match": {"commands": ["failback"]}, "blackouts": [frozen]}]}),
        _item("worse", {"rules": [{"name": "all", "blackouts": [frozen]}]}),
    ]
    policies, unreadable = parse(items)
    assert list(policies) == ["ok"]
    bad, worse = unreadable
    assert (bad.name, bad.commands, worse.commands) == ("bad", frozenset({"failback"}), None)
    assert bad.message.startswith("RunbookPolicy bad cannot be read: rules.0.blackouts.0.start: ")
    assert bad.concerns(_spec("failback")) and not bad.concerns(_spec("health_check"))
    assert not bad.concerns(_spec("failback", dry_run=True))
    assert worse.concerns(_spec("health_check")) and not worse.concerns(_spec("drill", dry_run=True))


@pytest.mark.parametrize(
    "blackout",
    [
        {"start": "2026-12-01T00:00:00Z", "end": "9999-12-31T23:59:59Z"},  # a freeze "until further notice"
        {"start": "0001-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"},
    ],
)
def test_a_blackout_on_the_first_or_last_day_a_datetime_holds_does_not_parse(blackout):
    """Such a time cannot be shown in the +08:00 zone (nor looked up in the venue's): evaluated, it raised
    OverflowError, which neither the gate nor the API expect (a run retried with a traceback every 5 s, a
    500). Not parsed, the policy holds the runs it may concern, and says why."""
    rule = {"name": "freeze", "blackouts": [blackout], "allowedStates": ["closed"]}
    policies, [unreadable] = parse([_item("freeze", {"rules": [rule]})])
    assert policies == {} and "from 0001-01-02 to 9999-12-30" in unreadable.message
    assert unreadable.concerns(_spec("restart"))
