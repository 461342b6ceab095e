"""POST /api/ops/runbooks/execute and GET /api/ops/runbooks/{request_id}, on the real control plane.

Runs are real: the controller runs the test's scripts in the API's namespace (see conftest).
"""

from __future__ import annotations

import concurrent.futures
import gzip
import hashlib
import json
import threading
import time
import uuid

import pytest

from api.cache import RunbookCache
from api.submission import object_name
from devcluster.processes import wait_until
from runbooks import keys, models
from tests.api.conftest import HEALTH_CHECKER_TOKEN, RECORD, auth, http, reporting, wait_cached
from tests.api.proxy import Proxy
from tests.cluster.webhooks import held_writes
from tests.runbook_client import AWKWARD_TEXTS, HOLD, recorded_environ

EXECUTE = "/api/ops/runbooks/execute"
HEALTH = {
    "coverage_ratio": 0.999,
    "expected_total": 1280,
    "active_total": 1278,
    "matched_total": 1276,
    "ignored_total": 2,
    "consumer_backlog_messages": 0,
    "failover_latency_ms": 1800,
    "generated_at": "2025-09-22T00:00:00Z",
}
PASSED = {"gate": {"passed": True, "enforced": False, "failures": []}}


def test_a_finished_run_is_200_with_the_spec_shape(api, runbooks, controller, scripts):
    scripts.write("failover", RECORD + "echo 'INFO: Failover completed'\n" + reporting({"health": HEALTH}))
    body = {
        "command": "failover",
        "mode": "live",
        "window": "day",
        "profile": "live",
        "config": "backup",
        "request_id": "fo-1",
        "enforce": False,
        "dry_run": False,
        "reason": "manual failover",
    }
    response = api.post(EXECUTE, json=body, headers=auth())
    assert response.status_code == 200, response.text
    got = response.json()
    assert got["runbook"]["request_id"] == "fo-1"
    assert got["runbook"]["command"] == "failover"
    assert got["runbook"]["exit_code"] == 0
    assert got["runbook"]["status"] == "success"
    assert got["runbook"]["finished_at"].endswith("+08:00")
    assert got["runbook"]["logs"] == [{"level": "INFO", "message": "Failover completed"}]
    assert got["health"] == HEALTH | PASSED | {"generated_at": "2025-09-22T08:00:00+08:00"}
    assert response.headers["location"] == "/api/ops/runbooks/fo-1"
    assert scripts.runs() == ["fo-1 dry=0"]

    spec = runbooks.get("fo-1")["spec"]
    assert spec == {
        "command": "failover",
        "mode": "live",
        "window": "day",
        "profile": "live",
        "config": "backup",
        "requestId": "fo-1",
        "enforce": False,
        "dryRun": False,
        "reason": "manual failover",
        "timeoutSeconds": 300,
        "requestedBy": "admin",
    }


def test_a_script_that_failed_is_200_status_failed(api, controller, scripts):
    scripts.write("health_check", "echo 'ERROR: coverage 0.5 < 0.99'\nexit 1\n")
    response = api.post(EXECUTE, json={"command": "health_check", "request_id": "hc-failed"}, headers=auth())
    assert response.status_code == 200, response.text
    assert response.json()["runbook"]["status"] == "failed"
    assert response.json()["runbook"]["exit_code"] == 1
    assert response.json()["runbook"]["logs"] == [
        {"level": "ERROR", "message": "coverage 0.5 < 0.99"},
        {"level": "ERROR", "message": "script exited with code 1"},
    ]
    assert response.json()["health"] is None


