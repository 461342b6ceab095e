"""The pure parts: Runbook objects to REST views, request comparison, sample values, permissions."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

import pytest

from api.auth import Principal
from api.prometheus import number
from api.records import record_of
from api.render import execute_response, iso, status_response
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
