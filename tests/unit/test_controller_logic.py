"""The controller's pure decisions: which Runbooks need a lock, in which order they queue for it, which
ledger entries are trimmed, which Runbooks the namespace's cap refuses, which finished ones retention
deletes, and what an audit line says. Data in, data out: no control plane."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import json
import logging
import random
import re
import socket
import types
from collections.abc import AsyncIterator

import pytest

from api.records import record_of
from api.render import audit_entry
from controller import audit, ledger, lock, quota, retention, runs
from controller.dispatcher import ADMISSIONS, FORGET_SECONDS, Dispatcher, Entry, Lane, Stage
from controller.executors import failure, lost
from controller.kubeapi import Conflict, Final, Started
from controller.settings import ControllerSettings
from runbooks import keys
from runbooks.contract import ExitCode
from runbooks.models import RunbookStatus

DNS_LABEL = re.compile(keys.DNS_LABEL)
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


def test_a_watched_status_that_names_a_run_replaces_an_own_written_one_that_names_none():
    """Another replica started the run while this one was frozen: its Running, not this one's older
    Queued, is what this one goes on from. A late event of this one's own older writes never takes a run
    away from what it wrote."""
    queued = entry("frozen")
    queued.status = RunbookStatus.read({"message": "waiting for earlier to finish on target t"})
    running = {"execution": {"executor": "job", "name": "frozen-1"}, "startedAt": "2026-11-26T08:00:07Z"}
    body = {"metadata": {"name": "frozen", "uid": "uid-frozen"}, "spec": {}, "status": running}
    queued.update(body)
    assert queued.status is None and runs.Runs.status(queued).execution.name == "frozen-1"
    ours = entry("ours")
    ours.status = RunbookStatus.read(running)
    ours.update({**body, "status": {"message": "waiting for earlier to finish on target t"}})
    assert ours.status is not None and runs.Runs.status(ours).execution.name == "frozen-1"


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


def test_request_ids_no_runbook_names_count_towards_the_size_and_named_ones_never_do():
    """Retained Runbooks never push out the request ids of deleted ones: retention deletes a Runbook, a
    GitOps tool creates it again, and its request id must still be in the ledger."""
    rows = [row(name, f"2026-11-26T08:00:0{i}.000Z") for i, name in enumerate("abcdef")]
    existing = {"uid-d", "uid-e", "uid-f"}  # the three newest are retained; a, b and c were deleted
    doomed = ledger.trimmable(rows, 2, existing, lambda _: False)
    assert [r.name for r in doomed] == ["a"]  # the newest two deleted ones are remembered


def finished_runbook(name: str, minute: int, command: str = "drill", succeeded: bool = True):
    moment = datetime.datetime(2026, 11, 26, 8, minute, tzinfo=datetime.UTC)
    return retention.Finished(
        name, f"uid-{name}", "1", command, succeeded, moment, {"command": command}, RunbookStatus()
    )


NOW = datetime.datetime(2026, 11, 26, 9, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("ttl", "successful", "failed", "expected"),
    [
        (0, 0, 0, []),  # everything off
        (3600, 0, 0, ["d1"]),  # d1 finished at 08:00: an hour ago
        (0, 2, 0, ["d1", "d2"]),  # the two newest successful drills stay; failed and other commands too
        (0, 0, 1, ["f1"]),
        (3600, 2, 1, [("d1", "TTLExpired"), ("f1", "HistoryLimit"), ("d2", "HistoryLimit")]),
    ],
)
def test_retention_deletes_by_age_and_beyond_each_commands_history_oldest_first(
    ttl, successful, failed, expected
):
    runbooks = [
        finished_runbook("d3", 30),
        finished_runbook("d1", 0),
        finished_runbook("d4", 40),
        finished_runbook("d2", 10),
        finished_runbook("f1", 5, succeeded=False),
        finished_runbook("f2", 6, succeeded=False),
        finished_runbook("s1", 1, command="start"),
    ]
    chosen = retention.doomed(runbooks, NOW, ttl, successful, failed)
    if expected and isinstance(expected[0], tuple):
        assert [(r.name, why) for r, why in chosen] == expected
    else:
        assert [r.name for r, _ in chosen] == expected


def test_retention_times_a_runbook_from_its_own_finish_so_a_recreated_duplicate_is_not_deleted_at_once():
    body = {
        "metadata": {
            "name": "again",
            "uid": "u",
            "resourceVersion": "7",
            "creationTimestamp": "2026-11-26T08:59:00Z",
        },
        "spec": {"command": "drill", "requestId": "req-1", "requestedBy": "ci"},
        "status": {
            "result": "success",
            "exitCode": 0,
            "finishedAt": "2026-11-20T08:00:00.000Z",  # the original's, shown by the duplicate
            "logs": [{"time": "t", "level": "INFO", "message": "kept out"}],
            "conditions": [
                {
                    "type": "Succeeded",
                    "status": "True",
                    "reason": "Duplicate",
                    "message": "",
                    "lastTransitionTime": "2026-11-26T08:59:30Z",
                }
            ],
        },
    }
    runbook = retention.Finished.from_body(body)
    assert runbook is not None and runbook.succeeded and runbook.status.logs == []
    assert runbook.finished_at == datetime.datetime(2026, 11, 26, 8, 59, 30, tzinfo=datetime.UTC)
    assert retention.doomed([runbook], NOW, 3600, 0, 0) == []
    unfinished = {
        **body,
        "status": {"conditions": [{**body["status"]["conditions"][0], "status": "Unknown"}]},
    }
    assert retention.Finished.from_body(unfinished) is None
    deleting = {**body, "metadata": {**body["metadata"], "deletionTimestamp": "2026-11-26T09:00:00Z"}}
    assert retention.Finished.from_body(deleting) is None


def test_the_namespace_cap_lets_in_the_oldest_and_never_refuses_what_an_earlier_controller_let_in():
    cap = quota.Cap(2)
    a, b, c = entry("a", seq=0), entry("b", seq=1), entry("c", seq=2)
    queued_before = entry("q", seq=3, status={"requestId": "q"})
    assert cap.admit(a) and cap.admit(b)
    assert not cap.admit(c)
    assert cap.admit(a)  # asked again (a retried admission): still in
    cap.seen(queued_before)  # admitted before a restart: counted as soon as seen, never refused
    assert len(cap.let_in) == 3 and cap.admit(queued_before)
    cap.left("uid-a")
    cap.left("uid-q")
    assert cap.admit(c)
    assert quota.Cap(0).admit(c)  # 0: no cap
    deleted = entry("d", seq=4)
    deleted.deleting = True  # the cap is full, but it starts nothing: only its finalizer comes off
    assert len(cap.let_in) == cap.cap and cap.admit(deleted)


def test_an_audit_line_says_who_what_when_the_transition_and_its_outcome():
    spec = {
        "command": "failover",
        "requestId": "req-9",
        "requestedBy": "alice",
        "mode": "live",
        "profile": "backup",
    }
    status = RunbookStatus.read(
        {
            "result": "failed",
            "exitCode": 3,
            "conditions": [
                {
                    "type": "Succeeded",
                    "status": "False",
                    "reason": "HealthGateFailed",
                    "message": "gate",
                    "lastTransitionTime": "2026-11-26T08:00:00.000Z",
                }
            ],
        }
    )
    line = audit.line("HealthGateFailed", "ops", "fo-9", spec, status, "gate", "2026-11-26T08:00:01.000Z")
    assert line == {
        "logger": "mdops.audit",
        "when": "2026-11-26T08:00:01.000Z",
        "transition": "HealthGateFailed",
        "who": "alice",
        "command": "failover",
        "namespace": "ops",
        "name": "fo-9",
        "requestId": "req-9",
        "mode": "live",
        "profile": "backup",
        "dryRun": False,
        "cancelledBy": None,
        "result": "failed",
        "exitCode": 3,
        "reason": "HealthGateFailed",
        "message": "gate",
    }
    started = audit.line("Started", "ops", "fo-9", {"command": "drill"}, RunbookStatus(), "", "t")
    assert (started["requestId"], started["result"], started["exitCode"], started["reason"]) == (
        "fo-9",
        None,
        None,
        None,
    )


@pytest.mark.parametrize("spec", [{"command": "drill"}, {"command": "drill", "requestedBy": ""}])
def test_a_runbook_that_names_nobody_is_unknown_in_the_controllers_audit_as_in_the_apis(spec):
    """A Runbook made with kubectl need not name who asked: the controller's audit line and the API's
    audit entry say the same of it."""
    obj = {
        "metadata": {
            "name": "d-1",
            "uid": "u",
            "resourceVersion": "1",
            "creationTimestamp": "2026-01-05T01:00:00Z",
        },
        "spec": spec,
    }
    controllers = audit.line("Started", "ops", "d-1", spec, RunbookStatus(), "", "t")["who"]
    assert controllers == audit_entry(record_of(obj), datetime.UTC)["who"] == "unknown"


def test_a_finished_run_is_forgotten_when_it_leaves_the_watch_or_by_one_sweep_if_its_leave_never_shows():
    """A settled entry stays in view until the watch sees it leave (its late events must not bring it
    back); for a leave that never shows there is one sweep for all such entries, never a timer per run
    (which would keep something of every run of a burst alive long after it)."""

    def body(name: str) -> dict:
        meta = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "creationTimestamp": "2026"}
        return {"metadata": meta, "spec": {"command": "health_check"}}

    async def scenario() -> None:  # the sweep is a timer of the running loop
        unused = types.SimpleNamespace(services=types.SimpleNamespace(kube=None))  # no step runs here
        dispatcher = Dispatcher(unused, SETTINGS)
        for name in ("left", "lost", "recent"):
            dispatcher.observe(None, body(name))
        sweeps = set()
        for name in ("left", "lost", "recent"):
            dispatcher._settle(dispatcher.entries[f"uid-{name}"], gone=False)  # finished, not left yet
            sweeps.add(dispatcher.sweep)
        assert len(sweeps) == 1 and None not in sweeps  # one timer for them all
        assert not dispatcher.in_view("uid-left") and "uid-left" in dispatcher.entries
        settled = dispatcher.entries["uid-left"]
        dispatcher.observe("MODIFIED", body("left"))  # a late event does not bring it back
        assert dispatcher.entries["uid-left"] is settled and settled.stage is Stage.SETTLED
        dispatcher.observe("DELETED", body("left"))  # it left the watch: forgotten at once
        assert "uid-left" not in dispatcher.entries

        dispatcher.entries["uid-lost"].settled_at -= FORGET_SECONDS  # its leave never showed
        dispatcher.sweep.cancel()
        dispatcher._sweep()
        assert "uid-lost" not in dispatcher.entries
        assert "uid-recent" in dispatcher.entries and dispatcher.sweep is not None  # its turn comes later

    asyncio.run(scenario())


class Looked(dict):
    """A dict that counts the looks at all its values."""

    looks = 0

    def values(self):
        self.looks += 1
        return super().values()


def test_an_approval_wakes_its_own_runs_without_a_look_at_every_held_run():
    """A burst of approvals over as many runs held for them (a four-eyes rule, or a start-up, whose
    listing brings every approval): each wakes the runs of its request id only, without a look at every
    held run (quadratic: 3,000 approvals over 3,000 held runs cost the event loop 5 s of CPU)."""
    held = 3000

    def body(name: str) -> dict:
        meta = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "creationTimestamp": "2026"}
        return {"metadata": meta, "spec": {"command": "failover", "requestId": name}}

    async def scenario() -> None:
        dispatcher = Dispatcher(types.SimpleNamespace(services=types.SimpleNamespace(kube=None)), SETTINGS)
        for index in range(held):
            dispatcher.observe(None, body(f"fo-{index}"))
        for entry in dispatcher.entries.values():  # all held at the gate, awaiting approvals
            entry.stage = Stage.HELD
            dispatcher.held[entry.uid] = entry
        dispatcher.entries, dispatcher.held = Looked(dispatcher.entries), Looked(dispatcher.held)
        dispatcher.gate_changed("fo-7")
        assert dispatcher.entries["uid-fo-7"].stage is Stage.NEW  # admitted again, to be counted
        assert dispatcher.entries["uid-fo-8"].stage is Stage.HELD
        dispatcher.gate_changed("a-finished-run")  # nothing to wake
        for index in range(held):
            dispatcher.gate_changed(f"fo-{index}")
        assert not dispatcher.held
        assert (dispatcher.entries.looks, dispatcher.held.looks) == (0, 0)
        dispatcher.gate_changed()  # a policy changed: that one looks at every run, once
        assert dispatcher.entries.looks + dispatcher.held.looks == 1

    asyncio.run(scenario())


def failover(name: str, created: str = "2026") -> dict:
    meta = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "creationTimestamp": created}
    return {"metadata": meta, "spec": {"command": "failover"}}


# A run held at the gate before a restart, as its status says (the cap counts it as let in).
FROZEN = {"conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "OutsideChangeWindow"}]}


class StandIn:
    """What each stand-in for :class:`runs.Runs` has: no API server, and no orphans in the ledger."""

    services = types.SimpleNamespace(kube=None)

    async def orphans(self, namespace, in_view):
        return
        yield


class HeldRuns(StandIn):
    """Runs that the gate holds, each admitted one."""

    services = types.SimpleNamespace(kube=None, lock=types.SimpleNamespace(forget=lambda: None))

    async def admit(self, entry, in_view) -> runs.Next:
        return runs.Next(runs.Outcome.HELD, 3600)


async def until(check, what: str, seconds: float = 5) -> None:
    """Poll ``check`` on the running loop until it holds, for at most ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def dispatching(scripted) -> AsyncIterator[Dispatcher]:
    """A dispatcher over the scripted ``Runs``, its loop running, after a listing of none (the Runbooks come
    as they are made)."""
    dispatcher = Dispatcher(scripted, SETTINGS)
    dispatcher.listing_ended(set())
    loop = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        loop.cancel()