def test_a_script_execution_error_is_500_with_detail(api, controller, scripts):
    scripts.write("start", RECORD).chmod(0o644)  # the runner cannot execute it: exit code 125
    response = api.post(EXECUTE, json={"command": "start", "request_id": "start-125"}, headers=auth())
    assert response.status_code == 500, response.text
    detail = response.json()["detail"]
    assert "script execution error" in detail and "not executable" in detail
    assert scripts.runs() == []
    # Reading it back is a successful read of a failed run.
    got = api.get("/api/ops/runbooks/start-125", headers=auth())
    assert got.status_code == 200
    runbook = got.json()["runbook"]
    assert {k: runbook[k] for k in ("request_id", "command", "exit_code", "status")} == {
        "request_id": "start-125",
        "command": "start",
        "exit_code": 125,
        "status": "failed",
    }
    assert runbook["finished_at"].endswith("+08:00")
    assert [line["level"] for line in runbook["logs"]] == ["ERROR"]
    assert "not executable" in runbook["logs"][0]["message"]


def test_past_the_wait_it_is_202_with_the_current_state_then_the_run_can_be_read(
    start_api, runbooks, start_controller, scripts
):
    api = start_api(api_execute_wait_seconds=0.5)
    scripts.write("restart", RECORD + "echo 'INFO: restarting'\n" + HOLD)
    response = api.post(EXECUTE, json={"command": "restart", "request_id": "slow-1"}, headers=auth())
    assert response.status_code == 202, response.text  # no controller runs yet: pending
    assert response.json() == {
        "runbook": {
            "request_id": "slow-1",
            "command": "restart",
            "exit_code": None,
            "status": "pending",
            "finished_at": None,
            "logs": [],
        },
        "health": None,
    }
    start_controller(**scripts.controller_env())
    runbooks.wait_for("slow-1", "Running", "True")
    again = api.post(EXECUTE, json={"command": "restart", "request_id": "slow-1"}, headers=auth())
    assert again.status_code == 202
    assert again.json()["runbook"]["status"] == "running"
    assert again.json()["runbook"]["exit_code"] is None

    scripts.release()

    def finished() -> dict | None:
        got = api.get("/api/ops/runbooks/slow-1", headers=auth()).json()
        return got if got["runbook"]["status"] == "success" else None

    got = wait_until(finished, 15, "the run to show as finished")
    assert got["runbook"]["exit_code"] == 0
    assert {"level": "INFO", "message": "restarting"} in got["runbook"]["logs"]
    assert len(runbooks.list()) == 1
    assert scripts.runs() == ["slow-1 dry=0"]


def test_a_runbook_deleted_while_its_execute_waits_is_a_409_that_says_so_at_once(
    start_api, runbooks, controller, scripts
):
    """Deleting a Runbook cancels its run: the caller waiting for it is told so when it is gone, not handed
    a state from before (and a Location that is a 404) once its wait is up."""
    wait = 120
    api = start_api(api_execute_wait_seconds=wait)
    scripts.write("failover", RECORD + HOLD)
    body = {"command": "failover", "request_id": "deleted-1"}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(api.post, EXECUTE, json=body, headers=auth())
        # Running is said as the runner starts, maybe before the script's first line: deleted before that
        # line, the run never records itself.
        wait_until(lambda: scripts.runs() == ["deleted-1 dry=0"], 30, "the script to have begun")
        deleted_at = time.monotonic()
        runbooks.delete("deleted-1")
        response = answer.result(timeout=wait)
    assert time.monotonic() - deleted_at < wait / 2, "answered at the end of its wait, not when it was gone"
    assert response.status_code == 409, response.text
    assert response.json()["detail"] == (
        "request_id 'deleted-1': its Runbook 'deleted-1' was deleted before the run finished (deleting a "
        "Runbook cancels its run)"
    )
    assert runbooks.get("deleted-1") is None
    assert scripts.runs() == ["deleted-1 dry=0"]


