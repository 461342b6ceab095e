"""The controller's pure decisions: which Runbooks need a lock, in which order they queue for it, and which
ledger entries are trimmed. Data in, data out: no control plane."""

from __future__ import annotations

import re

import pytest

from controller import ledger, lock, runs
from controller.dispatcher import Entry, Lane
from controller.settings import ControllerSettings

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SETTINGS = ControllerSettings(kubeconfig="/dev/null", lock_groups={"backup": "feed-b"})


def entry(name: str, created: str = "2026-11-26T08:00:00Z", seq: int = 0, **spec) -> Entry:
    body = {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "creationTimestamp": created},
        "spec": {"command": "failover", **spec},
        "status": spec.pop("status", {}),
    }
    return Entry.from_body(body, seq, SETTINGS)


@pytest.mark.parametrize(
    ("spec", "locked"),
    [
        ({"command": "failover"}, True),
        ({"command": "stop"}, True),
        ({"command": "failover", "dryRun": True}, False),
        ({"command": "health_check"}, False),
    ],
)
def test_mutating_runs_need_the_lock_and_dry_runs_and_health_checks_do_not(spec, locked):
    assert entry("rb", **spec).needs_lock is locked


def test_profiles_share_the_default_lock_group_unless_the_settings_say_otherwise():
    assert runs.lock_group(SETTINGS, "backup") == "feed-b"
    assert runs.lock_group(SETTINGS, "primary") == runs.lock_group(SETTINGS, "dr") == "default"
    assert entry("b", profile="backup").target == "ns/feed-b"
    assert entry("a").target == "ns/default"


def test_the_lane_is_first_come_first_served_and_the_arrival_order_breaks_ties_within_a_second():
    lane = Lane()
    later = entry("a-later", "2026-11-26T08:00:02Z", seq=0)
    first = entry("z-first", "2026-11-26T08:00:01Z", seq=2)
    second = entry("b-second", "2026-11-26T08:00:01Z", seq=3)
    for each in (later, second, first):  # the order in which they happen to be seen
        lane.add(each)
    assert [e.name for e in lane.entries] == ["z-first", "b-second", "a-later"]
    assert lane.ahead(second) is first and lane.ahead(first) is None


def test_a_run_that_went_on_before_a_restart_heads_its_lane():
    lane = Lane()
    waiting = entry("waiting", "2026-11-26T08:00:00Z", seq=0)
    running = entry("running", "2026-11-26T08:00:05Z", seq=1, status={"execution": {"executor": "local"}})
    lane.add(waiting)
    lane.add(running)
    assert [e.name for e in lane.entries] == ["running", "waiting"]


def test_leaving_the_lane_names_the_runbook_whose_predecessor_changed():
    lane = Lane()
    a, b, c = (entry(name, seq=index) for index, name in enumerate("abc"))
    for each in (a, b, c):
        lane.add(each)
    lane.busy = a
    assert lane.waiting() == 2
    assert lane.remove(b) is c  # c now waits behind a
    assert lane.remove(a) is None  # the head left: c heads the lane, nobody is behind a
    assert lane.busy is None and lane.waiting() == 1


@pytest.mark.parametrize("make", [lock.lease_name, ledger.lease_name])
def test_lease_names_are_valid_stable_and_distinct(make):
    names = {make(text) for text in ("default", "Feed/B", "x" * 300, "feed-b", "req-42")}
    assert len(names) == 5
    assert all(DNS_LABEL.match(name) and len(name) <= 63 for name in names)
    assert make("default") == make("default")


def row(name: str, finished_at: str = "", owners: tuple[str, ...] = ()) -> ledger.Row:
    return ledger.Row(name, "1", f"req-{name}", finished_at, frozenset(owners or (f"uid-{name}",)))


def test_the_ledger_trims_the_oldest_finished_entries_and_never_an_unfinished_one():
    rows = [
        row("newest", "2026-11-26T08:00:03.000Z"),
        row("running"),
        row("oldest", "2026-11-26T08:00:01.000Z"),
        row("middle", "2026-11-26T08:00:02.000Z"),
    ]

    def trimmed(size: int) -> list[str]:
        return [r.name for r in ledger.trimmable(rows, size, set(), lambda _: False)]

    # Unfinished claims do not count towards the size: a burst of claims trims nothing.
    assert trimmed(3) == [] and trimmed(2) == ["oldest"]
    assert trimmed(1) == ["oldest", "middle"]
    assert trimmed(0) == ["oldest", "middle", "newest"]


def test_the_ledger_keeps_an_entry_while_a_runbook_names_its_request_id():
    rows = [row(name, f"2026-11-26T08:00:0{i}.000Z") for i, name in enumerate("abcd")]
    rows[1] = row("b", rows[1].finished_at, owners=("uid-b", "uid-duplicate-of-b"))
    existing = {"uid-a", "uid-duplicate-of-b"}  # a's owner and a duplicate of b still exist
    unfinished = {"req-c"}  # an unfinished Runbook names c's request id

    doomed = ledger.trimmable(rows, 0, existing, unfinished.__contains__)
    assert [r.name for r in doomed] == ["d"]
