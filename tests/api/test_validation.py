"""422s: what a careless client learns of its request (every integer of a query read as one, or refused)."""

from __future__ import annotations

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