def test_202_reports_running_and_queued(start_api, runbooks, controller, scripts):
    """A drill held by its script runs; a second one on the same target waits for it (queued)."""
    api = start_api(api_execute_wait_seconds=0.3)
    scripts.write("drill", RECORD + HOLD)
    runbooks.create("holding", command="drill")
    runbooks.wait_for("holding", "Running", "True")
    runbooks.create("waiting", command="drill")
    runbooks.wait_for("waiting", "Queued", "True")
    for request_id, state in (("holding", "running"), ("waiting", "queued")):
        response = api.post(EXECUTE, json={"command": "drill", "request_id": request_id}, headers=auth())
        assert response.status_code == 202, request_id
        assert response.json()["runbook"]["status"] == state
    scripts.release()
    runbooks.wait_finished("waiting")
    assert scripts.runs() == ["holding dry=0", "waiting dry=0"]


def test_the_same_request_id_is_the_same_run(api, runbooks, controller, scripts):
    scripts.write("stop", RECORD)
    first = api.post(EXECUTE, json={"command": "stop", "request_id": "once"}, headers=auth())
    second = api.post(EXECUTE, json={"command": "stop", "request_id": "once"}, headers=auth())
    assert first.status_code == second.status_code == 200, first.text
    assert first.json() == second.json()
    assert first.json()["runbook"]["status"] == "success"
    assert [rb["metadata"]["name"] for rb in runbooks.list()] == ["once"]
    assert scripts.runs() == ["once dry=0"]  # executed once


def test_the_same_request_id_with_other_parameters_is_409(api, runbooks, controller, scripts):
    scripts.write("failover", RECORD)
    first = api.post(EXECUTE, json={"command": "failover", "request_id": "x-1"}, headers=auth())
    assert first.status_code == 200, first.text
    for change in ({"command": "failback"}, {"profile": "backup"}, {"dry_run": True}, {"window": "night"}):
        response = api.post(
            EXECUTE, json={"command": "failover", "request_id": "x-1", **change}, headers=auth()
        )
        assert response.status_code == 409, change
        assert "other parameters" in response.json()["detail"]
        assert next(iter(change)).replace("dry_run", "dryRun") in response.json()["detail"]
    assert len(runbooks.list()) == 1
    assert scripts.runs() == ["x-1 dry=0"]


def test_a_request_refused_by_the_namespaces_cap_runs_when_asked_again_once_below_it(
    start_api, runbooks, start_controller, scripts
):
    """The cap's refusal never ran and leaves the request id unused: the same request asked again is
    asked anew (the API replaces its refused Runbook), and runs once the namespace is below the cap."""
    start_controller(**scripts.controller_env(), MDOPS_MAX_UNFINISHED_PER_NAMESPACE="1")
    api = start_api()
    scripts.write("drill", RECORD + HOLD)
    scripts.write("health_check", RECORD)
    runbooks.create("holding", command="drill")
    runbooks.wait_for("holding", "Running", "True")
    request = {"command": "health_check", "request_id": "over-cap"}
    refused = api.post(EXECUTE, json=request, headers=auth())
    assert refused.status_code == 429, refused.text
    assert "1 Runbooks in this namespace are unfinished, at the cap of 1" in refused.json()["detail"]
    refused_uid = runbooks.get("over-cap")["metadata"]["uid"]
    again = api.post(EXECUTE, json=request, headers=auth())  # still at the cap: refused afresh
    assert again.status_code == 429, again.text
    assert runbooks.get("over-cap")["metadata"]["uid"] != refused_uid
    scripts.release()
    runbooks.wait_finished("holding")
    ran = api.post(EXECUTE, json=request, headers=auth())
    assert ran.status_code == 200, ran.text
    assert (ran.json()["runbook"]["status"], ran.json()["runbook"]["exit_code"]) == ("success", 0)
    assert scripts.runs() == ["holding dry=0", "over-cap dry=0"]
    assert sorted(rb["metadata"]["name"] for rb in runbooks.list()) == ["holding", "over-cap"]


