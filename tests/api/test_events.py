"""``GET /api/ops/events`` on the real API process (uvicorn), with the real controller running real scripts:
a run's events in order, a reconnect with Last-Event-ID that loses and repeats nothing, reset, heartbeat,
the per-token limit, permissions, and the end of every stream when the API stops."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator

import httpx

from devcluster.processes import wait_until
from tests.api.conftest import (
    ADMIN_TOKEN,
    HEALTH_CHECKER_TOKEN,
    METRICS_TOKEN,
    READER_TOKEN,
    RECORD,
    auth,
    http,
    replace_tokens,
    tokens_without,
)
from tests.runbook_client import HOLD

EVENTS = "/api/ops/events"


def events(response: httpx.Response) -> Iterator[dict]:
    """The stream's events as {id, event, data} (data decoded), and comments as {"comment": text}."""
    event: dict = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
        elif not line:
            if event:
                event["data"] = json.loads(event["data"])
                yield event
            event = {}
        else:
            field, _, value = line.partition(":")
            event[field] = value.removeprefix(" ")


def stream(url: str, token: str = ADMIN_TOKEN, **headers: str) -> httpx.Response:
    """An open event stream (the caller closes it); ``read`` timeout short, so a silent stream fails fast."""
    client = httpx.Client(timeout=httpx.Timeout(10, read=10))
    request = client.build_request("GET", url, headers={**auth(token), **headers})
    response = client.send(request, stream=True)
    response.extensions["client"] = client
    return response


def close(response: httpx.Response) -> None:
    response.close()
    response.extensions["client"].close()


def until(source: Iterator[dict], done) -> list[dict]:
    """The events of ``source`` (comments skipped) up to and including the first that ``done`` accepts."""
    seen = []
    for event in source:
        if "comment" in event:
            continue
        seen.append(event)
        if done(event):
            return seen
    raise AssertionError(f"the stream ended after {seen}")


def finished(event: dict) -> bool:
    return event["event"] == "runbook" and event["data"]["runbook"]["status"] in ("success", "failed")


def run_of(event: dict) -> str:
    data = event["data"]
    return data["runbook"]["request_id"] if event["event"] == "runbook" else data["request_id"]


def lines_of(received: list[dict]) -> list[str]:
    return [line["message"] for e in received if e["event"] == "log" for line in e["data"]["lines"]]


def test_a_reconnect_resumes_after_the_last_event_without_loss_or_repeat(server, controller, scripts):
    """One client follows a run without a break; another drops its connection mid-run and resumes with
    Last-Event-ID: both see the same events, the run's every log line once."""
    scripts.write("drill", RECORD + "echo 'INFO: one'\necho 'INFO: two'\n" + HOLD + "echo 'INFO: three'\n")
    whole = stream(server.url + EVENTS)
    part = stream(f"{server.url}{EVENTS}?request_id=resume-1")
    assert whole.status_code == 200 and whole.headers["content-type"].startswith("text/event-stream")
    execute = threading.Thread(
        target=http,
        args=(
            "POST",
            server.url + "/api/ops/runbooks/execute",
            {"command": "drill", "request_id": "resume-1"},
        ),
        kwargs={"headers": auth()},
    )
    execute.start()
    first = until(events(part), lambda e: e["event"] == "log")
    close(part)
    scripts.release()
    execute.join()
    resumed = stream(f"{server.url}{EVENTS}?request_id=resume-1", **{"Last-Event-ID": first[-1]["id"]})
    rest = until(events(resumed), finished)
    close(resumed)
    everything = until(events(whole), finished)
    close(whole)

    assert [e["id"] for e in first + rest] == [e["id"] for e in everything]
    assert lines_of(first) == ["one", "two"]  # sent while the run was held
    assert lines_of(first + rest) == lines_of(everything)
    assert lines_of(everything)[:3] == ["one", "two", "three"]  # then the runner's own warning
    final = rest[-1]["data"]
    assert final["runbook"]["status"] == "success" and final["runbook"]["request_id"] == "resume-1"
    assert [line["message"] for line in final["lines"]] == lines_of(everything)
    assert {c["type"] for c in final["conditions"]} >= {"Succeeded", "Running", "Queued"}
    assert final["lines"][0]["time"].endswith("+08:00")
    ids = [int(e["id"].rsplit("-", 1)[1]) for e in everything]
    assert ids == sorted(set(ids))  # monotonic, no repeats


def test_an_id_it_cannot_resume_from_gets_a_reset_then_the_run_as_it_is(server, controller, scripts):
    scripts.write("health_check", RECORD + "echo 'INFO: fine'\n")
    code, _, _ = http(
        "POST",
        server.url + "/api/ops/runbooks/execute",
        {"command": "health_check", "request_id": "reset-1"},
        auth(),
    )
    assert code == 200
    for last_event_id in ("0badc0de-1", "not an id"):  # another process's, and garbage
        response = stream(f"{server.url}{EVENTS}?request_id=reset-1", **{"Last-Event-ID": last_event_id})
        received = until(events(response), lambda e: e["event"] == "runbook")
        close(response)
        assert [e["event"] for e in received] == ["reset", "runbook"]
        assert received[1]["data"]["runbook"]["status"] == "success"
        assert received[1]["data"]["lines"][0]["message"] == "fine"
        assert received[0]["id"] == received[1]["id"]  # both as of the same event: resume after it


