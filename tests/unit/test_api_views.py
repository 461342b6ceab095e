"""The pure parts: Runbook objects to REST views, request comparison, sample values, permissions."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest

from api.auth import Principal
from api.main import refused_by_cluster
from api.prometheus import number
from api.records import record_of
from api.render import execute_response, iso, run_view, status_response
from runbooks import models
from runbooks.contract import PERMISSIONS

SHANGHAI = ZoneInfo("Asia/Shanghai")


def runbook(name="rb", spec=None, status=None, created="2025-09-22T00:00:00Z"):
    return {
        "metadata": {"name": name, "uid": "u", "resourceVersion": "1", "creationTimestamp": created},
        "spec": {"command": "start", **(spec or {})},
        "status": status or {},
    }


def succeeded(status, reason):
    return {
        "conditions": [{"type": "Succeeded", "status": status, "reason": reason, "lastTransitionTime": "x"}]
    }


@pytest.mark.parametrize(
    ("status", "state", "finished"),
    [
        ({}, "pending", False),
        (succeeded("Unknown", "Pending"), "pending", False),
        (succeeded("Unknown", "Queued"), "queued", False),
        (succeeded("Unknown", "Running"), "running", False),
        (succeeded("True", "Succeeded"), "success", True),
        (succeeded("False", "Failed"), "failed", True),
        (succeeded("False", "TimedOut"), "failed", True),
        (succeeded("False", "Cancelled"), "failed", True),
        (succeeded("True", "Duplicate"), "success", True),
    ],
)
def test_the_succeeded_condition_gives_the_state(status, state, finished):
    record = record_of(runbook(status=status))
    assert (record.status, record.finished) == (state, finished)


def test_exit_code_and_finish_are_shown_only_once_finished():
    running = record_of(runbook(status={**succeeded("Unknown", "Running"), "exitCode": 0, "finishedAt": "x"}))
    assert execute_response(running, SHANGHAI)["runbook"]["exit_code"] is None
    assert execute_response(running, SHANGHAI)["runbook"]["finished_at"] is None
    done = record_of(runbook(status={**succeeded("False", "ExecutionError"), "exitCode": 125}))
    assert done.execution_error
    assert record_of(runbook(status={**succeeded("False", "Failed"), "exitCode": True})).exit_code is None


def test_request_id_defaults_to_status_then_name():
    assert record_of(runbook(spec={"requestId": "a"}, status={"requestId": "b"})).request_id == "a"
    assert record_of(runbook(status={"requestId": "b"})).request_id == "b"
    assert record_of(runbook(name="n")).request_id == "n"


def test_iso_uses_the_zone_offset():
    moment = datetime.datetime(2025, 9, 22, 0, 5, 10, 123456, tzinfo=datetime.UTC)
    assert iso(moment, SHANGHAI) == "2025-09-22T08:05:10+08:00"
    assert iso(None, SHANGHAI) is None


def test_status_of_nothing():
    body = status_response([], SHANGHAI, 20)
    assert body["last_runbook"] is None and body["last_exit_codes"] == {}


def test_malformed_status_fields_do_not_break_the_view():
    record = record_of(
        runbook(status={"logs": ["not a dict", {"level": "INFO"}], "health": "bad", "state": 3})
    )
    assert record.logs == []  # a field that does not validate is left out whole; the rest is read
    assert record.health is None and record.state is None
    assert status_response([record], SHANGHAI, 5)["last_runbook"]["request_id"] == "rb"


def test_differences_name_the_changed_fields():
    wanted = {"command": "start", "mode": "live", "profile": "primary", "dryRun": False}
    differences = models.request_differences
    assert differences({"command": "start"}, wanted) == []  # the CRD's defaults are the same request
    assert differences({"command": "start", "profile": "backup"}, wanted) == ["profile"]
    assert differences({"command": "stop", "dryRun": True}, wanted) == ["command", "dryRun"]


def test_a_fingerprint_is_the_same_for_the_same_request_only():
    wanted = {"command": "start", "mode": "live", "profile": "primary", "dryRun": False, "requestedBy": "a"}
    fingerprint = models.request_fingerprint
    assert fingerprint({"command": "start"}) == fingerprint(wanted)  # defaults, and who asked, do not count
    assert fingerprint({"command": "start", "reason": "x"}) != fingerprint(wanted)
    assert fingerprint({"command": "stop"}) != fingerprint({"command": "start"})


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", 1), ("0.5", 0.5), ("1280", 1280), ("NaN", None), ("+Inf", None), ("-Inf", None), ("x", None)],
)
def test_sample_values(text, value):
    assert number(text) == value


def test_execute_grants_every_command():
    assert Principal("p", frozenset({"runbooks:execute"})).allows("runbooks:execute:failover")
    only = Principal("p", frozenset({"runbooks:execute:drill"}))
    assert only.allows("runbooks:execute:drill") and not only.allows("runbooks:execute:start")
    assert not only.allows("status:read")
    assert "runbooks:execute:health_check" in PERMISSIONS


ODD_TIMES = ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.999999+00:00"]


@pytest.mark.parametrize("odd", ODD_TIMES)
def test_a_time_no_zone_can_hold_never_fails_the_status(odd):
    """One odd Runbook (times near the years 1 and 9999, which overflow when moved to +08:00 or to UTC) is
    shown as written; the others as usual."""
    finished = {**succeeded("True", "Succeeded"), "exitCode": 0}
    odd_one = record_of(
        runbook(
            "odd", status={**finished, "finishedAt": odd, "startedAt": odd, "health": {"generated_at": odd}}
        )
    )
    fine = record_of(runbook("fine", status={**finished, "health": {"generated_at": "2025-09-22T00:00:00Z"}}))
    body = status_response([odd_one, fine], SHANGHAI, 20)
    shown = {r["request_id"]: r for r in body["runbook_history"]}
    written = datetime.datetime.fromisoformat(odd).isoformat(timespec="seconds")
    assert shown["odd"]["finished_at"] == written
    assert body["health_by_request"]["odd"]["generated_at"] == written
    assert body["health_by_request"]["fine"]["generated_at"] == "2025-09-22T08:00:00+08:00"


def ended(name: str, command: str, reason: str, code: int | None, at: str, **fields) -> dict:
    """A finished Runbook: the Succeeded condition's ``reason``, its exit code, finished at ``at`` (UTC)."""
    status = "True" if code == 0 else "False"
    exit_code = {} if code is None else {"exitCode": code}
    spec = {"command": command, **fields.pop("spec", {})}
    body = {**succeeded(status, reason), **exit_code, "finishedAt": f"2026-12-06T{at}Z", **fields}
    return runbook(name, spec=spec, status=body, created=f"2026-12-06T{at}Z")