def test_the_first_request_again_after_a_refusal_of_other_parameters_gets_the_first_result(
    api, runbooks, controller, scripts
):
    """Its first Runbook deleted, a request id asked with other parameters is refused, not run (exit 2),
    by a Runbook of the same name; the first request asked again is the first run's, not a conflict with
    that refusal."""
    scripts.write("health_check", RECORD)
    first = {"command": "health_check", "request_id": "asked-twice", "reason": "first"}
    assert api.post(EXECUTE, json=first, headers=auth()).status_code == 200
    runbooks.delete("asked-twice")
    wait_until(lambda: runbooks.get("asked-twice") is None, 30, "the first Runbook to go")
    other = api.post(EXECUTE, json={**first, "reason": "other"}, headers=auth())
    assert other.status_code == 200, other.text
    assert (other.json()["runbook"]["status"], other.json()["runbook"]["exit_code"]) == ("failed", 2)
    again = api.post(EXECUTE, json=first, headers=auth())
    assert again.status_code == 200, again.text
    assert (again.json()["runbook"]["status"], again.json()["runbook"]["exit_code"]) == ("success", 0)
    same_other = api.post(EXECUTE, json={**first, "reason": "other"}, headers=auth())
    assert same_other.status_code == 409, same_other.text  # the id's run is the first request's
    assert scripts.runs() == ["asked-twice dry=0"]  # executed once, whatever was asked


def behind_deletions(api) -> RunbookCache:
    """The API's cache, from now on held back from each deletion until the API has asked the API server
    whether the deleted Runbook is gone (as a cache a moment behind a deletion is)."""
    cache, submitter = api.app.state.cache, api.app.state.submitter
    asked = threading.Event()
    apply, gone = cache._apply, submitter._gone

    def held_apply(event):
        if event.get("type") == "DELETED":
            asked.wait(30)  # the deletion reaches the cache only once the API server has been asked
        apply(event)

    def asking_gone(record):
        try:
            return gone(record)
        finally:
            asked.set()

    cache._apply, submitter._gone = held_apply, asking_gone
    return cache


def test_a_request_id_freed_by_a_deletion_the_cache_has_not_seen_yet_is_free(
    api, runbooks, controller, scripts
):
    """The cache may be moments behind a deletion: a request that its stale record would refuse as a
    conflict is asked of the API server first, and once the cache has seen the deletion it is a new request.
    Here the cache is held back until the API has asked the API server."""
    scripts.write("health_check", RECORD)
    first = {"command": "health_check", "request_id": "freed", "reason": "first"}
    assert api.post(EXECUTE, json=first, headers=auth()).status_code == 200
    cache = behind_deletions(api)
    runbooks.delete("freed")
    wait_until(lambda: runbooks.get("freed") is None, 30, "the first Runbook to go")
    assert cache.find("freed") is not None  # the cache is behind the deletion
    other = api.post(EXECUTE, json={**first, "reason": "other"}, headers=auth())
    assert other.status_code == 200, other.text
    assert (other.json()["runbook"]["status"], other.json()["runbook"]["exit_code"]) == ("failed", 2)
    assert scripts.runs() == ["freed dry=0"]  # the ledger still refuses other parameters: run once


def test_a_request_asked_again_after_a_deletion_the_cache_has_not_seen_yet_makes_a_new_run(
    start_api, runbooks
):
    """The same request asked again just after its pending Runbook was deleted, the cache still holding it:
    the API asks the API server, and makes a new Runbook. Before, it answered 202 with the deleted run, and
    no run was made (a full `make test` met it once, under load). Here the cache is held back until the API
    has asked the API server."""
    api = start_api(api_execute_wait_seconds=0)  # no controller: the run stays pending, a 202
    request = {"command": "failover", "request_id": "pending-freed"}
    assert api.post(EXECUTE, json=request, headers=auth()).status_code == 202
    wait_cached(api, "pending-freed")
    shown = runbooks.get("pending-freed")["metadata"]["uid"]
    cache = behind_deletions(api)
    runbooks.delete("pending-freed")
    wait_until(lambda: runbooks.get("pending-freed") is None, 30, "the first Runbook to go")
    assert cache.find("pending-freed") is not None  # the cache is behind the deletion
    again = api.post(EXECUTE, json=request, headers=auth())
    assert again.status_code == 202, again.text
    made = runbooks.get("pending-freed")
    assert made is not None and made["metadata"]["uid"] != shown