def test_a_quiet_stream_sends_heartbeats_and_the_openapi_document_describes_it(start_server):
    server = start_server(MDOPS_API_EVENTS_HEARTBEAT_SECONDS="0.3")
    response = stream(server.url + EVENTS, READER_TOKEN)
    source = events(response)
    beats = [next(source), next(source)]  # no run: only heartbeats come, each within the read timeout
    close(response)
    assert all(b["comment"].startswith("ping") for b in beats)

    _, _, text = http("GET", server.url + "/openapi.json", headers=auth(READER_TOKEN))
    operation = json.loads(text)["paths"][EVENTS]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {p["name"].lower() for p in operation["parameters"]} == {"request_id", "last-event-id"}
    assert "Last-Event-ID" in operation["description"] and "429" in operation["responses"]


def test_streams_are_limited_per_token_and_follow_the_runbook_permissions(start_server):
    server = start_server(MDOPS_API_EVENTS_STREAMS_PER_TOKEN="2")
    url = server.url + EVENTS
    opened = [stream(url), stream(url)]
    assert [r.status_code for r in opened] == [200, 200]
    refused = stream(url)
    assert refused.status_code == 429
    refused.read()
    assert "2 event streams open already" in refused.json()["detail"]
    close(refused)
    other = stream(url, READER_TOKEN)  # the limit is per token
    assert other.status_code == 200
    close(other)
    close(opened.pop())

    def another() -> bool:  # the server notices the closed stream
        response = stream(url)
        ok = response.status_code == 200
        close(response)
        return ok

    wait_until(another, 10, "a stream slot to free up")

    assert httpx.get(url).status_code == 401
    for token, code in ((METRICS_TOKEN, 403), (HEALTH_CHECKER_TOKEN, 200), (READER_TOKEN, 200)):
        response = stream(url, token)
        assert response.status_code == code, token
        close(response)
    close(opened.pop())


def test_a_token_without_status_read_follows_its_own_runs_only(server, controller, scripts):
    """An execute permission lets a token follow its own runs (its 202s); others' runs, their logs and
    their very existence, are status:read's."""
    scripts.write("health_check", RECORD + "echo 'INFO: fine'\n")
    mine = stream(server.url + EVENTS, HEALTH_CHECKER_TOKEN)
    execute = server.url + "/api/ops/runbooks/execute"
    assert http("POST", execute, {"command": "health_check", "request_id": "others-1"}, auth())[0] == 200
    own = http(
        "POST", execute, {"command": "health_check", "request_id": "own-1"}, auth(HEALTH_CHECKER_TOKEN)
    )
    assert own[0] == 200, own
    seen = until(events(mine), finished)  # others-1 ended before own-1 began: its events came first
    close(mine)
    assert {run_of(event) for event in seen} == {"own-1"}
    read = server.url + "/api/ops/runbooks/"
    assert http("GET", read + "own-1", headers=auth(HEALTH_CHECKER_TOKEN))[0] == 200
    assert http("GET", read + "others-1", headers=auth(HEALTH_CHECKER_TOKEN))[0] == 404
    assert http("GET", read + "others-1", headers=auth(READER_TOKEN))[0] == 200


def test_open_streams_end_when_the_api_stops(server):
    response = stream(server.url + EVENTS)
    ended = threading.Event()

    def read() -> None:
        for _ in events(response):
            pass
        ended.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    server.popen.send_signal(signal.SIGTERM)
    assert ended.wait(15), "the stream did not end"
    server.popen.wait(15)
    assert "Application shutdown complete" in server.log.read_text()
    close(response)


def test_a_stream_ends_once_its_token_is_revoked_and_another_tokens_goes_on(start_server, tokens_file):
    """A token taken out of the tokens file: its open stream ends within seconds, and opened again it is
    401 (before, it went on for as long as its client kept it open); another token's stream goes on."""
    server = start_server(MDOPS_API_EVENTS_HEARTBEAT_SECONDS="1")
    revoked, kept = stream(server.url + EVENTS, READER_TOKEN), stream(server.url + EVENTS)
    assert revoked.status_code == kept.status_code == 200
    ended = threading.Event()

    def read() -> None:
        for _ in events(revoked):
            pass
        ended.set()

    threading.Thread(target=read, daemon=True).start()
    replace_tokens(tokens_file, tokens_without("reader"))
    assert ended.wait(30), "the revoked token's stream did not end"
    again = stream(server.url + EVENTS, READER_TOKEN)
    assert again.status_code == 401
    close(again)
    beats_until = time.monotonic() + 7  # past the streams' look at their token (every 5 s at most)
    assert any("comment" in event and time.monotonic() > beats_until for event in events(kept))
    close(kept)
    close(revoked)
