"""The controller's pure decisions: which Runbooks need a lock and where they queue, and which ledger entries
are trimmed. Data in, data out: no control plane."""

from __future__ import annotations

import re

import pytest
from kubernetes import client

from controller import ledger, lock, runs
from controller.settings import ControllerSettings
from runbooks import keys

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


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
    assert runs.needs_lock(spec) is locked


def test_profiles_share_the_default_lock_group_unless_the_settings_say_otherwise():
    settings = ControllerSettings(kubeconfig="/dev/null", lock_groups={"backup": "feed-b"})
    assert runs.lock_group(settings, "backup") == "feed-b"
    assert runs.lock_group(settings, "primary") == runs.lock_group(settings, "dr") == "default"


def entry(created: str, name: str) -> runs.QueueEntry:
    return runs.QueueEntry(created, name, f"uid-{name}")


def test_the_queue_is_first_come_first_served():
    queue = [
        entry("2026-11-26T08:00:02Z", "c"),
        entry("2026-11-26T08:00:01Z", "b"),
        entry("2026-11-26T08:00:00Z", "a"),
    ]
    assert [e.name for e in runs.ahead_of(queue, "uid-c")] == ["a", "b"]
    assert runs.ahead_of(queue, "uid-a") == []
    assert [e.name for e in runs.ahead_of(queue, "uid-unknown")] == ["a", "b", "c"]


def test_the_queue_depth_counts_only_the_runbooks_that_have_not_started():
    queue = [runs.QueueEntry("t", "running", "u1", started=True), entry("t", "a"), entry("t", "b")]
    assert runs.queue_depth(queue) == 2
    assert runs.queue_depth([]) == 0


@pytest.mark.parametrize("make", [lock.lease_name, ledger.lease_name])
def test_lease_names_are_valid_stable_and_distinct(make):
    names = {make(text) for text in ("default", "Feed/B", "x" * 300, "feed-b", "req-42")}
    assert len(names) == 5
    assert all(DNS_LABEL.match(name) and len(name) <= 63 for name in names)
    assert make("default") == make("default")


def lease(name: str, finished_at: str | None) -> client.V1Lease:
    annotations = {keys.FINISHED_AT: finished_at} if finished_at else {}
    return client.V1Lease(metadata=client.V1ObjectMeta(name=name, annotations=annotations))


def test_the_ledger_trims_the_oldest_finished_entries_and_never_an_unfinished_one():
    leases = [
        lease("newest", "2026-11-26T08:00:03.000Z"),
        lease("running", None),
        lease("oldest", "2026-11-26T08:00:01.000Z"),
        lease("middle", "2026-11-26T08:00:02.000Z"),
    ]
    assert [entry.metadata.name for entry in ledger.oldest_finished(leases, 2)] == ["oldest", "middle"]
    assert ledger.oldest_finished(leases, 4) == []
    # More unfinished entries than room: only finished ones go, even if that leaves more than the size.
    assert [entry.metadata.name for entry in ledger.oldest_finished(leases, 0)] == [
        "oldest",
        "middle",
        "newest",
    ]