def test_a_request_id_taken_by_a_kubectl_runbook_is_that_run(start_api, runbooks):
    """A Runbook applied by an operator with the same requestId is the same request (no second run)."""
    api = start_api(api_execute_wait_seconds=0.2)
    runbooks.create("applied-by-hand", command="health_check", request_id="shared-id")
    wait_cached(api, "shared-id")  # its cache follows the API server within moments
    response = api.post(EXECUTE, json={"command": "health_check", "request_id": "shared-id"}, headers=auth())
    assert response.status_code == 202
    assert [rb["metadata"]["name"] for rb in runbooks.list()] == ["applied-by-hand"]


def test_fifty_concurrent_identical_requests_make_one_runbook(start_api, runbooks, controller, scripts):
    api = start_api()
    scripts.write("start", RECORD + "echo 'INFO: started'\n")
    request_id = f"burst-{uuid.uuid4().hex[:8]}"
    body = {"command": "start", "request_id": request_id, "reason": "burst"}
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(lambda _: api.post(EXECUTE, json=body, headers=auth()), range(50)))
    assert {r.status_code for r in responses} == {200}
    assert {r.text for r in responses} == {responses[0].text}
    assert responses[0].json()["runbook"]["status"] == "success"
    assert [rb["metadata"]["name"] for rb in runbooks.list()] == [request_id]
    assert scripts.runs() == [f"{request_id} dry=0"]  # executed once


def test_defaults_come_from_the_settings(start_api, runbooks):
    api = start_api(
        api_execute_wait_seconds=0.2,
        api_default_mode="uat",
        api_default_profile="backup",
        api_default_config="night-set",
        api_default_enforce=True,
        api_default_timeout_seconds=42,
    )
    response = api.post(EXECUTE, json={"command": "health_check"}, headers=auth(HEALTH_CHECKER_TOKEN))
    assert response.status_code == 202
    request_id = response.json()["runbook"]["request_id"]
    assert uuid.UUID(request_id).version == 4
    (runbook,) = runbooks.list()
    assert runbook["metadata"]["name"] == request_id
    assert runbook["spec"] == {
        "command": "health_check",
        "mode": "uat",
        "window": "auto",
        "profile": "backup",
        "config": "night-set",
        "requestId": request_id,
        "enforce": True,
        "dryRun": False,
        "reason": "",
        "timeoutSeconds": 42,
        "requestedBy": "health-checker",
    }


@pytest.mark.parametrize(
    "request_id",
    ["Upper-Case-Id", "with.dots", "x" * 64, "under_score"],
)
def test_a_request_id_that_is_no_dns_label_gets_a_hashed_name(start_api, runbooks, request_id):
    api = start_api(api_execute_wait_seconds=0.1)
    response = api.post(EXECUTE, json={"command": "start", "request_id": request_id}, headers=auth())
    assert response.status_code == 202
    (runbook,) = runbooks.list()
    expected = "req-" + hashlib.sha256(request_id.encode()).hexdigest()[:20]
    assert runbook["metadata"]["name"] == expected == object_name(request_id)
    assert runbook["spec"]["requestId"] == request_id
    assert (
        api.get(f"/api/ops/runbooks/{request_id}", headers=auth()).json()["runbook"]["request_id"]
        == request_id
    )


