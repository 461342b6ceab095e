"""Counting approvals: distinct people, never the requester, only approvals made for this requester, fresh
ones only, a rejection wins, and a request that waits too long expires."""

from __future__ import annotations

import datetime

import pytest

from runbooks.approval import APPROVED, EXPIRED, PENDING, REJECTED, Vote, tally
from tests.unit.conftest import at

REQUESTED = at("2026-01-05 10:00")
HOUR = datetime.timedelta(hours=1)
UID = "0b6c1c8e-1f1e-4a7e-9d4e-000000000002"  # the Runbook counted
OLD_UID = "0b6c1c8e-1f1e-4a7e-9d4e-000000000001"  # the one its request id named before


def _vote(
    approver: str, minute: int, decision: str = "Approve", requester: str = "alice", runbook_uid: str = ""
) -> Vote:
    at = REQUESTED + datetime.timedelta(minutes=minute)
    return Vote(approver, decision, at, requester, runbook_uid=runbook_uid)


def _tally(votes, *, required=2, requester="alice", minute=30, since=REQUESTED, approved=None):
    now = REQUESTED + datetime.timedelta(minutes=minute)
    return tally(
        votes,
        runbook_uid=UID,
        requester=requester,
        required=required,
        requested_at=REQUESTED,
        waiting_since=since,
        now=now,
        expire_after=HOUR,
        approved_at=None if approved is None else REQUESTED + datetime.timedelta(minutes=approved),
    )


@pytest.mark.parametrize(
    ("votes", "kwargs", "state", "counted"),
    [
        ([_vote("bob", 1), _vote("carol", 2)], {}, APPROVED, ["bob", "carol"]),
        ([_vote("bob", 1)], {}, PENDING, ["bob"]),
        ([_vote("bob", 1), _vote("bob", 2)], {}, PENDING, ["bob"]),  # one person, one approval
        ([_vote("alice", 1), _vote("bob", 2)], {}, PENDING, ["bob"]),  # not the requester
        ([_vote("bob", -1), _vote("carol", 2)], {}, PENDING, ["carol"]),  # given before the request
        # in the request's second (creation times are whole seconds): perhaps before it
        ([_vote("bob", 0), _vote("carol", 2)], {}, PENDING, ["carol"]),
        ([_vote("bob", 0, "Reject")], {}, REJECTED, []),  # ... but a rejection then counts
        # approved at minute 2, then waiting for its lock past the approvals' hour: still approved
        ([_vote("bob", 1), _vote("carol", 2)], {"minute": 90, "approved": 2}, APPROVED, ["bob", "carol"]),
        # ... unless rejected since
        (
            [_vote("bob", 1), _vote("carol", 2), _vote("bob", 80, "Reject")],
            {"minute": 90, "approved": 2},
            REJECTED,
            ["bob", "carol"],
        ),
        # an approval that names another requester was not made for this request (the API server checked
        # bob against "mallory", not against alice)
        ([_vote("bob", 1, requester="mallory"), _vote("carol", 2)], {}, PENDING, ["carol"]),
        # ... but a rejection stops the run whatever it names: ignoring one could only let a run start
        ([_vote("bob", 1, "Reject", requester="mallory")], {}, REJECTED, []),
        # bob's approval is an hour old: it no longer counts (the request waits since half an hour)
        (
            [_vote("bob", 1), _vote("carol", 2)],
            {"minute": 61, "since": REQUESTED + HOUR / 2},
            PENDING,
            ["carol"],
        ),
        ([_vote("bob", 1)], {"minute": 60}, EXPIRED, ["bob"]),  # waited an hour without enough
        ([_vote("bob", 5)], {"minute": 61, "since": REQUESTED + HOUR / 2}, PENDING, ["bob"]),
        ([_vote("bob", 1), _vote("carol", 2), _vote("dave", 3, "Reject")], {}, REJECTED, ["bob", "carol"]),
        ([_vote("alice", 3, "Reject")], {}, REJECTED, []),  # the requester may withdraw
        ([_vote("bob", 1)], {"required": 1, "requester": ""}, PENDING, []),  # no requester, no approval
        # a ServiceAccount is no person: its token may be the requester's (a rejection by one counts)
        ([_vote("system:serviceaccount:desk:bot", 1)], {"required": 1}, PENDING, []),
        ([_vote("system:serviceaccount:desk:bot", 1, "Reject")], {}, REJECTED, []),
        # a schedule that names nobody: whoever wrote it could approve its runs, so nobody can
        (
            [_vote("bob", 1, requester="schedule:nightly")],
            {"required": 1, "requester": "schedule:nightly"},
            PENDING,
            [],
        ),
        (
            [_vote("bob", 1, "Reject", requester="schedule:nightly")],
            {"requester": "schedule:nightly"},
            REJECTED,
            [],
        ),
        ([], {"required": 1}, PENDING, []),
        # an approval bound to the Runbook its request id named before, which bob saw: not this one's
        ([_vote("bob", 1, runbook_uid=OLD_UID)], {"required": 1}, PENDING, []),
        ([_vote("bob", 1, runbook_uid=UID)], {"required": 1}, APPROVED, ["bob"]),  # bound to this one
        # ... but a rejection stops the run whatever Runbook it names: ignoring one could only let it start
        ([_vote("bob", 1, "Reject", runbook_uid=OLD_UID)], {}, REJECTED, []),
    ],
)
def test_tally(votes, kwargs, state, counted):
    result = _tally(votes, **kwargs)
    assert result.state == state
    assert [v.approver for v in result.approved_by] == counted