BACKUP = {"environmentMode": "live", "activeProfile": "backup", "activeWindow": "night"}
FAILBACK = ended("fb-1", "failback", "Succeeded", 0, "18:59:00", state=BACKUP)


TIMED_OUT = ended("fo-2", "failover", "TimedOut", 124, "19:01:00")


@pytest.mark.parametrize(
    ("later", "reporter", "stale"),
    [
        ([], "fb-1", None),
        # a failover stopped at its timeout, cancelled while it ran, its runner dead: each may have
        # switched the feed and reported nothing
        ([TIMED_OUT], "fb-1", "fo-2"),
        ([ended("fo-2", "failover", "Cancelled", 130, "19:01:00")], "fb-1", "fo-2"),
        ([ended("fo-2", "failover", "ExecutionError", 125, "19:01:00")], "fb-1", "fo-2"),
        # the newest of two such runs
        ([TIMED_OUT, ended("rs-3", "restart", "Failed", 1, "19:02:00")], "fb-1", "rs-3"),
        # a health check since reported the state as it is; one that timed out too reported nothing
        ([TIMED_OUT, ended("hc-3", "health_check", "Succeeded", 0, "19:02:00", state=BACKUP)], "hc-3", None),
        ([TIMED_OUT, ended("hc-3", "health_check", "TimedOut", 124, "19:02:00")], "fb-1", "fo-2"),
        # a failed failover that reported where it left the feed: that is the state shown
        ([ended("fo-2", "failover", "Failed", 1, "19:01:00", state=BACKUP)], "fo-2", None),
        # runs that changed nothing: refused before they started (no exit code), a dry run, a health check,
        # a duplicate of a timed-out run (it shows that result, and ran nothing), one over the cap
        ([ended("fo-2", "failover", "OutsideChangeWindow", None, "19:01:00")], "fb-1", None),
        ([ended("fo-2", "failover", "TimedOut", 124, "19:01:00", spec={"dryRun": True})], "fb-1", None),
        ([ended("hc-2", "health_check", "TimedOut", 124, "19:01:00")], "fb-1", None),
        ([ended("fo-2", "failover", "Duplicate", 124, "19:01:00", duplicateOf="fo-1")], "fb-1", None),
        ([ended("fo-2", "failover", "QuotaExceeded", 125, "19:01:00")], "fb-1", None),
        # one that ended before the state shown was reported
        ([ended("fo-0", "failover", "TimedOut", 124, "18:58:00")], "fb-1", None),
    ],
    ids=[
        "reported", "timed-out", "cancelled", "runner-died", "newest", "checked-since", "check-timed-out-too",
        "failed-reported", "refused", "dry-run", "health-check", "duplicate", "over-cap", "before",
    ],
)  # fmt: skip
def test_the_status_names_the_run_that_reported_its_state_and_one_that_may_have_changed_it_since(
    later, reporter, stale
):
    """The environment's state is the one the newest run that reported one left. A failover stopped at its
    timeout may have switched the feed: the status says that its state may be stale, and which run."""
    records = [record_of(body) for body in [FAILBACK, *later]]
    body = status_response(records, SHANGHAI, 20)
    assert body["state_reported_by"]["request_id"] == reporter
    assert body["active_profile"] == "backup"
    assert (body["state_stale_by"] or {}).get("request_id") == stale, body["state_stale_by"]
    if stale:
        [run] = [record for record in records if record.request_id == stale]
        assert body["state_stale_by"] == {
            "request_id": stale,
            "command": run.command,
            "exit_code": run.exit_code,
            "finished_at": iso(run.finished_at, SHANGHAI),
        }