def test_a_dns_label_request_id_is_the_name():
    assert object_name("6f1c2d9e-2b7a-4c8e-9d51-3f0e8a7b1c22") == "6f1c2d9e-2b7a-4c8e-9d51-3f0e8a7b1c22"
    assert object_name("a" * 63) == "a" * 63


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"command": "reboot"}, "command"),
        ({}, "command"),
        ({"command": "start", "colour": "red"}, "colour"),
        ({"command": "start", "enforce": "yes"}, "enforce"),
        ({"command": "start", "dry_run": 1}, "dry_run"),
        ({"command": "start", "window": "lunch"}, "window"),
        ({"command": "start", "mode": 7}, "mode"),
        ({"command": "start", "profile": "../etc"}, "profile"),
        ({"command": "start", "mode": "Live"}, "mode"),
        ({"command": "start", "profile": "Primary"}, "profile"),
        ({"command": "start", "request_id": "a/b"}, "request_id"),
        ({"command": "start", "request_id": ""}, "request_id"),
        ({"command": "health_check", "request_id": "schedule.nightly-drill.20260105013000"}, "request_id"),
        ({"command": "start", "timeout_seconds": 0}, "timeout_seconds"),
        ({"command": "start", "timeout_seconds": "60"}, "timeout_seconds"),
        ({"command": "start", "reason": "r" * 1025}, "reason"),
    ],
)
def test_invalid_bodies_are_422_naming_the_field(api, runbooks, body, field):
    response = api.post(EXECUTE, json=body, headers=auth())
    assert response.status_code == 422, response.text
    assert field in [str(part) for error in response.json()["detail"] for part in error["loc"]]
    assert runbooks.list() == []


@pytest.mark.parametrize(
    ("field", "text", "refused"),
    [
        ("reason", "a\u0001b", "U+0001 at position 1"),
        ("reason", "line\r\n", "U+000D at position 4"),
        ("reason", "\u001b[2J", "U+001B at position 0"),
        ("reason", "del\u007f", "U+007F at position 3"),
        ("reason", "c1\u0085", "U+0085 at position 2"),
        ("config", "a\tb", "U+0009 at position 1"),
        ("config", "a\nb", "U+000A at position 1"),
        # Reordering what an approver reads: "approve\u202e...'" would read backwards from there.
        ("reason", "approve \u202eevil", "U+202E at position 8"),
        ("config", "\u2066x\u2069", "U+2066 at position 0"),
    ],
)
def test_control_characters_in_free_text_are_422_saying_so(api, runbooks, field, text, refused):
    response = api.post(EXECUTE, json={"command": "start", field: text}, headers=auth())
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    allowed = " (tab and newline are allowed)" if field == "reason" else ""
    assert error == {
        "loc": ["body", field],
        "msg": f"must not contain control characters or bidirectional controls{allowed}: {refused}",
        "type": "control_character",
    }
    assert runbooks.list() == []


def test_free_text_reaches_the_script_exactly_as_written(api, controller, scripts):
    """A reason or config that command-line arguments would have taken for options (exit 2, or 125 and a
    500 before) is data: the script's own record of its environment shows it as sent."""
    scripts.write("drill", 'cat /proc/$$/environ > "$RUNS.$MDOPS_REQUEST_ID"\n')
    for index, text in enumerate(AWKWARD_TEXTS):
        reason = f"{text}\ttab\nnewline"
        body = {"command": "drill", "request_id": f"text-{index}", "reason": reason, "config": text}
        response = api.post(EXECUTE, json=body, headers=auth())
        assert (response.status_code, response.json()["runbook"]["status"]) == (200, "success"), response.text
        env = recorded_environ(scripts.runs_file.with_name(f"runs.log.text-{index}"))
        assert (env["MDOPS_REASON"], env["MDOPS_CONFIG"]) == (reason, text)


def test_a_body_that_is_not_json_is_422(api, runbooks):
    response = api.post(
        EXECUTE, content=b"command=start", headers={**auth(), "content-type": "application/json"}
    )
    assert response.status_code == 422 and response.json()["detail"]
    assert runbooks.list() == []