def test_the_next_run_starts_when_its_predecessor_ends_while_its_queued_status_is_being_written():
    """The lane's next run may take the lock once the run ahead of it has ended and its own Queued status
    is written, in whichever order these two come (the status may be slow: an API server just restarted)."""

    class ScriptedRuns(StandIn):
        """The run's steps as the dispatcher calls them, each ending when the scenario says."""

        def __init__(self) -> None:
            self.first_may_end = asyncio.Event()
            self.queued_written = asyncio.Event()
            self.showing = asyncio.Event()
            self.started: list[str] = []

        async def admit(self, entry, in_view) -> runs.Next:
            return runs.Next(runs.Outcome.OWNER)

        async def show_queued(self, entry, behind: str) -> None:
            self.showing.set()
            await self.queued_written.wait()

        async def run(self, entry, stopping) -> runs.Next:
            self.started.append(entry.name)
            if entry.name == "first":
                await self.first_may_end.wait()
            return runs.Next(runs.Outcome.SETTLED)

    async def scenario() -> None:
        scripted = ScriptedRuns()
        async with dispatching(scripted) as dispatcher:
            dispatcher.observe(None, failover("first"))
            await until(lambda: scripted.started == ["first"], "the first run")
            dispatcher.observe(None, failover("second"))
            await until(scripted.showing.is_set, "the second's Queued status to be written")
            scripted.first_may_end.set()  # the first ends while that status is being written
            first = dispatcher.entries["uid-first"]
            await until(lambda: first.stage is Stage.SETTLED, "the first to settle")
            assert scripted.started == ["first"]
            scripted.queued_written.set()
            await until(lambda: scripted.started == ["first", "second"], "the second run")

    asyncio.run(scenario())


