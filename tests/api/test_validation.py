"""422s: what a careless client learns of its request (every integer of a query read as one, or refused),
and what a hostile one costs (the answer bounded, however many problems its request has)."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import METRICS_TOKEN, READER_TOKEN, auth

TIMESERIES = {"metric": "md_throughput_mps"}
# Every integer query parameter of the API: (path, parameter, token, the other parameters it needs).
INTEGERS = [
    ("/api/ops/runbooks", "limit", READER_TOKEN, {}),
    ("/api/ops/metrics/timeseries", "minutes", METRICS_TOKEN, TIMESERIES),
    ("/api/ops/metrics/timeseries", "step_seconds", METRICS_TOKEN, TIMESERIES),
    ("/api/ops/schedules", "slots", READER_TOKEN, {}),
]
# Texts that pydantic reads as integers (1.0 as 1, 1_0 as 10, " 1" as 1, "+1" as 1) or not; none is one.
NOT_INTEGERS = ["1.0", "2.00", "1_0", " 1", "1 ", "+1", "1e1", "0x1", "one", ""]


def test_every_integer_query_parameter_takes_decimal_digits_only(api):
    """``limit=1.0`` was taken as 1: a careless client never learnt that its value is not an integer."""
    document = api.get("/openapi.json", headers=auth()).json()
    declared = {
        (path, parameter["name"])
        for path, methods in document["paths"].items()
        for operation in methods.values()
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "query" and parameter["schema"].get("type") == "integer"
    }
    assert declared == {(path, name) for path, name, _, _ in INTEGERS}
    for path, name, token, others in INTEGERS:
        for text in NOT_INTEGERS:
            response = api.get(path, params={**others, name: text}, headers=auth(token))
            assert response.status_code == 422, (path, name, text, response.text)
            [issue] = response.json()["detail"]
            assert issue["loc"] == ["query", name], issue
            assert (issue["type"], issue["msg"]) == (
                "int_parsing",
                "Input should be a valid integer: decimal digits, e.g. 5",
            )
        answer = api.get(path, params={**others, name: "5"}, headers=auth(token))
        assert answer.status_code != 422, (path, name, answer.text)  # timeseries: 503, no Prometheus
        assert api.get(path, params={**others, name: "-5"}, headers=auth(token)).json()["detail"] == [
            {
                "loc": ["query", name],
                "msg": f"Input should be greater than or equal to {0 if name == 'slots' else 1}",
                "type": "greater_than_equal",
            }
        ]


@pytest.mark.parametrize(
    ("count", "more"),
    [
        (3000, [{"loc": [], "msg": "and 2980 more problems", "type": "too_many_errors"}]),
        (21, [{"loc": [], "msg": "and 1 more problem", "type": "too_many_errors"}]),
        (20, []),
    ],
)
def test_a_body_with_thousands_of_problems_gets_a_bounded_422_of_the_same_shape(api, runbooks, count, more):
    """A 29 KB body of 3,000 unknown fields got a 266 KB 422 (9 times the body): the first 20 problems are
    said, and one more issue says how many others there are."""
    body = {"command": "health_check", **{f"x{i}": 0 for i in range(count)}}
    sent = json.dumps(body, separators=(",", ":"))
    headers = {"Content-Type": "application/json", **auth()}
    response = api.post("/api/ops/runbooks/execute", content=sent, headers=headers)
    assert response.status_code == 422, response.text[:500]
    assert len(response.content) < 2500, (len(sent), len(response.content))
    detail = response.json()["detail"]
    assert detail[:20] == [
        {"loc": ["body", f"x{i}"], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}
        for i in range(20)
    ]
    assert detail[20:] == more
    assert runbooks.list() == []
