"""The API as a hostile client meets it: ``python -m api`` as a real process, raw HTTP over a real socket.

Authentication before the body, bounded bodies (declared or streamed) with the process's memory flat, odd
JSON answered with a 422 and a JSON body on a connection that stays usable, unknown methods refused and kept
out of the metrics' labels, HEAD answered wherever GET is.
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
import urllib.parse
from http import client as httpclient
from pathlib import Path

import pytest
from fastapi.routing import iter_route_contexts

from api.main import create_app
from api.routes.console import CONSOLE_DIR
from devcluster.processes import wait_until
from tests.api.conftest import ADMIN_TOKEN, METRICS_TOKEN, READER_TOKEN, auth, http

EXECUTE = "/api/ops/runbooks/execute"
MIB = 1024 * 1024


def connect(server) -> httpclient.HTTPConnection:
    parts = urllib.parse.urlsplit(server.url)
    return httpclient.HTTPConnection(parts.hostname, parts.port, timeout=60)


def answer(connection: httpclient.HTTPConnection) -> tuple[int, dict[str, str], dict]:
    response = connection.getresponse()
    body = response.read()
    headers = {k.lower(): v for k, v in response.getheaders()}
    assert headers["content-type"] == "application/json", (response.status, body)
    return response.status, headers, json.loads(body)


def post_raw(server, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], dict]:
    connection = connect(server)
    try:
        connection.request(
            "POST", EXECUTE, body=body, headers={"Content-Type": "application/json", **headers}
        )
        return answer(connection)
    finally:
        connection.close()


def stream(server, total: int, headers: dict[str, str], chunk: int = MIB) -> tuple[int, dict[str, str], dict]:
    """POST ``total`` bytes in chunks (Transfer-Encoding: chunked, no Content-Length), stopping as soon as
    the server answers; the answer."""
    connection = connect(server)
    try:
        connection.putrequest("POST", EXECUTE)
        for name, value in {
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
            **headers,
        }.items():
            connection.putheader(name, value)
        connection.endheaders()
        data = b"[" + b"0," * (chunk // 2)
        sent = 0
        try:
            while sent < total and not select.select([connection.sock], [], [], 0)[0]:
                piece = data[: min(chunk, total - sent)]
                connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
            if sent >= total:
                connection.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered and closed while we were still sending: read what it said
        return answer(connection)
    finally:
        connection.close()


def test_no_token_is_401_before_the_body_is_read(server, runbooks):
    for headers, error in (({}, None), ({"Authorization": "Bearer not-a-token-at-all"}, "invalid_token")):
        code, answered, body = post_raw(server, b'{"command": "start", "mode": [', headers)
        assert code == 401, body
        assert answered["www-authenticate"] == ("Bearer" if error is None else f'Bearer error="{error}"')
        assert "bearer token" in body["detail"]
    # A declared 200 MB body is refused from the headers alone: nothing of it is sent.
    connection = connect(server)
    connection.putrequest("POST", EXECUTE)
    connection.putheader("Content-Length", str(200 * MIB))
    connection.endheaders()
    code, answered, body = answer(connection)
    connection.close()
    assert code == 401 and answered["connection"] == "close"
    assert runbooks.list() == []


@pytest.mark.parametrize("token", [None, ADMIN_TOKEN], ids=["no-token", "admin"])
def test_a_200_mb_streamed_body_is_refused_with_memory_flat(server, token):
    """Chunked, without a Content-Length: 401 at once without a token, 413 once past the limit with one.
    The process's resident memory stays flat either way."""
    http("GET", server.url + "/healthz")
    before = server.rss_kib()
    headers = auth(token) if token else {}
    code, answered, body = stream(server, 200 * MIB, headers)
    assert code == (413 if token else 401), body
    assert answered["connection"] == "close"
    assert "detail" in body
    grown = server.rss_kib() - before
    assert grown < 20 * 1024, f"the API grew by {grown} KiB"
    assert http("GET", server.url + "/healthz")[0] == 200


@pytest.mark.parametrize("token", [None, METRICS_TOKEN, ADMIN_TOKEN], ids=["no-token", "metrics", "admin"])
def test_a_body_framed_both_ways_is_400_at_once_with_memory_flat(server, runbooks, token):
    """Content-Length: 0 and Transfer-Encoding: chunked: the server would read the chunks, so the body
    must not pass for empty (it once did, and was read whole past every limit). Refused from the headers,
    whatever the token, and the connection closed."""
    http("GET", server.url + "/healthz")
    before = server.rss_kib()
    headers = {"Content-Length": "0", **(auth(token) if token else {})}
    code, answered, body = stream(server, 200 * MIB, headers)
    assert code == 400 and "Content-Length and Transfer-Encoding" in body["detail"], body
    assert answered["connection"] == "close"
    grown = server.rss_kib() - before
    assert grown < 20 * 1024, f"the API grew by {grown} KiB"
    assert runbooks.list() == []


