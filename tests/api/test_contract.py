"""Each response's shape pinned to the examples of the REST spec (docs/ops-console-api.md).

The examples are copied here as literals (the spec's own are not JSON: they elide with ``...``); where the
spec elides, only the keys it shows are required. Keys, JSON types and timestamp format are
compared; values only where the spec fixes them (metric names, units, windows).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from devcluster.processes import free_port, wait_until
from tests.api.conftest import RECORD, auth, reporting

STATUS_EXAMPLE = {
    "environment_mode": "live",
    "active_profile": "primary",
    "active_window": "day",
    "last_runbook": {"command": "start", "exit_code": 0},
    "runbook_history": [],
    "health_by_request": {"req-123": {"coverage_ratio": 0.999}},
    "last_health": {"coverage_ratio": 0.999, "generated_at": "2025-09-22T08:00:00+08:00"},
    "last_exit_codes": {"start": 0, "health_check": 0},
    "last_updated_at": "2025-09-22T08:05:10+08:00",
}
SUMMARY_EXAMPLE = {
    "coverage_ratio": {
        "metric": "md_subscription_coverage_ratio",
        "value": 0.999,
        "unit": None,
        "stale": False,
        "context": {"expected_total": 1280, "active_total": 1278, "matched_total": 1276, "ignored_total": 2},
    },
    "throughput_mps": {
        "metric": "md_throughput_mps",
        "value": 5400,
        "unit": "msg/s",
        "stale": False,
        "context": {"window": "max_over_time[1m]"},
    },
    "failover_latency_ms": {"metric": "md_failover_latency_ms", "value": 1800, "unit": "ms", "stale": False},
    "runbook_exit_code": {"metric": "md_runbook_exit_code", "value": 0, "stale": False},
    "consumer_backlog_messages": {
        "metric": "consumer_backlog_messages",
        "value": None,
        "unit": "messages",
        "stale": True,
        "context": {"note": "no exporter sample"},
    },
}
TIMESERIES_EXAMPLE = {
    "metric": "md_throughput_mps",
    "unit": "msg/s",
    "points": [
        {"timestamp": "2025-09-22T07:55:00+08:00", "value": 4800},
        {"timestamp": "2025-09-22T07:56:00+08:00", "value": 5100},
    ],
}
EXECUTE_REQUEST_EXAMPLE = {
    "command": "failover",
    "mode": "live",
    "window": "day",
    "profile": "live",
    "config": "backup",
    "request_id": "uuid",
    "enforce": False,
    "dry_run": False,
    "reason": "manual failover",
}
EXECUTE_RESPONSE_EXAMPLE = {
    "runbook": {
        "request_id": "uuid",
        "command": "failover",
        "exit_code": 0,
        "status": "success",
        "finished_at": "2025-09-22T08:02:00+08:00",
        "logs": [{"level": "INFO", "message": "Failover completed"}],
    },
    "health": None,
}

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?\+08:00$")


def same_shape(example: Any, actual: Any, path: str = "$", data_keys: frozenset[str] = frozenset()) -> None:
    """``actual`` has every key of ``example`` with a value of the same JSON type, recursively.
    ``data_keys``: paths of objects whose keys are data (request ids, commands), not names."""
    if example is None:
        return  # null in the example: any type (null is what the example happened to show)
    if isinstance(example, bool):
        assert isinstance(actual, bool), f"{path}: {actual!r} is not a boolean"
    elif isinstance(example, int | float):
        assert isinstance(actual, int | float) and not isinstance(actual, bool), (
            f"{path}: {actual!r} not a number"
        )
    elif isinstance(example, str):
        assert isinstance(actual, str), f"{path}: {actual!r} is not a string"
        if TIMESTAMP.match(example):
            assert TIMESTAMP.match(actual), f"{path}: {actual!r} is not ISO 8601 with +08:00"
    elif isinstance(example, list):
        assert isinstance(actual, list), f"{path}: {actual!r} is not an array"
        if example:
            assert actual, f"{path}: empty"
            for i, item in enumerate(actual):
                same_shape(example[0], item, f"{path}[{i}]", data_keys)
    elif isinstance(example, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r} is not an object"
        if path in data_keys:
            sample = next(iter(example.values()))
            assert actual, f"{path}: empty"
            for key, value in actual.items():
                same_shape(sample, value, f"{path}.{key}", data_keys)
            return
        missing = set(example) - set(actual)
        assert not missing, f"{path}: missing {sorted(missing)}"
        for key, value in example.items():
            same_shape(value, actual[key], f"{path}.{key}", data_keys)


def test_status_has_the_spec_shape(api, runbooks, controller, scripts):
    health = {"coverage_ratio": 0.999, "generated_at": "2025-09-22T00:00:00Z"}
    state = {"environment_mode": "live", "active_profile": "primary", "active_window": "day"}
    for command in ("start", "health_check"):
        scripts.write(command, RECORD + reporting({"health": health, "state": state}))
    runbooks.create("req-123", command="start")
    runbooks.wait_finished("req-123")
    runbooks.create("hc", command="health_check")

    def full():
        body = api.get("/api/ops/status", headers=auth()).json()
        return body if len(body["last_exit_codes"]) == 2 else None

    status = wait_until(full, 15, "both runs in the status")
    same_shape(STATUS_EXAMPLE, status, data_keys=frozenset({"$.health_by_request", "$.last_exit_codes"}))
    same_shape(STATUS_EXAMPLE["last_runbook"], status["runbook_history"][0], "$.runbook_history[0]")
    # Keys added to the spec's: the audit, the venue's session, and the run whose reported state the
    # environment's fields show (the health check, which ended last), and none that changed it since.
    assert set(status) == set(STATUS_EXAMPLE) | {"audit", "session", "state_reported_by", "state_stale_by"}
    assert (status["state_reported_by"]["request_id"], status["state_stale_by"]) == ("hc", None)
    assert set(status["audit"][0]) == {"request_id", "who", "what", "why", "when", "outcome"}
    assert TIMESTAMP.match(status["audit"][0]["when"])


def test_execute_accepts_the_spec_request_and_answers_its_shape(api, controller, scripts):
    # A health report that passes the gate: the run's logs are the script's one line, as in the example.
    report = {"health": {"coverage_ratio": 0.999, "generated_at": "2025-09-22T00:00:00Z"}}
    scripts.write("failover", RECORD + "echo 'INFO: Failover completed'\n" + reporting(report))
    response = api.post("/api/ops/runbooks/execute", json=EXECUTE_REQUEST_EXAMPLE, headers=auth())
    assert response.status_code == 200, response.text
    body = response.json()
    same_shape(EXECUTE_RESPONSE_EXAMPLE, body)
    assert set(body) == set(EXECUTE_RESPONSE_EXAMPLE)
    assert set(body["runbook"]) == set(EXECUTE_RESPONSE_EXAMPLE["runbook"])
    assert set(body["runbook"]["logs"][0]) == {"level", "message"}
    assert body["health"]["coverage_ratio"] == 0.999  # the example's null: a run that reported none
    assert body["runbook"] == EXECUTE_RESPONSE_EXAMPLE["runbook"] | {
        "finished_at": body["runbook"]["finished_at"]
    }
    # The read-back is the same, and says more: the run's parameters, creation time, uid, conditions.
    read = api.get("/api/ops/runbooks/uuid", headers=auth()).json()
    assert {key: read["runbook"][key] for key in body["runbook"]} == body["runbook"]
    assert read["health"] == body["health"]
    assert read["runbook"]["reason"] == EXECUTE_REQUEST_EXAMPLE["reason"]
    assert TIMESTAMP.match(read["runbook"]["created_at"]) and read["runbook"]["uid"]
    assert {c["type"]: c["reason"] for c in read["conditions"]}["Succeeded"] == "Succeeded"


def test_error_responses_carry_a_detail(api, controller):
    """The 500: the controller finds no script for ``start`` (none is written), exit code 125."""
    for response, code in (
        (api.get("/api/ops/status"), 401),
        (api.get("/api/ops/status", headers=auth("token-with-no-permission")), 403),
        (api.post("/api/ops/runbooks/execute", json={"command": "x"}, headers=auth()), 422),
        (
            api.post(
                "/api/ops/runbooks/execute",
                json={"command": "start", "request_id": "exec-error"},
                headers=auth(),
            ),
            500,
        ),
        (api.get("/api/ops/runbooks/nope", headers=auth()), 404),
    ):
        assert response.status_code == code
        assert "detail" in response.json()
        if code != 422:
            assert isinstance(response.json()["detail"], str)


def expect_summary_shape(summary: dict) -> None:
    assert set(summary) == set(SUMMARY_EXAMPLE)
    for key, example in SUMMARY_EXAMPLE.items():
        metric = summary[key]
        assert metric["metric"] == example["metric"]
        assert metric["unit"] == example.get("unit")
        assert {"metric", "value", "unit", "stale"} <= set(metric)
        assert isinstance(metric["stale"], bool)
        if metric["stale"]:
            same_shape(SUMMARY_EXAMPLE["consumer_backlog_messages"]["context"], metric["context"])
            assert metric["value"] is None
        else:
            # The example of a fresh metric (the backlog's example is a stale one: its note does not apply).
            fresh = {
                k: v
                for k, v in example.items()
                if k in ("metric", "unit", "context") and not example["stale"]
            }
            same_shape(fresh, metric, f"$.{key}")
            assert isinstance(metric["value"], int | float)


def test_summary_has_the_spec_shape(start_api, controller_prometheus, scripts):
    """Prometheus scrapes the simulator and the real controller, after a real run (exit code 0)."""
    scripts.write("start", RECORD)
    api = start_api(prometheus_url=controller_prometheus.url)
    ran = api.post("/api/ops/runbooks/execute", json={"command": "start"}, headers=auth())
    assert ran.status_code == 200 and ran.json()["runbook"]["exit_code"] == 0, ran.text

    def fresh():
        body = api.get("/api/ops/metrics/summary", headers=auth()).json()
        return (
            body if not body["coverage_ratio"]["stale"] and not body["runbook_exit_code"]["stale"] else None
        )

    summary = wait_until(fresh, 30, "fresh samples")
    expect_summary_shape(summary)
    assert summary["runbook_exit_code"]["value"] == 0
    assert set(summary["coverage_ratio"]["context"]) == set(SUMMARY_EXAMPLE["coverage_ratio"]["context"])
    assert summary["throughput_mps"]["context"] == SUMMARY_EXAMPLE["throughput_mps"]["context"]


def test_a_stale_summary_has_the_spec_shape(start_api):
    api = start_api(prometheus_url=f"http://127.0.0.1:{free_port()}")
    summary = api.get("/api/ops/metrics/summary", headers=auth()).json()
    expect_summary_shape(summary)
    assert all(m["stale"] for m in summary.values())


@pytest.mark.parametrize("minutes", [1, 5])
def test_timeseries_has_the_spec_shape(start_api, prometheus, minutes):
    api = start_api(prometheus_url=prometheus.url)

    def some():
        response = api.get(
            "/api/ops/metrics/timeseries",
            params={"metric": "md_throughput_mps", "minutes": minutes, "step_seconds": 1},
            headers=auth(),
        )
        return response.json() if len(response.json()["points"]) >= 2 else None

    body = wait_until(some, 30, "two points")
    same_shape(TIMESERIES_EXAMPLE, body)
    assert set(body) == set(TIMESERIES_EXAMPLE)
    assert {frozenset(p) for p in body["points"]} == {frozenset({"timestamp", "value"})}