def test_a_running_runbook_that_a_listing_again_does_not_list_is_taken_as_gone_and_its_run_asked_to_stop():
    """kopf lists the Runbooks again when its watch cannot resume (a 410 after the API server restarted),
    and a Runbook deleted by force in that gap brings no event: the running one that the listing lacks is
    told that it left (its run then asks the API server whether it was deleted, and is stopped if so); the
    one it lists goes on untouched."""

    class ScriptedRuns(StandIn):
        def __init__(self) -> None:
            self.may_end = asyncio.Event()

        async def admit(self, entry, in_view) -> runs.Next:
            return runs.Next(runs.Outcome.OWNER)

        async def run(self, entry, stopping) -> runs.Next:
            await self.may_end.wait()
            return runs.Next(runs.Outcome.SETTLED)

    async def scenario() -> None:
        scripted = ScriptedRuns()
        async with dispatching(scripted) as dispatcher:
            dispatcher.observe(None, failover("forced"))
            dispatcher.observe(None, {**failover("kept"), "spec": {"command": "health_check"}})  # no lock
            await until(
                lambda: all(e.stage is Stage.RUNNING for e in dispatcher.entries.values()), "both to run"
            )
            dispatcher.listing_ended({"uid-kept"})  # listed again, without "forced"
            forced, kept = dispatcher.entries["uid-forced"], dispatcher.entries["uid-kept"]
            assert forced.left and forced.cancel.is_set()
            assert not kept.left and not kept.cancel.is_set()
            scripted.may_end.set()

    asyncio.run(scenario())


# Who asked for an orphan's run, and with what, as its claim keeps it (the audit of its end says so).
ORPHAN_ASKED = {"requestedBy": "alice", "mode": "live", "profile": "backup", "dryRun": False}


def orphan_claim(name: str, request_id: str) -> ledger.Entry:
    """The claim of a Runbook ``name`` whose run may have started (its mark is off), with no result."""
    annotations = {
        keys.REQUEST_ID: request_id,
        keys.RUNBOOK: f"ns/{name}",
        keys.COMMAND_LABEL: "failover",
        keys.LOCK_GROUP: "default",
        keys.ASKED: json.dumps(ORPHAN_ASKED),
    }
    lease = {
        "metadata": {
            "name": ledger.lease_name(request_id),
            "resourceVersion": "7",
            "annotations": annotations,
        }
    }
    return ledger.Entry.from_lease({**lease, "spec": {"holderIdentity": f"uid-{name}"}})


@pytest.mark.parametrize(
    ("written", "asked"),
    [
        (
            '{"requestedBy":"alice","profile":"backup","other":1}',
            {"requestedBy": "alice", "profile": "backup"},
        ),
        (None, {}),  # a claim made before claims kept it
        ("not JSON", {}),
        ('["alice"]', {}),
    ],
)
def test_a_claim_says_who_asked_for_its_run_from_what_it_kept(written, asked):
    annotations = {keys.ASKED: written} if written is not None else {}
    entry = ledger.Entry.from_lease({"metadata": {"name": "n", "annotations": annotations}})
    assert entry.asked == asked


@pytest.mark.parametrize(
    ("annotation", "written", "why"),
    [
        (keys.RESULT, "{not json", "Expecting property name"),
        (keys.RESULT, "[0]", "not a JSON object"),
        (keys.RESULT, '{"exitCode": true}', "its exitCode is not an exit code: True"),
        (keys.RESULT, '{"exitCode": 256}', "its exitCode is not an exit code: 256"),
        (keys.ARRIVAL, "soon", "invalid literal"),
    ],
)
def test_a_claim_edited_into_what_mdops_does_not_write_is_unreadable_and_says_where(annotation, written, why):
    lease = {"metadata": {"name": "mdops-req-x", "annotations": {annotation: written}}}
    with pytest.raises(ledger.UnreadableClaim) as raised:
        ledger.Entry.from_lease(lease)
    assert f"the ledger's Lease mdops-req-x cannot be read, its annotation {annotation}" in str(raised.value)
    assert why in str(raised.value) and "mend that Lease, or delete it" in str(raised.value)


@pytest.mark.parametrize("written", ['{"exitCode": 0, "result": "success"}', '{"exitCode": null}', ""])
def test_a_claims_result_as_mdops_writes_it_is_read(written):
    lease = {"metadata": {"name": "n", "annotations": {keys.RESULT: written, keys.ARRIVAL: "12"}}}
    entry = ledger.Entry.from_lease(lease)
    assert entry.arrival == 12 and entry.result == (json.loads(written) if written else None)