def test_a_declared_body_over_the_limit_is_413_at_once(start_server):
    server = start_server(MDOPS_API_MAX_BODY_BYTES="2048")
    connection = connect(server)
    connection.putrequest("POST", EXECUTE)
    connection.putheader("Authorization", f"Bearer {ADMIN_TOKEN}")
    connection.putheader("Content-Length", "2049")
    connection.endheaders()  # no byte of the body is sent: the headers are enough
    code, answered, body = answer(connection)
    connection.close()
    assert code == 413 and "2048 bytes" in body["detail"] and answered["connection"] == "close"
    # Just under the limit: read, and judged on its content.
    reason = "r" * (2048 - len('{"command":"start","reason":""}'))
    compact = json.dumps({"command": "start", "reason": reason}, separators=(",", ":")).encode()
    assert len(compact) == 2048
    code, _, body = post_raw(server, compact, auth())
    assert code == 422 and body["detail"][0]["loc"] == ["body", "reason"]  # longer than 1024 characters


ODD_BODIES = {
    "NaN": b'{"command": "start", "timeout_seconds": NaN}',
    "Infinity": b'{"command": "start", "timeout_seconds": Infinity}',
    "-Infinity": b'{"command": "start", "timeout_seconds": -Infinity}',
    "1e999": b'{"command": "start", "timeout_seconds": 1e999}',
    "lone-surrogate": b'{"command": "start", "reason": "\\ud800"}',
    "lone-surrogate-key": b'{"command": "start", "\\udfff": 1}',
    "nul-escaped": b'{"command": "start", "reason": "a\\u0000b"}',
    "invalid-utf8": b'{"command": "start", "reason": "\xff\xfe"}',
    "utf16": '{"command": "start"}'.encode("utf-16"),
    "deep": b"[" * 15000 + b"]" * 15000,
    "huge-integer": b'{"command": "start", "timeout_seconds": ' + b"9" * 5000 + b"}",
    "truncated": b'{"command": "sta',
    "duplicate-name": b'{"command": "health_check", "command": "failover"}',
    "duplicate-nested": b'{"command": "start", "x": {"a": 1, "a": 2}}',
}


def test_odd_json_is_a_422_with_a_json_body_on_a_connection_that_stays_usable(server, runbooks):
    connection = connect(server)
    try:
        for name, raw in ODD_BODIES.items():
            headers = {"Content-Type": "application/json", **auth()}
            connection.request("POST", EXECUTE, body=raw, headers=headers)
            code, _, body = answer(connection)
            assert code == 422, (name, body)
            (issue,) = body["detail"]
            assert issue["loc"][0] == "body" and issue["type"] == "json_invalid", (name, issue)
        # The same connection still serves.
        connection.request("GET", "/api/ops/status", headers=auth(READER_TOKEN))
        assert answer(connection)[0] == 200
    finally:
        connection.close()
    assert runbooks.list() == []


