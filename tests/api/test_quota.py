"""Per token: a rate of Runbook creations (429 with Retry-After) and a cap on unfinished Runbooks (429), on
``python -m api`` as a real process with the real controller."""

from __future__ import annotations

import json

from devcluster.processes import wait_until
from tests.api.conftest import EXECUTOR_TOKEN, RECORD, auth, http
from tests.runbook_client import HOLD

EXECUTE = "/api/ops/runbooks/execute"


def execute(server, request_id: str, token: str | None = None, command: str = "health_check"):
    code, headers, text = http(
        "POST",
        server.url + EXECUTE,
        {"command": command, "request_id": request_id},
        auth(token) if token else auth(),
    )
    return code, headers, json.loads(text)


def test_a_token_past_its_rate_gets_429_with_retry_after(start_server, runbooks):
    server = start_server(MDOPS_API_EXECUTE_RATE="3/minute", MDOPS_API_EXECUTE_WAIT_SECONDS="0")
    for i in range(3):
        assert execute(server, f"rate-{i}")[0] == 202
    code, headers, body = execute(server, "rate-3")
    assert code == 429, body
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert "MDOPS_API_EXECUTE_RATE" in body["detail"]
    assert execute(server, "rate-1")[0] == 202  # a request id that exists creates nothing: free
    assert execute(server, "rate-other", EXECUTOR_TOKEN)[0] == 202  # another token has its own rate
    assert sorted(rb["metadata"]["name"] for rb in runbooks.list()) == [
        "rate-0",
        "rate-1",
        "rate-2",
        "rate-other",
    ]


def test_a_token_at_its_cap_of_unfinished_runbooks_gets_429_until_one_finishes(
    start_server, runbooks, controller, scripts
):
    scripts.write("health_check", RECORD + HOLD)
    server = start_server(MDOPS_API_MAX_UNFINISHED_PER_TOKEN="2", MDOPS_API_EXECUTE_WAIT_SECONDS="0")
    assert execute(server, "cap-0")[0] == 202
    assert execute(server, "cap-1")[0] == 202
    code, _, body = execute(server, "cap-2")
    assert code == 429, body
    assert (
        "2 unfinished runbooks" in body["detail"] and "MDOPS_API_MAX_UNFINISHED_PER_TOKEN" in body["detail"]
    )
    assert execute(server, "cap-other", EXECUTOR_TOKEN)[0] == 202  # counted per token
    scripts.release()
    for name in ("cap-0", "cap-1"):
        runbooks.wait_finished(name)
    # The API's cache follows the finished runs within moments.
    wait_until(lambda: execute(server, "cap-2")[0] in (200, 202), 15, "the finished runs to free the cap")
    assert len(runbooks.list()) == 4
    runbooks.wait_finished("cap-2")
    assert sorted(scripts.runs()) == ["cap-0 dry=0", "cap-1 dry=0", "cap-2 dry=0", "cap-other dry=0"]