def test_an_orphan_is_ended_once_at_once_and_the_duplicates_of_its_request_id_wait_for_its_end():
    """A claim whose Runbook went unseen, found after the listing and again by a duplicate's admission, is
    ended once, as a deleted Runbook's run (nothing of it starts, no slot is waited for: every slot is
    taken); the duplicate waits for that end, then is admitted again (and shows it)."""

    class ScriptedRuns(StandIn):
        def __init__(self) -> None:
            self.steps: list[tuple[str, bool, bool, bool]] = []  # name, gone, deleting, orphan
            self.admitted: list[str] = []
            self.orphan_may_end = asyncio.Event()
            self.busy_may_end = asyncio.Event()

        async def orphans(self, namespace, in_view):
            await until(lambda: len(self.steps) == SETTINGS.max_parallel, "every slot taken")
            assert not in_view("uid-gone")
            yield orphan_claim("gone", "req-x")

        async def admit(self, entry, in_view) -> runs.Next:
            self.admitted.append(entry.name)
            if entry.name == "again" and len(self.admitted) <= SETTINGS.max_parallel + 1:
                return runs.Next(runs.Outcome.PARKED, owner="uid-gone", orphan=orphan_claim("gone", "req-x"))
            return runs.Next(runs.Outcome.OWNER if entry.name != "again" else runs.Outcome.SETTLED)

        async def run(self, entry, stopping) -> runs.Next:
            self.steps.append((entry.name, entry.gone, entry.deleting, entry.orphan))
            if entry.orphan:  # what its audit lines say of it, though its Runbook is gone
                assert entry.spec == {**ORPHAN_ASKED, "command": "failover", "requestId": "req-x"}, entry.spec
            await (self.orphan_may_end if entry.orphan else self.busy_may_end).wait()
            return runs.Next(runs.Outcome.SETTLED)

    def check(body: dict) -> dict:
        return {**body, "spec": {"command": "health_check"}}

    async def scenario() -> None:
        scripted = ScriptedRuns()
        dispatcher = Dispatcher(scripted, SETTINGS)
        busy = [f"busy-{n}" for n in range(SETTINGS.max_parallel)]
        for name in busy:
            dispatcher.observe(None, check(failover(name)))
        dispatcher.listing_ended({f"uid-{name}" for name in busy})
        loop = asyncio.create_task(dispatcher.run())
        try:
            await until(lambda: len(scripted.steps) == SETTINGS.max_parallel + 1, "the orphan's step")
            assert scripted.steps[-1] == ("gone", True, True, True)  # beside the busy runs, in no slot
            dispatcher.observe(None, failover("again"))
            await until(
                lambda: dispatcher.entries["uid-again"].stage is Stage.PARKED, "the duplicate to wait"
            )
            assert [step[0] for step in scripted.steps].count("gone") == 1  # taken once
            scripted.orphan_may_end.set()
            await until(lambda: dispatcher.entries["uid-again"].stage is Stage.SETTLED, "the duplicate's end")
            assert scripted.admitted.count("again") == 2  # once more, after the orphan's end
            assert "uid-gone" not in dispatcher.entries and not dispatcher.named("req-x")
        finally:
            scripted.busy_may_end.set()
            loop.cancel()

    asyncio.run(scenario())


def test_a_lane_head_waiting_for_a_lock_held_elsewhere_asks_again_once_its_wait_is_over_not_at_each_arrival():
    """The head of a target's lane whose lock a Runbook outside the lane holds (one deleted by force whose
    run goes on, a refused Job's next ask alike) asks again after its wait, not each time something else
    happens on its target: each arrival behind it, and each of their Queued statuses written, made it ask
    at once (a Lease and a Runbook read each time; for a refused Job, a create)."""

    class ScriptedRuns(StandIn):
        def __init__(self) -> None:
            self.asks = 0
            self.shown: list[str] = []

        async def admit(self, entry, in_view) -> runs.Next:
            return runs.Next(runs.Outcome.OWNER)

        async def show_queued(self, entry, behind: str) -> None:
            self.shown.append(entry.name)

        async def run(self, entry, stopping) -> runs.Next:
            assert entry.name == "head", entry.name
            self.asks += 1
            return runs.Next(runs.Outcome.RETRY, 1.0, holder="gone-holder")

    async def scenario() -> None:
        scripted = ScriptedRuns()
        async with dispatching(scripted) as dispatcher:
            dispatcher.observe(None, failover("head", created="2026-01"))
            await until(lambda: scripted.asks == 1, "the head's first ask")
            behind = [f"behind-{n}" for n in range(5)]
            for name in behind:
                dispatcher.observe(None, failover(name, created="2026-02"))
            await until(lambda: sorted(scripted.shown) == behind, "the Queued statuses of those behind")
            await until(lambda: not dispatcher.tasks and not dispatcher.showing, "their steps to end")
            assert scripted.asks == 1
            await until(lambda: scripted.asks == 2, "the head's ask once its wait is over", seconds=5)

    asyncio.run(scenario())


def test_a_burst_on_one_target_runs_one_at_a_time_in_order_whatever_its_writes_and_runs_take():
    """200 runs of one target, admitted as they come, each step taking a random few milliseconds (seeded):
    every run starts, in creation order, never two at once."""

    class RandomRuns(StandIn):
        def __init__(self) -> None:
            self.random = random.Random(11)
            self.started: list[str] = []
            self.running = 0
            self.most = 0

        async def pause(self, *choices: float) -> None:
            await asyncio.sleep(self.random.choice(choices or (0, 0, 0.001, 0.003)))

        async def admit(self, entry, in_view) -> runs.Next:
            await self.pause()
            return runs.Next(runs.Outcome.OWNER)

        async def show_queued(self, entry, behind: str) -> None:
            await self.pause(0, 0.002, 0.005)  # a status write is often slower than a run here

        async def run(self, entry, stopping) -> runs.Next:
            self.running += 1
            self.most = max(self.most, self.running)
            self.started.append(entry.name)
            await self.pause(0, 0, 0.001)
            self.running -= 1
            return runs.Next(runs.Outcome.SETTLED)

    names = [f"run-{i:03d}" for i in range(200)]

    async def scenario() -> None:
        scripted = RandomRuns()
        async with dispatching(scripted) as dispatcher:
            for i, name in enumerate(names):
                dispatcher.observe(None, failover(name, f"2026-12-03T08:{i // 60:02d}:{i % 60:02d}Z"))
                await scripted.pause()
            await until(lambda: len(scripted.started) == len(names), "every run", seconds=30)
        assert scripted.started == names
        assert scripted.most == 1

    asyncio.run(scenario())