def raw_request(server, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_unknown_methods_are_405_and_never_a_metric_label(server):
    for method in ("FOO", "BREW", "PROPFIND", "GETX"):
        for path in ("/api/ops/status", "/no/such/path", "/healthz"):
            received = raw_request(
                server, f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            head, _, body = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 405"), received
            assert b"\r\nallow: get" in head.lower(), head
            assert json.loads(body) == {"detail": "Method Not Allowed"}
    for path in ("/a", "/b/c", "/api/ops/status/x"):
        http("GET", server.url + path)
    _, _, text = http("GET", server.url + "/metrics", headers=auth(METRICS_TOKEN))
    methods = {line.split('method="')[1].split('"')[0] for line in text.splitlines() if 'method="' in line}
    routes = {line.split('route="')[1].split('"')[0] for line in text.splitlines() if 'route="' in line}
    assert methods == {"GET", "other"}
    assert routes == {"/api/ops/status", "/healthz", "/readyz", "unmatched"}
    assert 'mdops_api_requests_total{method="other",route="/api/ops/status",status="405"} 4.0' in text


@pytest.mark.parametrize("method", ["PROPFIND", "DELETE", "PUT"])
def test_a_405_says_that_get_and_head_are_allowed_also_for_the_consoles_files(server, method):
    """An unknown method (the edge's 405) or a known one that the path does not serve (the router's)."""
    token = f"Authorization: Bearer {ADMIN_TOKEN}\r\n"
    for path in ("/console/", "/console/js/main.js", "/api/ops/status", "/healthz"):
        received = raw_request(
            server, f"{method} {path} HTTP/1.1\r\nHost: x\r\n{token}Connection: close\r\n\r\n".encode()
        )
        head = received.partition(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 405"), received
        assert b"\r\nallow: get, head\r\n" in head, head


def test_a_trailing_slash_is_a_json_404_never_a_redirect_to_the_clients_host(server, runbooks):
    """No route ends with a slash: a path with one more is an unknown path like any other, not a redirect
    (which had an empty body, no place in the OpenAPI document, and a Location made from the Host header)."""
    token = f"Authorization: Bearer {ADMIN_TOKEN}\r\n"
    body = '{"command": "health_check"}'
    for method, path, headers in (
        ("GET", "/api/ops/status/", token),
        ("GET", "/healthz/", ""),
        ("GET", "/api/ops/runbooks/x/", token),
        ("POST", f"{EXECUTE}/", f"{token}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"),
    ):
        received = raw_request(
            server,
            f"{method} {path} HTTP/1.1\r\nHost: elsewhere.example\r\n{headers}Connection: close\r\n\r\n"
            f"{body if method == 'POST' else ''}".encode(),
        )
        head, _, answer = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 404 ") and b"location" not in head.lower(), received
        assert json.loads(answer) == {"detail": "Not Found"}
    console = raw_request(
        server, b"GET /console HTTP/1.1\r\nHost: elsewhere.example\r\nConnection: close\r\n\r\n"
    )
    assert console.startswith(b"HTTP/1.1 307 ") and b"\r\nlocation: /console/\r\n" in console, console
    # The console's folder by another name (a client that does not normalise dot segments): the static
    # files' redirect to it with a slash names the path alone, never the Host header's server.
    for path, location in (
        ("/console/%2e", b"/console/./"),
        ("/console/vendor/%2e%2e", b"/console/vendor/../"),
    ):
        folder = raw_request(
            server, f"GET {path} HTTP/1.1\r\nHost: elsewhere.example\r\nConnection: close\r\n\r\n".encode()
        )
        assert folder.startswith(b"HTTP/1.1 307 ") and b"\r\nlocation: " + location + b"\r\n" in folder, (
            folder
        )
    assert runbooks.list() == []


def test_a_header_value_with_a_tab_and_visible_characters_is_fine(server):
    received = raw_request(
        server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Note: a\tb \xe9 ~\r\nConnection: close\r\n\r\n"
    )
    assert received.startswith(b"HTTP/1.1 200"), received


def get_paths() -> list[str]:
    """A path of every GET route of the API (``no-such-run`` for a path parameter) and the console's."""
    paths = [
        re.sub(r"\{[^}]+\}", "no-such-run", route.path)
        for route in iter_route_contexts(create_app().routes)
        if "GET" in (route.methods or ())
    ]
    return [*paths, "/console/"]


def test_head_answers_as_get_does_without_a_body(start_server):
    """Monitoring tools and load balancers send HEAD: wherever GET serves, HEAD has its status and headers
    and no body; an event stream's HEAD ends there and holds none of the token's streams."""
    streams = 4
    server = start_server(MDOPS_API_EVENTS_STREAMS_PER_TOKEN=str(streams))
    heads = connect(server)  # one connection for every HEAD: a byte of body would garble the next answer
    try:
        for path in get_paths():
            heads.request("HEAD", path, headers=auth())
            response = heads.getresponse()
            assert response.read() == b""
            head = {k.lower(): v for k, v in response.getheaders()}
            got = connect(server)
            try:
                got.request("GET", path, headers=auth())
                answer = got.getresponse()  # its head only: an event stream's body never ends
                gets = {k.lower(): v for k, v in answer.getheaders()}
            finally:
                got.close()
            assert (response.status, head.keys()) == (answer.status, gets.keys()), path
            assert head.get("content-type") == gets.get("content-type"), path
            if path == "/healthz":  # a body that never changes: the same length is announced
                assert head["content-length"] == gets["content-length"] == str(len(b'{"status":"ok"}'))
        for _ in range(2 * streams):
            heads.request("HEAD", "/api/ops/events", headers=auth())
            response = heads.getresponse()
            assert (response.status, response.read()) == (200, b"")
        heads.request("GET", "/healthz")
        assert json.loads(heads.getresponse().read()) == {"status": "ok"}
    finally:
        heads.close()


NOT_HTTP = {
    "not-a-request-line": b"HELLO\r\n\r\n",
    "control-character-in-a-header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX\x01y: z\r\n\r\n",
    "controls-in-a-header-value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Note: a\x1b[31mb\x07\r\n\r\n",
    "a-del-in-a-header-value": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Note: a\x7fb\r\n\r\n",
    "no-host": b"GET /healthz HTTP/1.1\r\n\r\n",
    "raw-utf8-in-the-path": "GET /api/ops/é HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    "bad-chunk": f"POST {EXECUTE} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
    "Transfer-Encoding: chunked\r\n\r\nzz\r\n".encode(),
}


@pytest.mark.parametrize("request_bytes", NOT_HTTP.values(), ids=NOT_HTTP.keys())
def test_what_is_not_http_is_a_400_with_a_json_body(server, runbooks, request_bytes):
    head, _, body = raw_request(server, request_bytes).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n"), head
    assert b"content-type: application/json" in head and b"connection: close" in head, head
    assert json.loads(body) == {"detail": "Invalid HTTP request received."}
    assert http("GET", server.url + "/healthz")[0] == 200
    assert runbooks.list() == []


# -- clients that are slow to send: each request has MDOPS_API_READ_TIMEOUT_SECONDS to arrive whole -------


def slow_client(server, sent: bytes = b"") -> socket.socket:
    """A connection that sends ``sent`` (nothing, part of a head or of a body) and then waits."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(sent)
    return sock


def received_until_closed(sock: socket.socket) -> bytes:
    received = b""
    with sock:
        while chunk := sock.recv(65536):
            received += chunk
    return received


def timed_out(received: bytes) -> dict:
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), received
    assert b"content-type: application/json" in head and b"connection: close" in head, head
    return json.loads(body)


def requests_counted(server, status: int) -> float:
    _, _, text = http("GET", server.url + "/metrics", headers=auth(METRICS_TOKEN))
    prefix = f'mdops_api_requests_total{{method="POST",route="{EXECUTE}",status="{status}"}} '
    return next(
        (float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix)), 0
    )


def open_descriptors(server) -> int:
    return len(list(Path(f"/proc/{server.popen.pid}/fd").iterdir()))


def execute_head(length: int) -> bytes:
    return (
        f"POST {EXECUTE} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def test_a_request_not_sent_whole_in_time_is_408_and_nothing_is_done_with_it(start_server, runbooks):
    server = start_server(MDOPS_API_READ_TIMEOUT_SECONDS="1")
    valid_prefix = b'{"command": "health_check", "request_id": "half-sent"}'  # valid JSON, but not all of it
    began = time.monotonic()
    silent = slow_client(server)
    half_head = slow_client(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    half_body = slow_client(server, execute_head(len(valid_prefix) + 40) + valid_prefix)
    # A kept-alive connection: its first request is answered, its second arrives by half.
    kept = slow_client(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    first = b""
    while b"\r\n\r\n" not in first:
        first += kept.recv(65536)
    assert first.startswith(b"HTTP/1.1 200 "), first
    kept.sendall(b"GET /readyz HTTP/1.1\r\n")

    assert received_until_closed(silent) == b""  # nothing of a request came: closed, as an idle one is
    for sock in (half_head, half_body, kept):
        assert "not received whole within 1 s" in timed_out(received_until_closed(sock))["detail"]
    assert time.monotonic() - began >= 1
    # The half-sent execute reached the application, which saw the client gone and created nothing.
    wait_until(lambda: requests_counted(server, 499) == 1, 30, "the half-sent execute counted as 499")
    assert runbooks.list() == []


def test_a_request_pipelined_behind_another_has_the_same_deadline(start_server, runbooks):
    """A client may send its next request before the answer to the first (pipelining): its head, or half of
    it, arrives with the first, and the server reads it only once the first is answered."""
    server = start_server(MDOPS_API_READ_TIMEOUT_SECONDS="1")
    valid_prefix = b'{"command": "health_check", "request_id": "pipelined-half"}'
    first = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    half_body = slow_client(server, first + execute_head(len(valid_prefix) + 40) + valid_prefix)
    half_head = slow_client(server, first + b"GET /readyz HTTP/1.1\r\n")
    for sock in (half_body, half_head):
        sock.settimeout(10)  # far past the 1 s deadline: a connection still open then is held for good
        received = received_until_closed(sock)
        answered, _, second = received.partition(b"HTTP/1.1 408 ")
        assert answered.startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1" not in answered[1:], received
        assert "not received whole within 1 s" in timed_out(b"HTTP/1.1 408 " + second)["detail"]
    wait_until(lambda: requests_counted(server, 499) == 1, 30, "the half-sent execute counted as 499")
    assert runbooks.list() == []


def test_a_client_gone_before_its_body_is_whole_creates_nothing(server, runbooks):
    body = b'{"command": "health_check", "request_id": "cut-short"}'
    sock = slow_client(server, execute_head(len(body) + 40) + body)  # a valid JSON prefix of what it declared
    sock.close()
    wait_until(lambda: requests_counted(server, 499) == 1, 30, "the cut-short execute counted as 499")
    assert runbooks.list() == []


def test_the_deadline_is_for_reading_a_request_not_for_answering_it(start_server, runbooks):
    server = start_server(MDOPS_API_READ_TIMEOUT_SECONDS="1", MDOPS_API_EXECUTE_WAIT_SECONDS="3")
    began = time.monotonic()
    # No controller runs it: execute waits its 3 s for the run's end, then answers 202.
    code, _, body = http(
        "POST", server.url + EXECUTE, {"command": "health_check", "request_id": "waited"}, auth()
    )
    assert code == 202 and time.monotonic() - began >= 3, body
    assert [item["spec"]["requestId"] for item in runbooks.list()] == ["waited"]


@pytest.mark.parametrize(
    ("token", "path"),
    [(READER_TOKEN, EXECUTE), (METRICS_TOKEN, "/api/ops/runbooks/some-id/approve")],
    ids=["execute", "approve"],
)
def test_a_token_without_the_permission_is_403_before_the_body_is_read(server, runbooks, token, path):
    """The head alone is answered: the server does not wait for, nor read, a body that a token without the
    route's permission declares (it never sends it here: waiting for it would end in a 408)."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: 30000\r\n\r\n"
    ).encode()
    received = received_until_closed(slow_client(server, head + b'{"command": "start", "mode": ['))
    status, _, body = received.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 403 ") and b"connection: close" in status, received
    assert "lacks the permission" in json.loads(body)["detail"]
    assert runbooks.list() == []


def test_an_answered_connection_is_kept_open_for_the_keep_alive_seconds_then_closed(start_server):
    """MDOPS_API_KEEP_ALIVE_SECONDS (7 here, where uvicorn's own would close it after 5 s): a client may send
    its next request on the connection until then (mdops reuses one for less: cli.client)."""
    server = start_server(MDOPS_API_KEEP_ALIVE_SECONDS="7")
    asked_at = time.monotonic()  # before the answer, so the 7 s cannot seem shorter on a busy machine
    sock = slow_client(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answered = b""
    while b"\r\n\r\n" not in answered:
        answered += sock.recv(65536)
    assert answered.startswith(b"HTTP/1.1 200 "), answered
    received_until_closed(sock)  # the rest of the answer, if any, then nothing until the server closes it
    assert 6.9 < time.monotonic() - asked_at < 15


def test_slow_clients_hold_nothing_once_their_time_is_up(start_server):
    server = start_server(MDOPS_API_READ_TIMEOUT_SECONDS="1")
    before = open_descriptors(server)
    clients = [slow_client(server, b"" if n % 2 else b"GET /healthz HTTP/1.1\r\n") for n in range(300)]
    for sock in clients:
        received_until_closed(sock)
    wait_until(lambda: open_descriptors(server) <= before, 30, "the API's descriptors back where they were")
    assert http("GET", server.url + "/healthz")[0] == 200


def test_a_client_that_reads_none_of_its_answers_is_closed_once_its_time_is_up(start_server):
    """A client that asks (no token needed: the console's largest file, pipelined) and then reads nothing:
    once its answers fill the buffers, the server waits to write. uvicorn waits for good, and enough such
    clients use up the process's file descriptors; here the connection is dropped when nothing of it has
    been read for MDOPS_API_READ_TIMEOUT_SECONDS."""
    server = start_server(MDOPS_API_READ_TIMEOUT_SECONDS="1")
    largest = max((p for p in CONSOLE_DIR.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    path = "/console/" + largest.relative_to(CONSOLE_DIR).as_posix()
    before = open_descriptors(server)
    clients = []
    for _ in range(5):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * 50)
        clients.append(sock)
    wait_until(lambda: open_descriptors(server) <= before, 30, "the non-reading clients' connections closed")
    for sock in clients:
        sock.close()
    assert http("GET", server.url + "/healthz")[0] == 200