@pytest.mark.parametrize(
    ("run", "unreported"),
    [
        (TIMED_OUT, True),
        (ended("fo-2", "failover", "Cancelled", 130, "19:01:00"), True),
        (ended("rs-2", "restart", "ExecutionError", 125, "19:01:00"), True),
        (ended("fo-2", "failover", "Failed", 1, "19:01:00", state=BACKUP), False),
        (ended("fo-2", "failover", "Succeeded", 0, "19:01:00", state=BACKUP), False),
        (ended("fo-2", "failover", "OutsideChangeWindow", None, "19:01:00"), False),
        (ended("fo-2", "failover", "TimedOut", 124, "19:01:00", spec={"dryRun": True}), False),
        (ended("hc-2", "health_check", "TimedOut", 124, "19:01:00"), False),
        (ended("fo-2", "failover", "Duplicate", 124, "19:01:00", duplicateOf="fo-1"), False),
        (ended("fo-2", "failover", "QuotaExceeded", 125, "19:01:00"), False),
    ],
    ids=[
        "timed-out", "cancelled", "runner-died", "failed-reported", "success", "refused", "dry-run",
        "health-check", "duplicate", "over-cap",
    ],
)  # fmt: skip
def test_a_runs_view_says_whether_it_may_have_changed_the_platform_unreported(run, unreported):
    """What the status counts for state_stale_by, a run's view says of it: mdops and the console show it."""
    assert run_view(record_of(run), SHANGHAI)["state_unreported"] is unreported


def test_no_state_reported_names_no_run():
    body = status_response([record_of(TIMED_OUT)], SHANGHAI, 20)
    assert (body["active_profile"], body["state_reported_by"]) == (None, None)
    assert body["state_stale_by"]["request_id"] == "fo-2"  # whatever was there before it, it may have changed


FORBIDDEN = 'runbooks.ops.mdops.io "fo-1" is forbidden: '


@pytest.mark.parametrize(
    ("status", "message", "refused"),
    [
        (422, 'Runbook.ops.mdops.io "fo-1" is invalid: spec.command: Unsupported value', True),
        (400, "the body of the request was in an unknown format", True),
        (403, FORBIDDEN + "ValidatingAdmissionPolicy 'p' with binding 'b' denied request: not today", True),
        (403, 'admission webhook "deny.example.com" denied the request: not today', True),
        (403, FORBIDDEN + "exceeded quota: q, requested: count/runbooks.ops.mdops.io=1, used: …", True),
        # the API's own rights, a namespace going, a quota not counted yet: not the request's to hear
        (
            403,
            'runbooks.ops.mdops.io is forbidden: User "system:serviceaccount:m:mdops" cannot create',
            False,
        ),
        (
            403,
            FORBIDDEN + "unable to create new content in namespace m because it is being terminated",
            False,
        ),
        (403, FORBIDDEN + "status unknown for quota: q, resource: count/runbooks.ops.mdops.io", False),
        (500, "Internal error occurred: denied request", False),
    ],
)
def test_what_the_api_server_refused_for_the_requests_sake(status, message, refused):
    assert refused_by_cluster(status, message) is refused