def test_a_lock_holder_behind_its_lanes_head_keeps_its_own_pace_of_asking_again():
    """The lane's head waits for a lock that a newer run holds, not started: its Job is refused (a quota),
    so it asks again less and less often (after its RETRY's delay). The head, asking for the lock every
    LOCK_RETRY_SECONDS, makes the holder go first (f281246), but only once the holder's own delay is over:
    not at every one of the head's asks, which would send a refused Job every 2 s, the refusal's backoff
    undone."""

    class ScriptedRuns(StandIn):
        def __init__(self) -> None:
            self.asked: dict[str, int] = {"older": 0, "newer": 0}

        async def admit(self, entry, in_view) -> runs.Next:
            return runs.Next(runs.Outcome.OWNER)

        async def show_queued(self, entry, behind: str) -> None:
            pass

        async def run(self, entry, stopping) -> runs.Next:
            self.asked[entry.name] += 1
            if entry.name == "older":  # the lock is the newer one's
                return runs.Next(runs.Outcome.RETRY, 0.005, holder="newer")
            return runs.Next(runs.Outcome.RETRY, 30.0)  # its Job refused: asked again in 30 s

    async def scenario() -> None:
        scripted = ScriptedRuns()
        async with dispatching(scripted) as dispatcher:
            dispatcher.observe(None, failover("older", "2026-12-03T08:00:00Z"))
            dispatcher.observe(None, failover("newer", "2026-12-03T08:00:01Z"))
            await until(lambda: scripted.asked["older"] >= 40, "the head's asks for the lock")
        assert scripted.asked["newer"] == 1, scripted.asked

    asyncio.run(scenario())


def deleted(body: dict) -> dict:
    """``body`` as the watch shows it once deleted while our finalizer holds it."""
    meta = {**body["metadata"], "deletionTimestamp": "2026-12-05T08:00:00Z", "finalizers": [keys.FINALIZER]}
    return {**body, "metadata": meta}


def cancelled(body: dict) -> dict:
    """``body`` as the watch shows it once cancelled."""
    return {**body, "spec": {**body["spec"], "cancel": {"requestedBy": "alice"}}}


HELD, RETRY = runs.Next(runs.Outcome.HELD, 3600), runs.Next(runs.Outcome.RETRY, 30.0)
PARKED = runs.Next(runs.Outcome.PARKED, owner="uid-original")


@pytest.mark.parametrize("during_the_step", [True, False], ids=["during-the-step", "after-it"])
@pytest.mark.parametrize(
    ("stop", "wait"),
    [(deleted, HELD), (deleted, RETRY), (cancelled, HELD), (cancelled, RETRY), (cancelled, PARKED)],
    ids=["deleted-held", "deleted-retry", "cancelled-held", "cancelled-retry", "cancelled-parked"],
)
def test_a_deleted_or_cancelled_runbook_takes_its_next_step_at_once_whatever_its_wait(
    during_the_step, stop, wait
):
    """A run held by the gate (a freeze an hour long), asking again later (its Job refused), or a
    duplicate parked until its original ends, is deleted (its finalizer keeping it) or cancelled: its next
    step (which starts nothing) comes at once, also when the deletion is seen while the step that made it
    wait is still going (its held status written, the lock given back: CI once saw that Runbook
    Terminating for the hold's recheck, 300 s)."""

    class ScriptedRuns(StandIn):
        def __init__(self) -> None:
            self.steps: list[bool] = []  # whether the Runbook was deleted, at each step
            self.may_end = asyncio.Event()

        async def step(self, entry) -> runs.Next:
            self.steps.append(entry.stop_asked)
            if entry.stop_asked:
                return runs.Next(runs.Outcome.GONE)
            await self.may_end.wait()
            return wait

        async def admit(self, entry, in_view) -> runs.Next:  # the gate holds it or lets it through; parked
            if wait.outcome in (runs.Outcome.HELD, runs.Outcome.PARKED):
                return await self.step(entry)
            return runs.Next(runs.Outcome.OWNER)

        async def run(self, entry, stopping) -> runs.Next:  # its Job refused, asked again later
            return await self.step(entry)

    async def scenario() -> None:
        scripted = ScriptedRuns()
        async with dispatching(scripted) as dispatcher:
            body = failover("frozen")
            dispatcher.observe(None, body)
            await until(lambda: scripted.steps == [False], "the step that makes it wait")
            if not during_the_step:
                scripted.may_end.set()
                await until(lambda: "uid-frozen" not in dispatcher.tasks, "the step's end")
            dispatcher.observe("MODIFIED", stop(body))
            scripted.may_end.set()
            await until(lambda: "uid-frozen" not in dispatcher.entries, "the deleted Runbook's next step", 2)
        assert scripted.steps == [False, True]

    asyncio.run(scenario())


def test_a_new_run_is_admitted_before_the_runs_the_gate_held_before_a_restart_or_a_policy_change():
    """A freeze holds many runs. Each look at one is a claim and a read of the policies; a restart (their
    statuses say held) and a policy change (which looks at every held run again) admit them all anew. A
    run that comes meanwhile, never held, is admitted before them, not after minutes of their looks."""
    held = [f"held-{index}" for index in range(30)]

    class ScriptedRuns(StandIn):
        def __init__(self) -> None:
            self.admitted: list[str] = []

        async def admit(self, entry, in_view) -> runs.Next:
            self.admitted.append(entry.name)
            await asyncio.sleep(0)  # a look takes its time: the others wait for a slot
            if entry.name in held:
                return runs.Next(runs.Outcome.HELD, 3600)
            return runs.Next(runs.Outcome.OWNER)

        async def run(self, entry, stopping) -> runs.Next:
            return runs.Next(runs.Outcome.SETTLED)

    def check(name: str, created: str) -> dict:
        meta = {"name": name, "namespace": "ns", "uid": f"uid-{name}", "creationTimestamp": created}
        return {"metadata": meta, "spec": {"command": "health_check"}}

    async def scenario() -> None:
        scripted = ScriptedRuns()
        dispatcher = Dispatcher(scripted, SETTINGS)
        for name in held:  # as a restarted controller's watch lists them
            dispatcher.observe(None, {**check(name, "2026-12-05T01:00:00Z"), "status": FROZEN})
        dispatcher.observe(None, check("new", "2026-12-05T02:00:00Z"))
        dispatcher.listing_ended({f"uid-{name}" for name in [*held, "new"]})
        loop = asyncio.create_task(dispatcher.run())
        try:
            await until(lambda: len(dispatcher.held) == len(held), "every held run looked at")
            assert scripted.admitted[0] == "new", scripted.admitted[:5]

            scripted.admitted.clear()
            dispatcher.gate_changed()  # a policy changed: every held run is looked at again
            dispatcher.observe(None, check("newer", "2026-12-05T03:00:00Z"))
            await until(lambda: "newer" in scripted.admitted, "the newer run admitted")
            assert scripted.admitted.index("newer") <= ADMISSIONS, scripted.admitted[:8]
            await until(lambda: len(dispatcher.held) == len(held), "every held run looked at again")
        finally:
            loop.cancel()

    asyncio.run(scenario())