@pytest.mark.parametrize(
    ("headers", "said"),
    [
        ({"content-type": "text/plain"}, "send it with Content-Type: application/json, not text/plain"),
        ({}, "send it with Content-Type: application/json, not none"),  # as curl -d without -H sends it
        ({"content-type": "application/x-www-form-urlencoded"}, "not application/x-www-form-urlencoded"),
        (
            {"content-type": "application/json", "content-encoding": "gzip"},
            "Content-Encoding gzip is not read",
        ),
    ],
)
def test_a_body_not_sent_as_json_is_415_saying_how_to_send_it(api, runbooks, headers, said):
    body = json.dumps({"command": "health_check", "request_id": "sent-badly"}).encode()
    if headers.get("content-encoding") == "gzip":
        body = gzip.compress(body)
    response = api.post(EXECUTE, content=body, headers={**auth(), **headers})
    assert response.status_code == 415, response.text
    assert said in response.json()["detail"]
    assert runbooks.list() == []


@pytest.mark.parametrize("media", ["application/json; charset=utf-8", "application/vnd.mdops+json"])
def test_a_json_body_of_any_json_type_is_read(start_api, runbooks, media):
    api = start_api(api_execute_wait_seconds=0.1)
    body = json.dumps({"command": "health_check", "request_id": "json-type"}).encode()
    response = api.post(EXECUTE, content=body, headers={**auth(), "content-type": media})
    assert response.status_code == 202, response.text
    assert [rb["spec"]["requestId"] for rb in runbooks.list()] == ["json-type"]


def test_an_unknown_request_id_is_404(api):
    response = api.get("/api/ops/runbooks/never-seen", headers=auth())
    assert response.status_code == 404
    assert "never-seen" in response.json()["detail"]


def test_a_dry_run_is_created_as_one(start_api, runbooks):
    api = start_api(api_execute_wait_seconds=0.1)
    response = api.post(
        EXECUTE, json={"command": "drill", "dry_run": True, "request_id": "dry"}, headers=auth()
    )
    assert response.status_code == 202
    assert runbooks.get("dry")["spec"]["dryRun"] is True


def test_a_name_that_another_requests_runbook_has_does_not_keep_a_request_id_out(start_api, runbooks):
    """The name a request id gives its Runbook may be another request's: an operator's Runbook so named (for
    another request id), or the hashed name of a request id that is no DNS label, sent as a request id. The
    request runs all the same, under a name the API server derives from it, and is found by its id."""
    api = start_api(api_execute_wait_seconds=0.1)
    runbooks.create("taken", command="start", request_id="someone-else")
    hashed = object_name("Upper.Case")
    assert api.post(EXECUTE, json={"command": "start", "request_id": "Upper.Case"}, headers=auth()).is_success
    for request_id in ("taken", hashed):
        body = {"command": "start", "request_id": request_id}
        for _ in range(2):  # and again: the same run
            response = api.post(EXECUTE, json=body, headers=auth())
            assert response.status_code == 202, response.text
            assert response.json()["runbook"]["request_id"] == request_id
        found = api.get(f"/api/ops/runbooks/{request_id}", headers=auth())
        assert found.status_code == 200 and found.json()["runbook"]["request_id"] == request_id
    names = {rb["spec"]["requestId"]: rb["metadata"]["name"] for rb in runbooks.list()}
    assert len(runbooks.list()) == 4 == len(names)
    assert (names["someone-else"], names["Upper.Case"]) == ("taken", hashed)  # left as they are
    assert names["taken"].startswith("taken-") and names[hashed].startswith(f"{hashed}-")