def test_why_votes_did_not_count():
    result = _tally(
        [
            _vote("alice", 1),
            _vote("bob", -5),
            _vote("carol", 1),
            _vote("carol", 2),
            _vote("dave", 3, requester="erin"),
            _vote("system:serviceaccount:desk:bot", 4),
            _vote("frank", 5, runbook_uid=OLD_UID),
        ]
    )
    reasons = {(vote.approver, vote.at.minute): why for vote, why in result.ignored}
    assert reasons == {
        ("alice", 1): "the requester cannot approve their own request",
        ("bob", 55): "given before the request",
        ("carol", 1): "repeated by the same person",
        ("dave", 3): "it names another requester (erin)",
        ("system:serviceaccount:desk:bot", 4): "not a person: whoever holds a ServiceAccount's token (the "
        "requester too) may give it",
        ("frank", 5): f"made for another Runbook with this request id (uid {OLD_UID})",
    }


def test_the_first_rejection_is_the_one_recorded():
    result = _tally([_vote("dave", 4, "Reject"), _vote("erin", 3, "Reject")])
    assert result.rejected_by == _vote("erin", 3, "Reject")


def test_summary_and_expiry_time():
    pending = _tally([_vote("bob", 1)])
    assert pending.summary == "1 of 2 approvals (bob)"
    assert pending.expires_at == REQUESTED + HOUR
    assert _tally([], required=1).summary == "0 of 1 approvals"


# One person's name as another identity may spell it: another case (an identity provider that ignores
# case, as LDAP and e-mail addresses do), spaces around it, full-width letters (NFKC), an invisible
# zero-width space inside it.
SPELLINGS = [
    str.upper,
    str.title,
    lambda n: f" {n} ",
    lambda n: n.translate(WIDE),
    lambda n: f"{n[:2]}\u200b{n[2:]}",
]
SPELLING_IDS = ["upper", "title", "spaces", "full-width", "zero-width-space"]
WIDE = {c: c + 0xFEE0 for c in range(ord("!"), ord("~") + 1)}  # ASCII to its full-width forms


@pytest.mark.parametrize("spell", SPELLINGS, ids=SPELLING_IDS)
def test_the_requester_under_another_spelling_of_their_name_does_not_approve(spell):
    name = spell("alice")
    result = _tally([_vote(name, 1), _vote("bob", 2)])
    assert (result.state, [v.approver for v in result.approved_by]) == (PENDING, ["bob"])
    assert dict((v.approver, why) for v, why in result.ignored)[name] == (
        "the requester cannot approve their own request"
    )


@pytest.mark.parametrize("spell", SPELLINGS, ids=SPELLING_IDS)
def test_one_approver_under_two_spellings_of_their_name_approves_once(spell):
    result = _tally([_vote("bob", 1), _vote(spell("bob"), 2)])
    assert (result.state, [v.approver for v in result.approved_by]) == (PENDING, [spell("bob")])