def test_nothing_is_admitted_before_every_runbook_of_kopfs_listing_was_seen_as_it_starts_and_resumes():
    """kopf hands each listed Runbook to a worker of its own, which brings it in no set order: a new
    Runbook listed first (by name) was admitted before the runs let in before a restart were seen, so
    before the cap counted them. Admission waits for the listing's end and each Runbook it listed; after
    a pause (another replica acted), for the next listing."""

    async def scenario() -> None:
        dispatcher = Dispatcher(HeldRuns(), SETTINGS)
        dispatcher.observe(None, failover("a-new"))
        dispatcher._dispatch()
        dispatcher.listing_ended({"uid-a-new", "uid-held"})
        dispatcher._dispatch()
        assert not dispatcher.tasks  # held is listed, not seen yet
        dispatcher.observe(None, {**failover("held"), "status": FROZEN})
        assert dispatcher.cap.let_in == {"uid-held"}
        dispatcher._dispatch()
        assert set(dispatcher.tasks) == {"uid-a-new", "uid-held"}

        dispatcher.pause()
        dispatcher.resume()
        dispatcher.observe(None, failover("b-new"))
        dispatcher._dispatch()
        assert set(dispatcher.tasks) == {"uid-a-new", "uid-held"}  # those before the pause
        dispatcher.listing_ended({"uid-b-new"})
        dispatcher._dispatch()
        assert "uid-b-new" in dispatcher.tasks

    asyncio.run(scenario())


def test_a_held_run_deleted_before_a_restarted_controller_admitted_it_frees_its_request_id():
    """A restarted controller admits the runs the gate held after the new ones: minutes, after a freeze's
    thousands. One deleted meanwhile (it holds no finalizer: it goes at once) claimed its request id
    before the restart; that claim is given up, else the request id created again is a duplicate of a run
    that never ran. A Runbook never let in is forgotten without a call."""

    class ScriptedRuns(StandIn):
        services = types.SimpleNamespace(kube=types.SimpleNamespace(get_runbook=None))

        def __init__(self) -> None:
            self.released: list[str] = []

        async def stop_unseen(self, entry) -> bool:
            return False  # held: its claim says that its run has not started

        async def release_claim(self, entry) -> None:
            self.released.append(entry.name)

    async def gone(namespace: str, name: str) -> None:
        return None

    async def scenario() -> None:
        scripted = ScriptedRuns()
        scripted.services.kube.get_runbook = gone
        dispatcher = Dispatcher(scripted, SETTINGS)
        held, new = {**failover("held"), "status": FROZEN}, failover("new")
        for body in (held, new):  # listed by the restarted controller's watch, not admitted yet
            dispatcher.observe(None, body)
            dispatcher.observe("DELETED", body)
        await until(lambda: not dispatcher.entries, "both forgotten")
        assert scripted.released == ["held"]

    asyncio.run(scenario())


async def nothing_runs(namespace: str, name: str, uid: str) -> bool:
    """No process of a gone Runbook's run lives (:meth:`controller.executors.Executor.may_run`)."""
    return False


class Leases:
    """The Lease API as two controller replicas share it: versions, conflicts, unfinished Runbooks."""

    def __init__(self) -> None:
        self.stored: dict[str, dict] = {}
        self.version = 0
        self.reads = 0

    async def get_lease(self, namespace: str, name: str) -> dict | None:
        self.reads += 1
        return copy.deepcopy(self.stored.get(name))

    async def create_lease(self, namespace: str, body: dict) -> dict:
        name = body["metadata"]["name"]
        if name in self.stored:
            raise Conflict(409, "POST", name, "exists")
        return self._store(body)

    async def replace_lease(self, namespace: str, lease: dict) -> dict:
        name = lease["metadata"]["name"]
        if self.stored[name]["metadata"]["resourceVersion"] != lease["metadata"]["resourceVersion"]:
            raise Conflict(409, "PUT", name, "changed")
        return self._store(lease)

    async def get_runbook(self, namespace: str, name: str) -> dict:
        return {"metadata": {"name": name, "uid": f"uid-{name}"}, "status": {}}

    def _store(self, body: dict) -> dict:
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.stored[stored["metadata"]["name"]] = stored
        return copy.deepcopy(stored)


def test_a_replica_that_resumes_reads_the_locks_again_never_trusts_what_it_knew_before_its_pause():
    """Replica B took the lock for x (its Job refused: x keeps it, not started), then kopf's peering paused
    B. Replica A, active meanwhile, let go of x's lock (its gate held x) and z took it, and runs. A pauses,
    B resumes, the hold ends: x asks for the lock again. B must not take its own Lease of before the pause
    for the present one, else x starts while z runs."""

    async def scenario() -> None:
        kube = Leases()
        b, a = lock.TargetLock(kube, nothing_runs), lock.TargetLock(kube, nothing_runs)
        assert await b.acquire("ns", "default", "uid-x", "x") is None
        dispatcher = Dispatcher(
            types.SimpleNamespace(services=types.SimpleNamespace(kube=kube, lock=b)), SETTINGS
        )
        dispatcher.pause()
        await a.release_if_held("ns", "default", "uid-x")
        assert await a.acquire("ns", "default", "uid-z", "z") is None
        dispatcher.resume()
        assert await b.acquire("ns", "default", "uid-x", "x") == "z"
        await b.release_if_held(
            "ns", "default", "uid-x"
        )  # x held by the gate again: nothing of z's is let go
        [stored] = kube.stored.values()
        assert stored["spec"]["holderIdentity"] == "uid-z"

    asyncio.run(scenario())


def test_held_runs_of_a_target_without_a_lease_read_it_once_and_the_lock_can_still_be_taken():
    """After a restart, each run the gate holds asks whether it holds its target's lock. With no Lease
    yet, that is one read per target, not one per held run at every look; taking the lock then creates
    it, and a Lease made meanwhile by a replica before its pause is found by the conflict."""

    async def scenario() -> None:
        kube = Leases()
        lock_ = lock.TargetLock(kube, nothing_runs)
        for uid in ("uid-a", "uid-b", "uid-c", "uid-a"):
            await lock_.release_if_held("ns", "default", uid)
        assert kube.reads == 1
        assert await lock_.acquire("ns", "default", "uid-a", "a") is None
        assert kube.reads == 1
        await lock_.release("ns", "default", "uid-a")

        other, late = lock.TargetLock(kube, nothing_runs), lock.TargetLock(kube, nothing_runs)
        await late.release_if_held("ns", "blue", "uid-x")  # knows of no Lease for blue
        assert await other.acquire("ns", "blue", "uid-y", "y") is None
        assert await late.acquire("ns", "blue", "uid-x", "x") == "y"

    asyncio.run(scenario())