def test_an_execute_moments_after_a_kubectl_create_answers_with_the_original_run(
    start_server, cluster, runbooks, controller, scripts, tmp_path
):
    """The API's watch is stalled (a slow network), so it has not seen the Runbook an operator just created
    with kubectl: it creates its own with the same requestId. The controller's ledger makes that one a
    duplicate, and the answer is the original run's (its logs), which ran once."""
    scripts.write("failover", RECORD + "echo 'INFO: the original run'\n" + HOLD)
    with Proxy(cluster.server) as proxy:
        server = start_server(
            MDOPS_KUBECONFIG=str(proxy.kubeconfig(cluster.kubeconfig, tmp_path / "proxied")),
            MDOPS_API_EXECUTE_WAIT_SECONDS="30",
        )
        proxy.stall()  # the API's watch (open now) stops; its requests (new connections) still go through
        runbooks.create("by-kubectl", command="failover", request_id="shared")
        runbooks.wait_for("by-kubectl", "Running", "True")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            answer = pool.submit(
                http, "POST", server.url + EXECUTE, {"command": "failover", "request_id": "shared"}, auth()
            )
            wait_until(lambda: len(runbooks.list()) == 2, 15, "the API to create its own Runbook")
            proxy.resume()
            scripts.release()
            code, _, text = answer.result(60)
    assert code == 200, text
    runbook = json.loads(text)["runbook"]
    assert runbook["status"] == "success" and runbook["request_id"] == "shared"
    assert {"level": "INFO", "message": "the original run"} in runbook["logs"]
    assert scripts.runs() == ["shared dry=0"]
    assert runbooks.wait_finished("shared")["status"]["duplicateOf"].endswith("/by-kubectl")


def test_a_kubernetes_429_is_a_503_that_says_when_to_retry(api, runbooks, api_client, namespace, tmp_path):
    """An API server that sheds load answers 429 (its priority and fairness, or an admission webhook that
    says so): the client is told, by a 503 naming Kubernetes, when to ask again."""
    rule = {
        "apiGroups": [keys.GROUP],
        "apiVersions": ["*"],
        "operations": ["CREATE"],
        "resources": ["runbooks"],
    }
    with held_writes(api_client, tmp_path, f"{namespace}-shed", namespace, rule, refusal=429) as shed:
        shed.released.set()
        response = api.post("/api/ops/runbooks/execute", json={"command": "start"}, headers=auth())
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"].isdigit(), response.headers
    assert response.json()["detail"].startswith("Kubernetes API error: 429"), response.text


@pytest.mark.parametrize("reason", ["Forbidden", "Invalid"])
def test_a_runbook_the_clusters_own_policy_refuses_is_a_422_in_the_policys_words(
    api, runbooks, cluster, namespace, reason
):
    """A ValidatingAdmissionPolicy of the cluster's own (no failovers in this namespace) refuses the Runbook
    the API makes, as Forbidden (403) or as Invalid (422): the request's fault, not the API's. Both are a
    422 that says why; the 403 was a 503 'Kubernetes API error: 403 Forbidden', which said neither why nor
    that asking again changes nothing. No Runbook is made."""
    name = f"no-failovers-{namespace}"
    rule = {
        "apiGroups": [keys.GROUP],
        "apiVersions": ["*"],
        "operations": ["CREATE"],
        "resources": ["runbooks"],
    }
    said = "no failovers in this namespace today"
    validation = {"expression": "object.spec.command != 'failover'", "message": said, "reason": reason}
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [rule]},
            "validations": [validation],
        },
    }
    here = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"], "matchResources": here},
    }
    cluster.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [policy, binding]})
    )
    try:
        probe = json.dumps(models.manifest("probe", {"command": "failover"}))
        create = ("create", "-n", namespace, "--dry-run=server", "-f", "-")
        wait_until(
            lambda: said in cluster.kubectl(*create, input=probe, check=False).stderr, 30, "the policy"
        )
        answer = api.post(EXECUTE, json={"command": "failover", "request_id": "fo-1"}, headers=auth())
        assert answer.status_code == 422, answer.text
        [issue] = answer.json()["detail"]
        assert issue["type"] == "kubernetes_refused" and said in issue["msg"], issue
        assert issue["msg"].startswith("the Kubernetes API server refused it: "), issue
        assert runbooks.list() == []
    finally:
        cluster.kubectl(
            "delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name, check=False
        )