def test_the_lock_of_a_holder_that_is_gone_is_taken_only_once_no_process_of_its_run_may_run():
    """A Runbook deleted by force while no controller ran still holds its target's lock, and nobody stopped
    its run: the next run takes the lock once no process of that run may run (the executor says), not
    as soon as the holder is found gone."""

    async def scenario() -> None:
        kube = Leases()
        running = {"uid-x": True}

        async def may_run(namespace: str, name: str, uid: str) -> bool:
            return running.get(uid, False)

        async def gone(namespace: str, name: str) -> None:
            return None

        kube.get_runbook = gone
        assert await lock.TargetLock(kube, may_run).acquire("ns", "default", "uid-x", "x") is None
        after = lock.TargetLock(kube, may_run)
        assert await after.acquire("ns", "default", "uid-y", "y") == "x"
        running["uid-x"] = False
        assert await after.acquire("ns", "default", "uid-y", "y") is None
        [stored] = kube.stored.values()
        assert stored["spec"]["holderIdentity"] == "uid-y"

    asyncio.run(scenario())


def test_a_listing_that_kopf_paused_during_is_not_counted_when_it_resumes_but_the_next_one():
    """kopf pauses (another replica is active) while its listing is on its way: the listing goes on and
    ends while paused, and kopf lists again as it resumes, in no set order again. That stale listing was
    counted as the dispatcher resumed: admission began with the first Runbook of the new listing, before
    the runs the other replica let in were seen, so before the cap counted them."""
    from kopf._cogs.aiokits import aiotoggles
    from kopf._cogs.clients import watching
    from kopf._cogs.structs import references

    from controller.handlers import Listings  # imports kopf

    held = {**failover("held"), "status": FROZEN}

    async def scenario() -> None:
        dispatcher = Dispatcher(HeldRuns(), SETTINGS)
        listings = Listings()
        listings.ended = dispatcher.listing_ended
        paused = aiotoggles.ToggleSet(any)
        peering = await paused.make_toggle(False)
        fed: asyncio.Queue = asyncio.Queue()

        async def watch(**_: object):  # kopf's stream of the Runbooks, as the API server feeds it
            while True:
                yield await fed.get()

        runbooks = references.Resource(keys.GROUP, keys.VERSION, keys.PLURAL)
        stream = listings.wrap(watch)(resource=runbooks, operator_paused=paused)

        async def kopf_brings(*events) -> None:  # through the wrapped stream to kopf's workers
            for event in events:
                fed.put_nowait(event)
                assert await anext(stream) is event
                if event is not watching.Bookmark.LISTED:
                    dispatcher.observe(event["type"], event["object"])

        await peering.turn_to(True)  # kopf pauses as its listing arrives
        dispatcher.pause()
        await kopf_brings(
            {"type": None, "object": held},
            {"type": None, "object": failover("new")},
            watching.Bookmark.LISTED,
        )
        await peering.turn_to(False)  # kopf resumes and lists again
        dispatcher.resume()
        await kopf_brings({"type": None, "object": failover("new")})
        dispatcher._dispatch()
        assert not dispatcher.tasks  # the run the other replica let in is not seen yet
        await kopf_brings({"type": None, "object": held}, watching.Bookmark.LISTED)
        assert dispatcher.cap.let_in == {"uid-held"}
        dispatcher._dispatch()
        assert set(dispatcher.tasks) == {"uid-new", "uid-held"}

    asyncio.run(scenario())


def test_kopf_keeps_a_memory_only_for_the_objects_whose_timers_live_in_it():
    """A burst's waiting Runbooks, their Jobs and pods, policies and approvals have event handlers only:
    kopf's memory of each is made per event and not kept; a RunbookSchedule's (its timer's) is kept."""
    from controller.handlers import Memories  # imports kopf

    def body(kind: str) -> dict:
        return {"kind": kind, "metadata": {"uid": f"uid-{kind}", "name": kind.lower(), "namespace": "ns"}}

    memories = Memories()

    async def scenario() -> None:
        for kind in ("Runbook", "Job", "Pod", "RunbookPolicy", "RunbookApproval"):
            first = await memories.recall(body(kind), noticed_by_listing=True)
            assert await memories.recall(body(kind)) is not first
        kept = await memories.recall(body("RunbookSchedule"))
        assert await memories.recall(body("RunbookSchedule")) is kept

    asyncio.run(scenario())
    assert len(list(memories.iter_all_memories())) == 1


def test_a_run_that_ended_as_its_runbook_was_deleted_or_cancelled_is_recorded_as_it_ended():
    """The deletion (or cancel) stops a run that may have just ended: its own end stands (the failover
    happened), the runner's report of the stop stands (a cancel's saying who cancelled), and a stop that
    left no report is recorded as cancelled."""
    succeeded = {"exitCode": 0, "result": "success", "message": "", "logs": []}
    script_failed = failure(ExitCode.SCRIPT_FAILED, "script exited with code 1")
    timed_out = failure(ExitCode.TIMEOUT, "Job rb-1 exceeded its deadline")
    stopped = failure(ExitCode.CANCELLED, "cancelled by SIGTERM")
    cancel = {"requestedBy": "alice", "reason": "wrong venue"}
    for result in (succeeded, script_failed, timed_out, stopped):
        assert runs.after_stop(result, None) is result
    for result in (succeeded, script_failed, timed_out):
        assert runs.after_stop(result, cancel) is result
    assert runs.after_stop(stopped, cancel) == {**stopped, "message": "cancelled by alice: wrong venue"}
    for no_report in (
        lost("its Job rb-1 was deleted before it finished"),
        failure(ExitCode.NOT_EXECUTED, "the runner died (exit 137: killed by SIGKILL)"),
    ):
        for stop, message in ((None, "cancelled: the Runbook was deleted"), ({}, "cancelled")):
            recorded = runs.after_stop(no_report, stop)
            assert (recorded["exitCode"], recorded["message"]) == (ExitCode.CANCELLED, message)


def test_kopfs_events_and_listing_that_come_before_the_dispatcher_is_told_kopf_resumed_resume_it(monkeypatch):
    """kopf resumes (the other replica stopped) and lists again; the task that resumes the dispatcher on
    kopf's toggles (``Pauses.follow``) may come after the listing's events and its end. They resume it
    first, on the same toggles: dropped, a Runbook would wait for its next event, and admission for kopf's
    next listing. While kopf is paused, they are dropped (kopf lists again as it resumes)."""
    from kopf._cogs.aiokits import aiotoggles

    from controller import handlers  # imports kopf

    async def scenario() -> None:
        dispatcher = Dispatcher(HeldRuns(), SETTINGS)
        memo = types.SimpleNamespace(dispatcher=dispatcher)
        toggles = aiotoggles.ToggleSet(any)
        peering = await toggles.make_toggle(True)
        monkeypatch.setattr(handlers.PAUSES, "toggles", toggles)
        dispatcher.pause()  # kopf paused: another replica is active
        await handlers.runbook(event={"type": None, "object": failover("early")}, memo=memo)
        handlers.listing_ended(dispatcher, {"uid-early"})
        assert dispatcher.paused and not dispatcher.entries
        await peering.turn_to(False)  # kopf resumes and lists again; Pauses.follow has not run yet
        await handlers.runbook(event={"type": None, "object": failover("new")}, memo=memo)
        handlers.listing_ended(dispatcher, {"uid-new"})
        assert not dispatcher.paused
        dispatcher._dispatch()
        assert set(dispatcher.tasks) == {"uid-new"}

    asyncio.run(scenario())


def test_a_stopped_runs_end_found_without_its_own_report_is_recorded_cancelled_however_it_came():
    """The soak (seed 13): a cancelled run's runner was killed as its node restarted, and the replica that
    adopted it found the pod ended 137 before any stop of its own: it recorded the runner's death (125), as a
    run never asked to stop would be. A run asked to stop that ends with no report of its own was cancelled,
    whichever end is read first; its own end, and one of a run not asked to stop, stand."""
    died = failure(
        ExitCode.NOT_EXECUTED, "the runner died (exit 137: killed by SIGKILL) without writing a result"
    )
    cancelled = entry("cancelled", cancel={"requestedBy": "alice", "reason": "wrong venue"})
    recorded = runs.stopped_result(cancelled, died)
    assert (recorded["exitCode"], recorded["message"]) == (
        ExitCode.CANCELLED,
        "cancelled by alice: wrong venue",
    )
    found_lost = runs.stopped_result(cancelled, lost("its Job rb-1 was deleted before it finished"))
    assert found_lost["message"].startswith("cancelled by alice: wrong venue; ")
    succeeded = {"exitCode": 0, "result": "success", "message": "", "logs": []}
    assert runs.stopped_result(cancelled, succeeded) is succeeded
    assert runs.stopped_result(entry("running"), died) is died


def test_a_late_event_of_a_write_before_the_finalizer_went_on_never_keeps_it_on_a_finished_run():
    """The controller puts its finalizer on, then handles an event of a write made before that (its
    Queued status: kopf hands events over late, and a kube-apiserver restarted between them holds the next
    one back while the run goes on). The run's end still takes the finalizer off: a finished Runbook leaves
    the controller's watch, so one finished with the finalizer on would never go when deleted."""
    sent: list[list[str]] = []

    async def set_finalizers(namespace, name, uid, finalizers):
        sent.append(finalizers)
        return True

    steps = runs.Runs(types.SimpleNamespace(kube=types.SimpleNamespace(set_finalizers=set_finalizers)))
    late = entry("late")
    queued = {"metadata": {"name": "late", "uid": "uid-late"}, "spec": {}, "status": {"message": "queued"}}

    async def scenario():
        assert await steps._protect(late)
        late.update(queued)  # its event, handled after the finalizer went on
        await steps._let_go(late)

    asyncio.run(scenario())
    assert sent == [[keys.FINALIZER], []]


def test_a_run_another_replica_said_it_started_while_this_one_got_it_ready_is_not_announced_again(caplog):
    """This replica checked that the run had not started, froze while it got it ready (its finalizer, its
    Job), and woke to the other's Running brought by its watch: its own start found that Job running. It
    wrote its Running over the other's, moving the start to its own clock, and a second `Started` (a soak
    with two replicas, three runs of 200). That Running stands, seen on the watch or met by the write (its
    JSON patch's test that no run is named), and is not told again; a status that names no run is said."""
    written: list[dict] = []
    posted: list[str] = []
    other = {"execution": {"executor": "job", "name": "woken-1"}, "startedAt": "2026-11-26T08:00:07Z"}

    async def put_status(namespace, name, uid, status, unstarted=None):
        if name == "late":  # its write met the other's Running (the JSON patch's test of no run)
            raise Started({"metadata": {"name": name, "uid": uid}, "spec": {}, "status": other})
        if name == "ended":  # or the other's end, recorded meanwhile
            raise Final("its status is final")
        written.append(status)
        return True

    services = types.SimpleNamespace(
        kube=types.SimpleNamespace(put_status=put_status),
        executor=types.SimpleNamespace(kind="job"),
        events=types.SimpleNamespace(post=lambda ref, kind, reason, message: posted.append(reason)),
    )
    steps = runs.Runs(services)
    woken = entry("woken", status={"message": "waiting for earlier to finish on target t"})
    woken.update({"metadata": {"name": "woken", "uid": "uid-woken"}, "spec": {}, "status": other})
    late = entry("late")  # its watch had not brought the other's Running yet
    ended = entry("ended")
    fresh = entry("fresh")
    run = types.SimpleNamespace(name="woken-1")

    async def scenario():
        await steps._announce(woken, run, "day", None)
        await steps._announce(late, run, "day", None)
        await steps._announce(ended, run, "day", None)
        assert (written, posted) == ([], [])
        await steps._announce(fresh, types.SimpleNamespace(name="fresh-1"), "day", None)

    with caplog.at_level(logging.INFO, logger=audit.LOGGER):
        asyncio.run(scenario())
    assert [status["execution"]["name"] for status in written] == ["fresh-1"] and posted == ["Started"]
    told = [json.loads(r.message) for r in caplog.records if r.name == audit.LOGGER]
    assert [(line["name"], line["transition"]) for line in told] == [("fresh", "Started")]
    for adopted in (woken, late):
        assert runs.Runs.status(adopted).started_at == "2026-11-26T08:00:07Z"


def test_a_metrics_port_taken_fails_the_startup_before_it_starts_anything(monkeypatch, tmp_path):
    """The port was free when ``python -m controller`` looked, and taken before the startup handler served
    /metrics there: kopf retries a failed startup, and each attempt had started the dispatcher, the
    retention and the rest again beside those of the one before. Now nothing is started before it."""
    import kopf

    from controller import handlers, settings  # imports kopf

    kubeconfig = tmp_path / "kubeconfig"  # a loopback API server that is not there: nothing is asked of it
    kubeconfig.write_text(
        json.dumps(
            {
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    with socket.create_server(("127.0.0.1", 0)) as taken:
        for name, value in {
            "MDOPS_KUBECONFIG": str(kubeconfig),
            "MDOPS_METRICS_HOST": "127.0.0.1",
            "MDOPS_METRICS_PORT": str(taken.getsockname()[1]),
            "MDOPS_STATE_DIR": str(tmp_path / "state"),
        }.items():
            monkeypatch.setenv(name, value)
        settings.get_settings.cache_clear()
        memo = kopf.Memo()

        async def scenario() -> set[str]:
            before = asyncio.all_tasks()
            with pytest.raises(OSError, match="in use"):
                await handlers.startup(settings=kopf.OperatorSettings(), memo=memo)
            started = asyncio.all_tasks() - before
            for task in started:
                task.cancel()
            if started:
                await asyncio.wait(started, timeout=5)
            return {task.get_name() for task in started}

        try:
            assert asyncio.run(scenario()) == set() and "tasks" not in memo
        finally:
            settings.get_settings.cache_clear()
