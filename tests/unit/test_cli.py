"""mdops's parts that need no API: exit codes of the API's answers, errors in one line, the config file
and its contexts, following a run (its events, resets, the stream's answers), run filters and rendering;
commands run with click's CliRunner, or as a process against a fake API of the test's own (:class:`FakeApi`)
where what matters is how mdops behaves when the API does not (answers that never come, Ctrl-C, pipes).

tests/cli/test_mdops.py runs the installed mdops against the local stack."""

from __future__ import annotations

import io
import json
import os
import re
import select
import signal
import stat
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console

from api.schemas import SummaryResponse
from api.settings import ApiSettings
from cli import render
from cli.client import KEEP_ALIVE_SECONDS, Api
from cli.commands import cli
from cli.config import REDACTED, Connection, resolve, shown_url
from cli.errors import MEANINGS, CliError, Exit, answer_error
from cli.follow import (
    POLL,
    READ,
    RECONNECTS,
    RETRY,
    Follower,
    lost,
    persist,
    reconnect_delay,
    stream_verdict,
    this_runs,
)
from devcluster.processes import free_port, wait_until
from tests.pids import WITH_CTRL_C

SECRET = "s3cret-token-never-shown"


@pytest.fixture
def config_file(tmp_path):
    return tmp_path / "mdops" / "config.yaml"


@pytest.fixture
def invoke(config_file):
    """Run mdops in-process with a config file of the test's own and none of the developer's settings."""

    def invoke(*args: str, input: str | None = None, **env: str):
        environment = {
            "MDOPS_API_URL": None,
            "MDOPS_API_TOKEN": None,
            "MDOPS_CONFIG": str(config_file),
            **env,
        }
        return CliRunner().invoke(cli, list(args), input=input, env=environment, prog_name="mdops")

    return invoke


class FakeApi(ThreadingHTTPServer):
    """The mdops API as a test needs it, on a free port of 127.0.0.1: ``answers`` maps ``"GET /path"`` (no
    query) to a function that answers such a request (its :class:`Answer` in); any other request gets the
    API's 404. Each request is kept in ``requests`` with its headers."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Answer)
        self.answers: dict[str, Callable[[Answer], None]] = {}
        self.requests: list[tuple[str, Message]] = []
        self.closing = threading.Event()
        # shutdown() waits for the loop to look at it: every 0.5 s by default, in each of these tests.
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def asked(self, request: str) -> int:
        return [asked for asked, _ in self.requests].count(request)

    def handle_error(self, request, client_address) -> None:
        if not self.closing.is_set():  # at the end, mdops is gone: writing to it fails
            super().handle_error(request, client_address)

    def close(self) -> None:
        self.closing.set()  # ends the answers that hold
        self.shutdown()
        self.server_close()


class Answer(BaseHTTPRequestHandler):
    """One request to :class:`FakeApi`, and the ways to answer it."""

    protocol_version = "HTTP/1.1"
    server: FakeApi

    def log_message(self, format: str, *args) -> None:
        pass

    def do_GET(self) -> None:
        request = f"{self.command} {urlsplit(self.path).path}"
        self.server.requests.append((request, self.headers))
        self.server.answers.get(request, lambda answer: answer.json(404, {"detail": f"no {request}"}))(self)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.do_GET()

    def json(self, status: int, body, **headers: str) -> None:
        self.raw(status, json.dumps(body).encode(), **headers)

    def raw(self, status: int, data: bytes, **headers: str) -> None:
        """``data`` as the body, said to be JSON: what another server, or a broken one, may send."""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    sent: int | None = None  # the events sent, once the stream's headers were

    def stream(self, *events: tuple[str, dict]) -> None:
        """An event stream: its headers (the first time), then these ``(name, data)`` events (ids 1, 2...)."""
        if self.sent is None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.sent = 0
        for name, data in events:
            self.sent += 1
            self.wfile.write(f"id: {self.sent}\nevent: {name}\ndata: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()

    def heartbeats(self) -> None:
        """A heartbeat (a comment line) every 0.05 s until the end (of the test, or of mdops)."""
        try:
            while not self.server.closing.wait(0.05):
                self.wfile.write(b": ping\n\n")
                self.wfile.flush()
        except OSError:  # mdops is gone
            self.close_connection = True

    def trickle(self, body) -> None:
        """A JSON answer a byte at a time, 0.1 s apart: each byte comes well within a read's timeout."""
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            for byte in data:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                if self.server.closing.wait(0.1):
                    break
        except OSError:  # mdops is gone
            self.close_connection = True

    def endless(self, kind: str = "json") -> None:
        """An answer without end, a MiB at a time, as fast as mdops reads it, until mdops goes away: JSON; or
        gzip, of a MiB of zeros each, which gzip makes a thousand times smaller; or an event stream's data
        lines that no blank line ends as an event."""
        gzipped = kind == "gzip"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if kind == "events" else "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        packer = zlib.compressobj(wbits=31)  # gzip's framing
        mib = {"gzip": bytes(2**20), "events": b"data: [" + b"1," * 2**19 + b"\n"}.get(kind, b"[" * 2**20)
        try:
            while not self.server.closing.is_set():
                data = packer.compress(mib) + packer.flush(zlib.Z_SYNC_FLUSH) if gzipped else mib
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        except OSError:  # mdops is gone
            self.close_connection = True

    def hold(self) -> None:
        """No answer (or no more of it) until the test ends: a frozen API, a proxy waiting for it."""
        self.server.closing.wait()
        self.close_connection = True


@pytest.fixture
def api():
    fake = FakeApi()
    yield fake
    fake.close()


# mdops as installed, but with a stream taken as lost after 0.3 s of silence and reconnects 0.05 s apart
# (45 s and up to 8 s as installed): what takes minutes then takes seconds.
QUICK_MDOPS = (
    "import cli.client, cli.follow, cli.main; "
    "cli.client.SILENT_STREAM_SECONDS = 0.3; cli.follow.MAX_DELAY_SECONDS = 0.05; cli.main.main()"
)
REPO = Path(__file__).resolve().parents[2]


def mdops(api: FakeApi, *args: str, request_timeout: float = 5) -> subprocess.Popen:
    """``mdops ARGS`` as a process of its own (for Ctrl-C, pipes, and what must end), talking to ``api``
    with ``--request-timeout``: long enough for a loaded machine by default, short where a test waits for
    it to pass."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MDOPS_")}
    env.update(MDOPS_API_URL=api.url, MDOPS_API_TOKEN=SECRET)
    return subprocess.Popen(
        [*WITH_CTRL_C, sys.executable, "-c", QUICK_MDOPS, *args, "--request-timeout", str(request_timeout)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ended(process: subprocess.Popen, within: float = 60) -> tuple[int, str]:
    """Its exit code and standard error, once it has exited; a failure when it has not within ``within`` s."""
    try:
        _, stderr = process.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        pytest.fail(f"mdops still ran after {within} s; its standard error:\n{stderr}")
    return process.returncode, stderr


RUN = {
    "request_id": "r-1",
    "name": "rb-1",
    "command": "restart",
    "status": "running",
    "exit_code": None,
    "finished_at": None,
    "logs": [{"level": "INFO", "message": "line 1"}],
}
RUNNING = ("runbook", {"runbook": RUN, "lines": RUN["logs"]})
RUN_SUMMARY = {  # an entry of the runs list
    **RUN,
    **dict.fromkeys(("mode", "window", "profile", "config", "requested_by", "created_at", "started_at")),
    **{"name": "rb-1", "uid": None, "dry_run": False, "enforce": False, "reason": "Running", "message": None},
}


# -- errors and exit codes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "code", "words"),
    [
        (
            401,
            {"detail": "invalid bearer token"},
            Exit.NOT_ALLOWED,
            "the API refused the token (401): invalid",
        ),
        (
            403,
            {"detail": "token 'viewer' lacks"},
            Exit.NOT_ALLOWED,
            "not allowed (403): token 'viewer' lacks",
        ),
        (404, {"detail": "no runbook"}, Exit.NOT_FOUND, "not found (404): no runbook"),
        (404, None, Exit.API_FAILED, "not found (404) without the API's detail: not an answer of the mdops"),
        (404, {"message": "Not Found"}, Exit.API_FAILED, "not found (404) without the API's detail"),
        (409, {"detail": "already used"}, Exit.CONFLICT, "conflict (409): already used"),
        (
            422,
            {"detail": [{"loc": ["body", "window"], "msg": "Input should be 'day'", "type": "enum"}]},
            Exit.INVALID,
            "the API refused the request (422): window: Input should be 'day'",
        ),
        (
            422,  # another server's list: what is not a {loc, msg} is left out, never a crash
            {"detail": [5, {"loc": 5, "msg": None}, {"loc": ["query", "limit"], "msg": "too big"}]},
            Exit.INVALID,
            "the API refused the request (422): query.limit: too big",
        ),
        (
            422,
            {"detail": [{"loc": "body", "msg": 7}]},
            Exit.INVALID,
            "the API refused the request (422): HTTP 422",
        ),
        (400, None, Exit.INVALID, "the API refused the request (400): HTTP 400"),
        (429, {"detail": "slow down"}, Exit.UNAVAILABLE, "too many requests (429): slow down"),
        (500, {"detail": "boom"}, Exit.API_FAILED, "the API failed (500): boom"),
        (503, {"detail": "not synced"}, Exit.UNAVAILABLE, "the API is not ready (503): not synced"),
        (502, None, Exit.UNAVAILABLE, "the API is unavailable (502): HTTP 502"),
    ],
)
def test_an_api_answer_becomes_an_exit_code_and_words(status, body, code, words):
    error = answer_error(status, body, "the test")
    assert (error.exit_code, error.status) == (code, status)
    assert error.line().startswith(f"mdops: {words}")
    assert "\n" not in error.line()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_another_servers_answer_not_a_failure_of_the_api_to_try_again(status):
    """http:// to a server that wants https://, a proxy that sends to its sign-in page: the URL is not the
    API's (exit 70), and the error says where it leads, not "the API failed ... try again later"."""
    error = answer_error(status, None, "env", {"Location": "https://api.example/login"})
    assert (error.exit_code, error.status) == (Exit.API_FAILED, status)
    assert error.line() == (
        f"mdops: the server at the URL redirects ({status}) to https://api.example/login: not an answer of "
        "the mdops API; hint: is the URL the mdops API's? (env)"
    )


def test_mdops_codes_never_collide_with_a_runbooks():
    runbook_codes = {0, 1, 2, 3, 124, 125, 130}
    assert not runbook_codes & {int(code) for code in Exit}


def test_mdops_reuses_a_connection_for_less_time_than_the_api_keeps_one_open():
    """A request sent on a connection as the API closes it is lost to mdops: it never reuses one that long."""
    shortest = next(
        rule.ge for rule in ApiSettings.model_fields["api_keep_alive_seconds"].metadata if hasattr(rule, "ge")
    )
    assert shortest > KEEP_ALIVE_SECONDS
    with Api(Connection("http://127.0.0.1:1", "t", "test"), timeout=5) as api:
        # httpx has no public view of its pool's expiry (pinned: this is where 0.28 keeps it)
        assert api.http._transport._pool._keepalive_expiry == KEEP_ALIVE_SECONDS


def test_an_unreachable_api_is_one_line_that_never_shows_the_token(invoke):
    result = invoke("status", "--url", f"http://127.0.0.1:{free_port()}", "--token", SECRET)
    assert result.exit_code == Exit.UNAVAILABLE
    assert result.stderr.startswith("mdops: cannot reach the API at http://127.0.0.1:")
    assert "hint: " in result.stderr and result.stderr.count("\n") == 1
    assert SECRET not in result.stdout + result.stderr


PASSWORD = "pa55-never-shown"


def _with_password(url: str) -> str:
    """``http://127.0.0.1:8080`` -> ``http://alice:PASSWORD@127.0.0.1:8080``."""
    return url.replace("://", f"://alice:{PASSWORD}@", 1)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://alice:pa55@127.0.0.1:8080/api", "http://alice:***@127.0.0.1:8080/api"),
        ("https://alice:p@s:s@api.example/x?y=1#z", "https://alice:***@api.example/x?y=1#z"),  # '@' in it
        ("http://alice:@api", "http://alice:***@api"),
        ("alice:pa55@api:8080", "alice:***@api:8080"),  # no scheme: refused, and said with the URL
        ("http://alice:pa55@[::1", "http://alice:***@[::1"),  # not a URL at all: an unclosed bracket
        ("http://alice@api:8080", "http://alice@api:8080"),  # a user name without a password
        ("http://api:8080/a:b@c?d=e:f@g#h:i@j", "http://api:8080/a:b@c?d=e:f@g#h:i@j"),  # '@' after the host
    ],
)
def test_a_url_is_shown_without_its_password(url, shown):
    assert shown_url(url) == shown


def _context_with(config_file: Path, url: str) -> None:
    """A config file whose current context ``c`` has ``url`` (written by hand, or by an older mdops)."""
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(
        yaml.safe_dump({"contexts": {"c": {"url": url, "token": SECRET}}, "current-context": "c"})
    )
    config_file.chmod(0o600)


@pytest.mark.parametrize("source", ["--url", "MDOPS_API_URL", "context"])
@pytest.mark.parametrize("credentials", [f"alice:{PASSWORD}@", "alice@", f":{PASSWORD}@"])
def test_a_url_with_a_user_name_or_password_is_refused_and_its_password_never_shown(
    invoke, config_file, api, source, credentials
):
    """The HTTP client would send them as basic authentication in the place of the token: the API would
    never see the token, and answer 401 to a token that is right."""
    url = api.url.replace("://", f"://{credentials}", 1)
    if source == "--url":
        result = invoke("status", "--url", url, "--token", SECRET)
    elif source == "MDOPS_API_URL":
        result = invoke("status", MDOPS_API_URL=url, MDOPS_API_TOKEN=SECRET)
    else:
        refused = invoke("config", "set-context", "c", "--url", url, "--token", SECRET)
        assert refused.exit_code == Exit.USAGE and "holds a user name or password" in refused.stderr
        assert PASSWORD not in refused.stdout + refused.stderr
        _context_with(config_file, url)
        result = invoke("status")
    assert result.exit_code == Exit.CONFIG, result.output
    assert f"the API URL '{url.replace(PASSWORD, '***')}'" in result.stderr
    assert "holds a user name or password: mdops sends its token instead" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert not api.requests


@pytest.mark.parametrize("port", ["99999", "http", "-1"])
def test_a_url_whose_port_is_no_port_is_a_configuration_error(invoke, port):
    result = invoke("status", "--url", f"http://127.0.0.1:{port}", "--token", SECRET)
    assert result.exit_code == Exit.CONFIG, result.output
    assert "is not an http:// or https:// URL" in result.stderr


def test_no_message_and_no_listing_shows_the_password_of_an_api_url(invoke, config_file, api):
    url, ftp = _with_password(api.url), _with_password("ftp://api")
    shown = url.replace(PASSWORD, "***")
    said = {
        "the API URL 'ftp://alice:***@api' (--url and --token) is not an http": invoke(
            "status", "--url", ftp, "--token", SECRET
        ),
        "'ftp://alice:***@api' is not an http:// or https:// URL": invoke(
            "config", "set-context", "ftp", "--url", ftp, "--token", SECRET
        ),
    }
    _context_with(config_file, url)
    said[f"is for {shown} only"] = invoke("status", "--url", "http://other")  # the context's token is not
    for words, result in said.items():
        assert words in result.stderr, result.output
    listed = invoke("config", "get-contexts")
    assert listed.stdout.splitlines()[1].split() == ["*", "c", shown]
    viewed = invoke("config", "view")
    assert yaml.safe_load(viewed.stdout)["contexts"]["c"] == {"url": shown, "token": REDACTED}
    for result in (*said.values(), listed, viewed):
        assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "args", [("run", "nope"), ("runs", "--since", "yesterday"), ("bogus",), ("run", "stop", "--timeout", "0")]
)
def test_a_usage_error_exits_64_not_a_runbooks_2(invoke, args):
    result = invoke(*args)
    assert result.exit_code == Exit.USAGE, result.output
    assert "Usage: mdops" in result.stderr


@pytest.mark.parametrize("seconds", ["nan", "inf", "1e308", "-inf"])
@pytest.mark.parametrize("option", [("status", "--request-timeout"), ("metrics", "--watch", "--interval")])
def test_seconds_that_are_no_number_or_beyond_a_day_are_a_usage_error(invoke, option, seconds):
    """click's FloatRange takes nan (no comparison with it fails) and, without a maximum, inf: the HTTP
    client and sleep then failed (exit 70, "unexpected error")."""
    result = invoke(*option, seconds, "--url", "http://127.0.0.1:1", "--token", SECRET)
    assert result.exit_code == Exit.USAGE, result.output
    assert f"Invalid value for '{option[-1]}'" in result.stderr


SUMMARY = {  # the API's summary, as GET /api/ops/metrics/summary answers it
    name: {"metric": name, "value": 1, "unit": None, "stale": False} for name in SummaryResponse.model_fields
}


def test_metrics_watch_outlasts_lost_answers_and_ends_at_a_refusal(api):
    """A --watch runs until interrupted: a refresh whose answer is lost (503: an API restarting) is said and
    asked for again, and the refreshes go on once the API answers; a refusal (401: the token revoked) ends
    the watch with its exit code."""

    def dropped(answer: Answer) -> None:  # the connection closed without an answer
        answer.close_connection = True

    answers = iter([(200, SUMMARY), None, (503, {"detail": "not ready"}), (200, SUMMARY),
                    (401, {"detail": "unknown token"})])  # fmt: skip
    api.answers["GET /api/ops/metrics/summary"] = lambda answer: (
        answer.json(*given) if (given := next(answers)) else dropped(answer)
    )
    process = mdops(api, "metrics", "--watch", "--interval", "0.5", "-o", "json")
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == Exit.NOT_ALLOWED, stderr
    assert [json.loads(line) for line in stdout.splitlines()] == [SUMMARY, SUMMARY]
    said = stderr.splitlines()
    assert len(said) == 3 and all(line.endswith("; asking again in 0.05 s") for line in said[:2]), stderr
    assert said[0] == (
        f"mdops: cannot reach the API at {api.url}: Server disconnected without sending a response; "
        "asking again in 0.05 s"
    )
    assert "not ready" in said[1] and "unknown token" in said[2]
    assert api.asked("GET /api/ops/metrics/summary") == 5


def test_metrics_watch_whose_first_answer_is_lost_is_an_error_at_once(api):
    """At the start, an API that cannot answer is an error, as for any command: not a wait without end
    for an API that may be the wrong one."""
    api.answers["GET /api/ops/metrics/summary"] = lambda answer: answer.json(503, {"detail": "not ready"})
    code, stderr = ended(mdops(api, "metrics", "--watch", "--interval", "0.5"))
    assert code == Exit.UNAVAILABLE and "asking again" not in stderr, stderr
    assert api.asked("GET /api/ops/metrics/summary") == 1


@pytest.mark.parametrize(
    "args",
    [("get", "a\udcffb"), ("runs", "--who", "\udcff"), ("run", "restart", "--reason", "caf\udce9")],
    ids=["request-id", "filter", "reason"],
)
def test_an_argument_that_is_not_utf_8_is_a_usage_error_not_an_unexpected_one(invoke, api, args):
    """Bytes that are not UTF-8 (a Latin-1 terminal's \xe9, a file's): Python keeps them as surrogates,
    which neither a URL nor JSON can carry. Refused before any request, exit 64."""
    result = invoke(*args, "--url", api.url, "--token", SECRET)
    assert result.exit_code == Exit.USAGE, result.output
    assert "is not UTF-8 text" in result.stderr
    assert api.requests == []


def test_follow_without_waiting_is_a_usage_error_not_ignored(invoke):
    result = invoke(
        "run", "restart", "--no-wait", "--follow", "--url", "http://127.0.0.1:1", "--token", SECRET
    )
    assert result.exit_code == Exit.USAGE, result.output
    assert "Usage: mdops run" in result.stderr and "not with --no-wait" in result.stderr


def test_a_since_time_without_an_offset_is_refused_not_read_in_the_local_zone(invoke):
    """The API's times carry their zone's offset (+08:00 by default): a time without one could be meant
    in that zone, in UTC or in the machine's, hours apart; mdops asks for the offset before any request."""
    for value in ("2026-01-02T10:00", "2026-01-02"):
        result = invoke("runs", "--since", value)
        assert result.exit_code == Exit.USAGE, result.output
        assert "has no UTC offset" in result.stderr and "2026-01-02T10:00+08:00" in result.stderr


def test_a_since_beyond_any_date_is_a_usage_error_not_an_unexpected_one(invoke):
    result = invoke("runs", "--since", "999999999d")
    assert result.exit_code == Exit.USAGE, result.output
    assert "Invalid value for '--since': '999999999d' is too far back" in result.stderr


def test_a_request_id_in_square_brackets_gets_the_apis_refusal_not_a_crash(invoke, api):
    """The line that says what mdops waits for names the request id as it is: brackets are no markup."""
    refusal = {"detail": [{"loc": ["path", "request_id"], "msg": "String should match pattern"}]}
    api.answers["GET /api/ops/runbooks/%5B%2Fx%5D"] = lambda answer: answer.json(422, refusal)
    result = invoke("run", "restart", "--request-id", "[/x]", "--url", api.url, "--token", SECRET)
    assert result.exit_code == Exit.INVALID, result.output
    assert result.stderr.startswith("mdops: the API refused the request (422): path.request_id: String")


@pytest.mark.parametrize("request_id", [".", ".."])
def test_a_request_id_of_dots_reaches_the_api_not_another_path(invoke, api, request_id):
    """``/runbooks/.`` would be resolved to the runs list (``/runbooks/``), and ``..`` above it: sent
    escaped, the id reaches the API, which refuses it in words."""
    escaped = request_id.replace(".", "%2E")
    refusal = {"detail": [{"loc": ["path", "request_id"], "msg": "String should match pattern"}]}
    api.answers[f"GET /api/ops/runbooks/{escaped}"] = lambda answer: answer.json(422, refusal)
    for command in ("get", "logs"):
        result = invoke(command, request_id, "--url", api.url, "--token", SECRET)
        assert result.exit_code == Exit.INVALID, result.output
        assert "path.request_id: String should match pattern" in result.stderr


def test_logs_of_a_run_without_lines_says_so_on_standard_error(invoke, api):
    """Nothing printed and exit 0 looked like a hang or a lost run; standard output stays the lines."""
    quiet = {"runbook": {**RUN, "request_id": "r-quiet", "logs": []}, "health": None}
    api.answers["GET /api/ops/runbooks/r-quiet"] = lambda answer: answer.json(200, quiet)
    result = invoke("logs", "r-quiet", "--url", api.url, "--token", SECRET)
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr == "mdops: run r-quiet has no log lines (yet: -f waits for them)\n"
    result = invoke("logs", "r-quiet", "-o", "json", "--url", api.url, "--token", SECRET)
    assert (result.exit_code, result.stdout) == (0, "")


LONG = (  # the line that says why a failover failed, longer than any terminal
    "the runner died (killed by SIGKILL) without writing a result: GET http://127.0.0.1:9200/admin/status; "
    "failover: switching from primary to backup; POST http://127.0.0.1:9200/admin/failover?wait=true"
)


@pytest.mark.parametrize(
    "where", [{}, {"TTY_COMPATIBLE": "1", "COLUMNS": "80"}], ids=["into-a-pipe", "on-a-terminal"]
)
@pytest.mark.parametrize(
    "command", [("get", "r-1"), ("logs", "r-1"), ("run", "restart"), ("run", "restart", "--follow")]
)
def test_a_long_log_line_is_printed_whole_never_cut_nor_broken_by_mdops(invoke, api, command, where):
    """The ERROR line that says what happened is the one a person needs whole: into a pipe, one line for
    grep; on a terminal, written whole for the terminal to wrap. mdops get and mdops run's result cut it at
    the width; mdops logs and run --follow broke it between words."""
    failed = {**RUN, "status": "failed", "exit_code": 125, "logs": [{"level": "ERROR", "message": LONG}]}
    view = {"runbook": failed, "health": None}
    _a_run_that_succeeds_once_executed(api, lambda n: (200, view, {}))
    if command[0] != "run":
        api.answers["GET /api/ops/runbooks/r-1"] = lambda answer: answer.json(200, view)
    request_id = ("--request-id", "r-1") if command[0] == "run" else ()
    result = invoke(*command, *request_id, "--url", api.url, "--token", SECRET, **where)
    assert f"ERROR   {LONG}\n" in re.sub(r"\x1b\[[0-9;]*m", "", result.stdout), result.output  # bold


def test_an_empty_request_id_is_a_usage_error_not_the_runs_lists_path(invoke):
    for command in ("get", "logs"):
        result = invoke(command, "", "--url", "http://127.0.0.1:1", "--token", SECRET)
        assert result.exit_code == Exit.USAGE, result.output
        assert "Invalid value for 'REQUEST_ID': the request id is empty" in result.stderr


def test_an_apis_message_is_one_line_escaped_and_cut_not_sent_to_the_terminal_whole(invoke, api):
    """The API's detail names what it was given (a request id with a line end, an escape sequence that
    would set the terminal's title), or a broken server's is a megabyte long: the error is still one line,
    its control characters shown escaped, the detail cut."""
    detail = "no runbook 'a\nb\x1b]0;owned\x07'" + "x" * 1_000_000
    api.answers["GET /api/ops/runbooks/r-1"] = lambda answer: answer.json(404, {"detail": detail})
    result = invoke("get", "r-1", "--url", api.url, "--token", SECRET)
    assert result.exit_code == Exit.NOT_FOUND
    assert result.stderr.startswith("mdops: not found (404): no runbook 'a\\nb\\x1b]0;owned\\x07'xxx")
    assert result.stderr.count("\n") == 1 and len(result.stderr) < 2000
    assert "(999" in result.stderr and " more characters)" in result.stderr


def test_an_answer_sent_a_little_at_a_time_is_given_up_within_the_request_timeout(api):
    """--request-timeout is how long mdops waits for an answer, not for each part of it: a server (or a
    proxy) that trickles its answer, each byte within a read's timeout, took 80 s of a 2 s timeout."""
    api.answers["GET /api/ops/status"] = lambda answer: answer.trickle(
        {"environment_mode": "live" + " " * 600}
    )
    # The answer takes a minute: mdops must have given up long before, however slowly it starts.
    code, stderr = ended(mdops(api, "status", request_timeout=0.2), within=30)
    assert (code, stderr.count("\n")) == (Exit.UNAVAILABLE, 1), stderr
    assert stderr.startswith(f"mdops: no answer from the API at {api.url} within 0.2 s (ReadTimeout)")


@pytest.mark.parametrize(
    ("args", "path", "body", "where"),
    [
        (("get", "r-1"), "/api/ops/runbooks/r-1", {}, "runbook: Field required"),
        (("status",), "/api/ops/status", {"status": "ok"}, "environment_mode: Field required"),
        (("runs",), "/api/ops/runbooks", {"runbooks": [{"id": 1}], "matched": 1}, "runbooks.0.request_id"),
        (("metrics",), "/api/ops/metrics/summary", [], "its body is an array, not an object"),
        (("status",), "/api/ops/status", None, "its body is null, not an object"),
        (("get", "r-1"), "/api/ops/runbooks/r-1", "ok", "its body is a string, not an object"),
        (("metrics",), "/api/ops/metrics/summary", 0.5, "its body is a number, not an object"),
        (("status",), "/api/ops/status", False, "its body is false, not an object"),
    ],
    ids=["get", "status", "runs", "metrics", "null", "string", "number", "false"],
)
def test_an_answer_of_another_shape_is_exit_70_naming_what_is_amiss(invoke, api, args, path, body, where):
    """An answer of another shape (an older or newer API, another JSON service at the URL) is an error,
    not a view of dashes that exits 0. A body that is JSON but no object (null too: it was said to be
    "not JSON") is said as such, in words."""
    api.answers[f"GET {path}"] = lambda answer: answer.json(200, body)
    result = invoke(*args, "--url", api.url, "--token", SECRET)
    assert result.exit_code == Exit.API_FAILED, result.output
    assert result.stderr.startswith(f"mdops: the API's answer to {path} is not the Ops Console API's: ")
    assert where in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize("status", [200, 404])
def test_an_answer_nested_deeper_than_json_can_be_read_is_not_json_not_an_unexpected_error(
    invoke, api, status
):
    """A broken or hostile server's answer of 100,000 nested arrays (Python's JSON reader gives up on it with
    a RecursionError): not an answer of the API, said as any other that is not JSON."""
    api.answers["GET /api/ops/status"] = lambda answer: answer.raw(status, b"[" * 100_000)
    result = invoke("status", "--url", api.url, "--token", SECRET)
    assert result.exit_code == Exit.API_FAILED, result.output
    assert "unexpected" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(
        "mdops: not found (404) without the API's detail" if status == 404 else "mdops: the API"
    )


@pytest.mark.parametrize(
    ("event", "where"),
    [
        (("runbook", [1]), "its body is an array, not an object"),
        (("runbook", None), "its body is null, not an object"),
        (("runbook", {"runbook": 5, "lines": []}), "runbook: Input should be a valid dictionary"),
        (("runbook", {"runbook": RUN, "lines": [{"level": "INFO"}]}), "lines.0.message: Field required"),
        (("log", {"request_id": "r-1", "name": "rb-1", "lines": 5}), "lines: Input should be a valid list"),
        (("deleted", {"request_id": "r-1"}), "name: Field required"),
        (("reset", None), "its body is null, not an object"),
        (("reset", {"why": "x"}), "reason: Field required"),
    ],
    ids=[
        "runbook-list",
        "runbook-null",
        "runbook-number",
        "line-without-message",
        "lines-number",
        "deleted-nameless",
        "reset-null",
        "reset-reasonless",
    ],
)
def test_an_event_of_another_shape_is_exit_70_naming_what_is_amiss(api, event, where):
    """A stream's event that mdops cannot read (another server's, a broken one's) is said as an answer of
    another shape is, not as an unexpected failure of mdops."""
    api.answers["GET /api/ops/runbooks/r-1"] = lambda answer: answer.json(
        200, {"runbook": RUN, "health": None}
    )
    api.answers["GET /api/ops/events"] = lambda answer: (answer.stream(event), answer.heartbeats())
    code, stderr = ended(mdops(api, "logs", "r-1", "-f"), within=30)
    assert (code, stderr.count("\n")) == (Exit.API_FAILED, 1), stderr
    assert stderr.startswith(
        f"mdops: a {event[0]!r} event of the API's stream is not the Ops Console API's: {where}"
    ), stderr
    assert stderr.endswith("; hint: is the URL the mdops API's, and of this version of mdops?\n")


@pytest.mark.parametrize(
    ("kind", "args", "what"),
    [
        ("json", ("status",), "the answer to /api/ops/status"),
        ("gzip", ("status",), "the answer to /api/ops/status"),
        ("events", ("logs", "r-1", "-f"), "an event of the API's stream"),
    ],
    ids=["endless", "gzip-bomb", "endless-event"],
)
def test_an_answer_without_end_is_given_up_at_its_limit_with_memory_flat(api, kind, args, what):
    """Another server's endless answer (at loopback's speed, gigabytes within the request timeout), one that
    gzip decompresses a thousandfold, or an event stream's event without end, is read up to
    MAX_ANSWER_BYTES, then is an answer of another server: mdops, with a gigabyte of memory, ends in words,
    not out of memory."""
    api.answers["GET /api/ops/status"] = lambda answer: answer.endless(kind)
    api.answers["GET /api/ops/runbooks/r-1"] = lambda answer: answer.json(
        200, {"runbook": RUN, "health": None}
    )
    api.answers["GET /api/ops/events"] = lambda answer: answer.endless(kind)
    env = {name: value for name, value in os.environ.items() if not name.startswith("MDOPS_")}
    env.update(MDOPS_API_URL=api.url, MDOPS_API_TOKEN=SECRET)
    command = " ".join([f"{sys.executable} -c '{QUICK_MDOPS}'", *args, "--request-timeout 60"])
    ran = subprocess.run(
        ["sh", "-c", f"ulimit -v {2**20}; exec {command}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (ran.returncode, ran.stderr) == (
        Exit.API_FAILED,
        f"mdops: {what} is larger than 64 MiB: not an answer of the mdops API; hint: is the URL the mdops "
        "API's? (MDOPS_API_URL and MDOPS_API_TOKEN)\n",
    )


def test_an_unexpected_failure_is_one_line_and_exit_70_not_a_runbooks_1(invoke, api, monkeypatch):
    """A failure mdops did not foresee (here its view of a run fails) is one line, not a traceback."""

    def fails(view):
        raise KeyError("runbook")

    monkeypatch.setattr(render, "run_view", fails)
    api.answers["GET /api/ops/runbooks/r-1"] = lambda answer: answer.json(200, DONE)
    result = invoke("get", "r-1", "--url", api.url, "--token", SECRET)
    assert result.exit_code == Exit.API_FAILED
    assert result.stderr.startswith("mdops: unexpected error: KeyError: 'runbook'; hint: ")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "page",
    [
        {"runbooks": [], "matched": 1, "next_cursor": "c-1"},
        {"runbooks": [RUN_SUMMARY], "matched": 2, "next_cursor": "c-1"},
    ],
    ids=["empty-pages", "the-same-cursor"],
)
def test_runs_of_a_server_whose_pages_never_end_is_an_error_not_a_loop_without_end(api, page):
    """A server (not the API, or a broken one) that answers the runs list with a next page for ever, empty
    or at the same cursor: mdops runs stops at once with exit 70, rather than ask for ever."""
    api.answers["GET /api/ops/runbooks"] = lambda answer: answer.json(200, page)
    code, stderr = ended(mdops(api, "runs", "--limit", "500"), within=30)
    assert code == Exit.API_FAILED, stderr
    assert stderr.startswith("mdops: the API's runs list ") and stderr.count("\n") == 1
    assert api.asked("GET /api/ops/runbooks") == (1 if not page["runbooks"] else 2)


@pytest.mark.parametrize(
    "args",
    [("logs", "r-1", "-f"), ("run", "restart", "--request-id", "r-1", "--follow")],
    ids=["logs", "run"],
)
def test_output_into_a_pipe_closed_early_ends_mdops_quietly_with_141(api, args):
    """``mdops ... | head -1``: once head has its line and is gone, mdops's next line meets the closed pipe
    (EPIPE). It stops saying nothing, and exits 141 as a shell reports a command that SIGPIPE ended (a 1
    would read as a runbook's "failed"). Its log lines go through click (logs) or Rich (run --follow)."""
    read = threading.Event()
    api.answers["GET /api/ops/runbooks/r-1"] = lambda answer: answer.json(
        200, {"runbook": RUN, "health": None}
    )
    api.answers["POST /api/ops/runbooks/execute"] = Answer.hold
    if args[0] == "run":
        del api.answers["GET /api/ops/runbooks/r-1"]  # a new run: the API's 404 until execute

    def events(answer: Answer) -> None:
        answer.stream(RUNNING)
        read.wait()
        answer.stream(("log", {"request_id": "r-1", "name": "rb-1", "lines": [_line(2)]}))
        answer.heartbeats()

    api.answers["GET /api/ops/events"] = events
    process = mdops(api, *args)
    assert select.select([process.stdout], [], [], 30)[0], "mdops printed no line"
    assert process.stdout.readline().split() == ["INFO", "line", "1"]
    process.stdout.close()  # head has its line
    read.set()
    assert ended(process) == (Exit.PIPE, "")


def test_help_has_the_exit_codes_and_every_command_examples(invoke):
    main = invoke("--help")
    assert main.exit_code == 0
    assert "0, 1, 2, 3, 124, 125, 130  mdops run: the runbook's exit code" in main.stdout
    rows = [line.split(maxsplit=1) for line in main.stdout.splitlines()]
    for code, meaning in MEANINGS.items():
        assert [str(int(code)), meaning] in rows
    for name, command in cli.commands.items():
        helped = invoke(name, "--help")
        assert helped.exit_code == 0 and "Examples:" in helped.stdout, name
        for sub in getattr(command, "commands", {}):
            assert invoke(name, sub, "--help").exit_code == 0, f"{name} {sub}"


def test_completion_scripts_are_generated_for_each_shell(invoke):
    for shell, marker in (("bash", "complete -o nosort -F"), ("zsh", "compdef"), ("fish", "complete")):
        result = invoke("completion", shell)
        assert result.exit_code == 0 and marker in result.stdout and "_MDOPS_COMPLETE" in result.stdout


# -- the config file ------------------------------------------------------------------------------


def test_set_context_writes_the_file_0600_even_with_a_permissive_umask(invoke, config_file):
    previous = os.umask(0)
    try:
        result = invoke(
            "config",
            "set-context",
            "local",
            "--url",
            "http://127.0.0.1:8080",
            "--token",
            "-",
            input=f"{SECRET}\n",
        )
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_file.parent.stat().st_mode) == 0o700
    assert yaml.safe_load(config_file.read_text()) == {
        "contexts": {"local": {"url": "http://127.0.0.1:8080", "token": SECRET}}
    }
    assert SECRET not in result.output
    assert [p.name for p in config_file.parent.iterdir()] == ["config.yaml"]  # no temporary file left


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o660, 0o644])
def test_a_config_file_others_may_read_or_change_is_refused(invoke, config_file, mode):
    assert (
        invoke("config", "set-context", "a", "--url", "http://127.0.0.1:1", "--token", SECRET).exit_code == 0
    )
    assert invoke("config", "use-context", "a").exit_code == 0
    config_file.chmod(mode)
    for args in (("status",), ("config", "view"), ("config", "use-context", "a")):
        result = invoke(*args)
        assert result.exit_code == Exit.CONFIG, args
        assert f"is open to others (mode {mode:04o})" in result.stderr
        assert f"hint: chmod 600 {config_file}" in result.stderr
    assert stat.S_IMODE(config_file.stat().st_mode) == mode  # left as it was


def test_contexts_switch_and_view_redacts_the_tokens(invoke):
    for name, token in (("admin", SECRET), ("viewer", "viewer-" + SECRET)):
        assert (
            invoke("config", "set-context", name, "--url", "http://127.0.0.1:1", "--token", token).exit_code
            == 0
        )
    assert invoke("config", "current-context").exit_code == Exit.CONFIG  # none yet
    assert invoke("config", "use-context", "viewer").exit_code == 0
    assert invoke("config", "current-context").stdout == "viewer\n"
    listed = invoke("config", "get-contexts").stdout.splitlines()
    assert listed[0].split() == ["CURRENT", "NAME", "URL"] and listed[2].split()[:2] == ["*", "viewer"]
    view = invoke("config", "view")
    assert yaml.safe_load(view.stdout)["contexts"]["admin"]["token"] == REDACTED
    assert SECRET not in view.stdout
    unknown = invoke("config", "use-context", "nope")
    assert unknown.exit_code == Exit.CONFIG and "contexts: admin, viewer" in unknown.stderr
    assert invoke("config", "delete-context", "viewer").exit_code == 0
    assert invoke("config", "current-context").exit_code == Exit.CONFIG


@pytest.mark.parametrize(
    ("args", "input", "words"),
    [
        (("--url", "ftp://127.0.0.1/api", "--token", SECRET), None, "is not an http:// or https:// URL"),
        (("--url", "127.0.0.1:8080", "--token", SECRET), None, "is not an http:// or https:// URL"),
        (("--url", "http://", "--token", SECRET), None, "is not an http:// or https:// URL"),
        (("--url", "http://127.0.0.1:1", "--token", ""), None, "the token is empty"),
        (("--url", "http://127.0.0.1:1", "--token", "-"), "\n", "the token is empty"),
    ],
    ids=["ftp", "no-scheme", "no-host", "empty-token", "empty-token-on-stdin"],
)
def test_set_context_refuses_what_no_command_could_use(invoke, config_file, args, input, words):
    """A URL that is not http(s) or an empty token is refused when the context is set, a usage error,
    not later by every command that uses it; nothing is written."""
    result = invoke("config", "set-context", "local", *args, input=input)
    assert result.exit_code == Exit.USAGE, result.output
    assert words in result.stderr
    assert not config_file.exists()
    kept = {"url": "http://127.0.0.1:1", "token": SECRET}
    assert invoke("config", "set-context", "local", "--url", kept["url"], "--token", SECRET).exit_code == 0
    changed = invoke("config", "set-context", "local", *args, input=input)  # an existing context: the same
    assert changed.exit_code == Exit.USAGE, changed.output
    assert yaml.safe_load(config_file.read_text())["contexts"]["local"] == kept


def test_a_token_is_sent_without_the_whitespace_around_it(invoke, api, config_file):
    """A token read with its line end (``$(cat token.txt)`` of a file with CRLF line ends keeps the CR)."""
    api.answers["GET /api/ops/runbooks/r-1"] = lambda answer: answer.json(200, DONE)
    padded = f" {SECRET}\r\n"
    config_file.parent.mkdir()
    config_file.write_text(yaml.safe_dump({"contexts": {"c": {"url": api.url, "token": padded}}}))
    config_file.chmod(0o600)
    for args, env in (
        ((), {"MDOPS_API_URL": api.url, "MDOPS_API_TOKEN": padded}),
        (("--url", api.url, "--token", padded), {}),
        (("--context", "c"), {}),
    ):
        result = invoke("get", "r-1", "-o", "json", *args, **env)
        assert result.exit_code == 0, result.output
    assert [headers["Authorization"] for _, headers in api.requests] == [f"Bearer {SECRET}"] * 3
    changed = invoke("config", "set-context", "c", "--token", padded)
    assert (
        changed.exit_code == 0 and yaml.safe_load(config_file.read_text())["contexts"]["c"]["token"] == SECRET
    )


@pytest.mark.parametrize(
    "token", [f"{SECRET}\rx", f"{SECRET}\x1b", f"{SECRET[:6]}ø{SECRET[6:]}", f"{SECRET} x"]
)
def test_a_token_outside_visible_ascii_is_refused_and_never_shown(invoke, api, config_file, token):
    """No API token has such a character, and an HTTP header cannot carry it: mdops says so without the
    token, before any request, as a configuration error (set-context: a bad value, like an empty token)."""
    config_file.parent.mkdir()
    config_file.write_text(yaml.safe_dump({"contexts": {"c": {"url": api.url, "token": token}}}))
    config_file.chmod(0o600)
    for args, env in (
        ((), {"MDOPS_API_URL": api.url, "MDOPS_API_TOKEN": token}),
        (("--url", api.url, "--token", token), {}),
        (("--context", "c"), {}),
    ):
        result = invoke("status", *args, **env)
        assert result.exit_code == Exit.CONFIG, result.output
        assert "has a character outside visible ASCII (! to ~)" in result.stderr
        assert result.stderr.count("\n") == 1 and SECRET[:6] not in result.stdout + result.stderr
    assert api.requests == []
    refused = invoke("config", "set-context", "d", "--url", api.url, "--token", token)
    assert refused.exit_code == Exit.USAGE and "outside visible ASCII" in refused.stderr
    assert SECRET[:6] not in refused.stderr


@pytest.mark.parametrize(
    "args", [("status",), ("config", "view"), ("config", "set-context", "a", "--url", "http://api:8080")]
)
def test_a_config_file_where_none_can_be_is_a_configuration_error_not_an_unexpected_one(
    invoke, tmp_path, args
):
    """$MDOPS_CONFIG under a file (a typo, a path meant for another tool): neither read nor written, exit
    78 in words, not 70 as "an answer mdops does not understand"."""
    (tmp_path / "file").write_text("")
    result = invoke(*args, MDOPS_CONFIG=str(tmp_path / "file" / "config.yaml"))
    assert result.exit_code == Exit.CONFIG, result.output
    assert result.stderr.startswith("mdops: cannot read the config file ")
    assert "Not a directory" in result.stderr and result.stderr.count("\n") == 1


def test_a_config_file_that_cannot_be_written_is_a_configuration_error(invoke):
    """/proc/self/ has no file of that name (read: no contexts yet) and takes none (written: refused)."""
    result = invoke(
        "config",
        "set-context",
        "a",
        "--url",
        "http://api:8080",
        "--token",
        SECRET,
        MDOPS_CONFIG="/proc/self/m",
    )
    assert result.exit_code == Exit.CONFIG, result.output
    assert result.stderr.startswith("mdops: cannot write the config file /proc/self/m: ")
    assert result.stderr.count("\n") == 1 and SECRET not in result.stderr


def test_a_malformed_config_file_is_refused_naming_the_problem(invoke, config_file):
    config_file.parent.mkdir()
    config_file.write_text("contexts:\n  local: {token: x}\n")
    config_file.chmod(0o600)
    result = invoke("config", "view")
    assert result.exit_code == Exit.CONFIG
    assert "is malformed: contexts.local.url: Field required" in result.stderr


# -- where the connection comes from ----------------------------------------------------------------


@pytest.fixture
def contexts(invoke):
    invoke("config", "set-context", "current", "--url", "http://current", "--token", "current-token")
    invoke("config", "set-context", "other", "--url", "http://other", "--token", "other-token")
    invoke("config", "use-context", "current")


ENV = {"MDOPS_API_URL": "http://env", "MDOPS_API_TOKEN": "env-token"}


@pytest.mark.parametrize(
    ("url", "token", "context", "env", "expected"),
    [
        (None, None, None, {}, ("http://current", "current-token")),
        (None, None, None, ENV, ("http://env", "env-token")),
        (None, None, "other", ENV, ("http://other", "other-token")),
        (None, "flag-token", None, ENV, ("http://env", "flag-token")),
        ("http://flag", "flag-token", None, {}, ("http://flag", "flag-token")),
        ("http://other/", None, "other", {}, ("http://other/", "other-token")),  # the context's own server
        # --url to another server than the context's: a token given for it, never the context's.
        ("http://flag", None, "other", {}, Exit.CONFIG),
        ("http://flag", None, None, {}, Exit.CONFIG),
        ("http://flag", None, "other", {"MDOPS_API_TOKEN": "env-token"}, ("http://flag", "env-token")),
        ("http://flag", None, None, {"MDOPS_API_TOKEN": "env-token"}, ("http://flag", "env-token")),
        ("http://flag", None, None, ENV, ("http://flag", "env-token")),
        # A URL from the environment never takes the context's token, nor the reverse.
        (None, None, None, {"MDOPS_API_URL": "http://env"}, Exit.CONFIG),
        ("127.0.0.1:8080", "flag-token", None, {}, Exit.CONFIG),  # no scheme
    ],
)
def test_the_connection_comes_from_one_source_then_the_flags(
    contexts, config_file, url, token, context, env, expected
):
    environment = {"MDOPS_CONFIG": str(config_file), **env}
    if isinstance(expected, Exit):
        with pytest.raises(CliError) as raised:
            resolve(url, token, context, environment)
        assert raised.value.exit_code == expected
    else:
        connection = resolve(url, token, context, environment)
        assert (connection.url, connection.token) == expected
        assert connection.token not in repr(connection)


def test_url_to_another_server_says_that_the_contexts_token_is_not_sent_there(invoke, contexts, tmp_path):
    result = invoke("status", "--url", "http://flag")
    assert result.exit_code == Exit.CONFIG
    assert (
        "no token for http://flag (--url and MDOPS_API_TOKEN; the token of context 'current'" in result.stderr
    )
    assert "current-token" not in result.stderr
    no_context = {"MDOPS_CONFIG": str(tmp_path / "none.yaml"), "MDOPS_API_TOKEN": "env-token"}
    connection = resolve("http://flag", None, None, no_context)
    assert (connection.url, connection.token) == ("http://flag", "env-token")


def test_no_api_at_all_is_a_configuration_error_with_a_hint(invoke):
    result = invoke("status")
    assert result.exit_code == Exit.CONFIG
    assert "no API to talk to" in result.stderr and ". .mdops/stack.env" in result.stderr


# -- following, filtering, rendering ---------------------------------------------------------------


def _line(n: int, message: str | None = None) -> dict:
    """A line as the event stream gives it: with its time."""
    return {"time": f"2026-11-26T16:00:{n:02d}.000+08:00", "level": "INFO", "message": message or f"line {n}"}


def _run(status: str = "running", lines: list[dict] = (), name: str = "rb-1") -> dict:
    """A ``runbook`` event's data (the fields the follower reads)."""
    return {"runbook": {"request_id": "r-1", "name": name, "status": status}, "lines": list(lines)}


class Seen:
    """What a follower shows and warns."""

    def __init__(self) -> None:
        self.lines: list[dict] = []
        self.warnings: list[str] = []

    def follower(self) -> Follower:
        return Follower("r-1", self.lines.append, self.warnings.append)


def test_events_held_until_execute_answered_drop_an_earlier_runbook_replaced_meanwhile():
    """The API replaces a refusal of its own (the namespace's cap) with the run's Runbook of the same name:
    the refusal's events, up to its deletion, are not the run's; a deletion with nothing after it is."""
    refusal, gone = ("runbook", _run("failed")), ("deleted", {"request_id": "r-1", "name": "rb-1"})
    new, line = (
        ("runbook", _run("running")),
        ("log", {"request_id": "r-1", "name": "rb-1", "lines": [_line(1)]}),
    )
    assert this_runs([refusal, gone, new, line]) == [new, line]
    assert this_runs([refusal, gone]) == [refusal, gone]  # deleted while execute waited: it says so
    assert this_runs([new, line]) == [new, line]


def test_a_followed_run_says_why_it_waits_once_for_each_reason():
    """Held for approvals (or its window, or its lock), a run is silent: the follower says why it waits."""
    seen = Seen()
    follower = seen.follower()
    follower.event("runbook", _run("pending"))  # nothing to say yet
    held = {"runbook": {**_run("queued")["runbook"], "message": "waiting for 0 of 1 approvals"}, "lines": []}
    follower.event("runbook", held)
    follower.event("runbook", held)  # the same wait: said once
    follower.poll({"runbook": {**held["runbook"], "message": "waiting for 1 of 2 approvals", "logs": []}})
    follower.event("runbook", {"runbook": {**_run("running")["runbook"], "message": "started"}, "lines": []})
    assert seen.warnings == [
        "r-1 is queued: waiting for 0 of 1 approvals",
        "r-1 is queued: waiting for 1 of 2 approvals",
    ]


def test_a_followed_run_shows_the_lines_of_its_events_once_in_order_until_finished():
    seen = Seen()
    follower = seen.follower()
    follower.event("runbook", _run("running", [_line(1), _line(2)]))  # the run as it is now
    follower.event("log", {"request_id": "r-1", "name": "rb-1", "lines": [_line(3)]})
    follower.event("log", {"request_id": "r-1", "name": "rb-1", "lines": [_line(4), _line(5)]})
    assert not follower.finished
    follower.event("runbook", _run("success", [_line(n) for n in range(1, 6)]))  # a transition, same lines
    assert follower.finished
    assert seen.lines == [_line(n) for n in range(1, 6)] and seen.warnings == []


def test_after_a_reset_the_run_as_it_is_now_shows_only_the_lines_not_shown():
    seen = Seen()
    follower = seen.follower()
    follower.event("runbook", _run("running", [_line(n) for n in range(1, 4)]))
    follower.event("reset", {"reason": "cannot resume after that event id"})
    follower.event("runbook", _run("running", [_line(n) for n in range(2, 8)]))  # its last lines: 2 scrolled
    follower.event("log", {"request_id": "r-1", "name": "rb-1", "lines": [_line(8)]})
    assert seen.lines == [_line(n) for n in range(1, 9)] and seen.warnings == []


def test_a_reset_after_more_lines_than_the_api_keeps_says_that_lines_may_be_missing():
    seen = Seen()
    follower = seen.follower()
    follower.event("runbook", _run("running", [_line(1)]))
    follower.event("reset", {"reason": "events were missed"})
    follower.event("runbook", _run("running", [_line(n) for n in range(40, 60)]))  # nothing joins line 1
    assert seen.lines == [_line(1)] + [_line(n) for n in range(40, 60)]
    assert seen.warnings == ["log lines of r-1 may be missing here: more came than the API keeps"]


def test_lines_equal_in_time_level_and_message_cannot_be_told_apart():
    """Lines of one read of the script's output share their time (to the millisecond): their messages tell
    them apart. A window that only repeats the lines shown reads as nothing new; one more line tells."""
    seen = Seen()
    follower = seen.follower()
    follower.event("runbook", _run("running", [_line(1, "a"), _line(1, "b")]))
    follower.event("reset", {"reason": "events were missed"})  # meanwhile the script wrote "a", "b" again
    follower.event("runbook", _run("running", [_line(1, "a"), _line(1, "b")]))  # the last two lines
    assert [line["message"] for line in seen.lines] == ["a", "b"]  # the repeat is taken as shown
    follower.event("runbook", _run("running", [_line(1, "b"), _line(1, "a"), _line(1, "b")]))
    assert [line["message"] for line in seen.lines] == ["a", "b", "a", "b"]


def test_polled_lines_without_times_join_the_streamed_ones_by_level_and_message():
    """After a fallback to polling, ``GET /api/ops/runbooks/{id}`` gives the lines without their times."""
    seen = Seen()
    follower = seen.follower()
    follower.event("runbook", _run("running", [_line(1), _line(2)]))
    polled = [{"level": "INFO", "message": f"line {n}"} for n in (1, 2, 3)]
    follower.poll({"runbook": {"request_id": "r-1", "status": "success", "logs": polled}, "health": None})
    assert seen.lines == [_line(1), _line(2), polled[2]] and follower.finished


def test_the_deletion_of_the_followed_run_is_an_error_but_not_another_runbooks():
    follower = Seen().follower()
    follower.event("deleted", {"request_id": "r-1", "name": "rb-1"})  # not seen yet: not this run
    follower.event("runbook", _run("running"))
    follower.event("deleted", {"request_id": "r-1", "name": "rb-other"})  # another Runbook of this id
    with pytest.raises(CliError) as raised:
        follower.event("deleted", {"request_id": "r-1", "name": "rb-1"})
    assert raised.value.exit_code == Exit.NOT_FOUND and "r-1 was deleted" in raised.value.message


def test_without_follow_the_lines_are_kept_but_not_shown():
    follower = Follower("r-1", None, lambda message: None)
    follower.event("runbook", _run("running", [_line(1)]))
    follower.event("runbook", _run("failed", [_line(1), _line(2)]))
    assert follower.finished and follower.shown == [_line(1), _line(2)]


@pytest.mark.parametrize(
    ("status", "content_type", "verdict"),
    [
        (200, "text/event-stream; charset=utf-8", READ),
        (200, "text/html", POLL),  # not the mdops API's stream (a proxy's page)
        (404, "application/json", POLL),  # an API older than /api/ops/events
        (429, "application/json", POLL),  # too many streams open for this token
        (403, "application/json", POLL),  # a permission the stream does not share with the run's GET
        (500, "application/json", POLL),
        (401, "application/json", POLL),  # polling meets it again and says so as every command does
        (503, "application/json", RETRY),  # not ready (a restarted API syncing its cache)
        (502, "text/html", RETRY),
        (504, "text/html", RETRY),
    ],
)
def test_the_answer_to_the_event_stream_decides_read_retry_or_poll(status, content_type, verdict):
    assert stream_verdict(status, content_type) == verdict


def test_reconnects_back_off_to_8_seconds_and_give_up_within_about_a_minute():
    delays = [reconnect_delay(n) for n in range(1, RECONNECTS + 1)]
    assert delays[:5] == [0.5, 1, 2, 4, 8] and max(delays) == 8
    assert 30 < sum(delays) < 60


@pytest.mark.parametrize(
    ("error", "is_lost"),
    [
        (CliError("cannot reach the API at http://api", Exit.UNAVAILABLE), True),
        (answer_error(503, {"detail": "not synced"}, "env"), True),
        (answer_error(502, None, "env"), True),
        (answer_error(504, None, "env"), True),
        (answer_error(429, {"detail": "rate"}, "env"), False),  # an answer: no run was made
        (answer_error(500, {"detail": "exit code 125"}, "env"), False),  # an answer: the run's
        (answer_error(409, {"detail": "other parameters"}, "env"), False),
    ],
)
def test_an_answer_is_lost_only_when_the_api_gave_none(error, is_lost):
    assert lost(error) is is_lost


def test_a_lost_answer_is_asked_for_again_with_backoff_then_the_error_names_the_run(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr("cli.follow.time.sleep", slept.append)
    said: list[str] = []
    answers = iter([answer_error(503, {"detail": "not synced"}, "env"), "the answer"])

    def call():
        answer = next(answers)
        if isinstance(answer, CliError):
            raise answer
        return answer

    assert persist(call, "fo-1", said.append) == "the answer"
    assert slept == [0.5] and said == ["fo-1: the API is not ready (503): not synced; asking again in 0.5 s"]

    def unreachable():
        raise CliError("cannot reach the API at http://api", Exit.UNAVAILABLE)

    slept.clear()
    with pytest.raises(CliError) as raised:
        persist(unreachable, "fo-1", said.append)
    assert slept == [reconnect_delay(n) for n in range(1, RECONNECTS + 1)]
    assert raised.value.exit_code == Exit.UNAVAILABLE
    assert "the run fo-1 may exist" in raised.value.message
    assert "mdops get fo-1" in raised.value.hint and "mdops logs fo-1 -f" in raised.value.hint

    def refused():
        raise answer_error(409, {"detail": "other parameters"}, "env")

    with pytest.raises(CliError, match="conflict"):  # an answer: not asked again
        persist(refused, "fo-1", said.append)


@pytest.mark.parametrize("reconnects", ["unanswered", "open-but-silent"])
def test_following_gives_up_on_an_api_that_takes_connections_but_does_not_answer(api, reconnects):
    """The API freezes after the run's first event (stopped, a blocked event loop, behind a proxy that
    waits for it): each reconnect gets no answer, or an event stream's headers and then nothing. Each
    counts as an attempt in a row: mdops gives up after RECONNECTS, exit 69, as when it cannot connect."""
    api.answers["GET /api/ops/runbooks/r-1"] = lambda answer: answer.json(
        200, {"runbook": RUN, "health": None}
    )

    def events(answer: Answer) -> None:
        if api.asked("GET /api/ops/events") == 1:
            answer.stream(RUNNING)
        elif reconnects == "open-but-silent":
            answer.stream()
        answer.hold()

    api.answers["GET /api/ops/events"] = events
    code, stderr = ended(mdops(api, "logs", "r-1", "-f", request_timeout=0.2))
    assert code == Exit.UNAVAILABLE, stderr
    assert stderr.startswith("mdops: lost the event stream of the run r-1: ")
    assert stderr.endswith("; hint: mdops logs r-1 -f follows it again\n")
    assert api.asked("GET /api/ops/events") == 1 + RECONNECTS


def test_mdops_run_gives_up_on_executes_answer_lost_after_the_run_was_seen(api):
    """The run shows on the stream, which goes on with heartbeats; execute's answer is lost (503) and the
    run cannot be read (503): asking again gives up after RECONNECTS, and so does mdops (exit 69, the run
    named), rather than wait on the stream of a run whose outcome it cannot learn."""
    reads = iter([lambda answer: answer.json(404, {"detail": "no runbook r-1"})])
    not_ready = lambda answer: answer.json(503, {"detail": "not synced"})  # noqa: E731
    api.answers["GET /api/ops/runbooks/r-1"] = lambda answer: next(reads, not_ready)(answer)
    api.answers["POST /api/ops/runbooks/execute"] = not_ready

    def events(answer: Answer) -> None:
        answer.stream(RUNNING)
        answer.heartbeats()

    api.answers["GET /api/ops/events"] = events
    code, stderr = ended(mdops(api, "run", "restart", "--request-id", "r-1"))
    assert code == Exit.UNAVAILABLE, stderr
    *attempts, gave_up = stderr.splitlines()
    assert len(attempts) == RECONNECTS and all("asking again in" in line for line in attempts)
    assert f"gave up after {RECONNECTS} attempts: the run r-1 may exist and go on" in gave_up


# A run the namespace's cap refused (MDOPS_MAX_UNFINISHED_PER_NAMESPACE): the controller ends its Runbook at
# once, failed as one that could not execute (125), and execute answers 429, its request id left unused.
# A run whose script could not execute ends alike, and execute answers 500.
ENDED_AT_ONCE = {
    **RUN,
    "name": "r-1",
    "status": "failed",
    "exit_code": 125,
    "finished_at": "2026-11-26T16:00:01.000+08:00",
    "logs": [],
}
EXECUTE_ANSWERS = {
    429: "request 'r-1': not run: 2 Runbooks in this namespace are unfinished, at the cap of 2",
    500: "script execution error (exit code 125) for request 'r-1', command 'restart': script not found",
}


def _answer_execute_once_the_run_was_read_again(api: FakeApi, status: int) -> None:
    """Execute answers ``status`` once mdops has read the run again after its first look (which it does
    only when it has decided without execute's answer), or when it has not 2 s on (it waits for the answer,
    as it must); its first look finds none."""
    read = "GET /api/ops/runbooks/r-1"
    api.answers[read] = lambda answer: (
        answer.json(404, {"detail": "no runbook with request_id 'r-1'"})
        if api.asked(read) == 1
        else answer.json(200, {"runbook": ENDED_AT_ONCE, "health": None})
    )

    def execute(answer: Answer) -> None:
        deadline = time.monotonic() + 2
        while api.asked(read) < 3 and time.monotonic() < deadline and not api.closing.wait(0.01):
            pass
        answer.json(status, {"detail": EXECUTE_ANSWERS[status]})

    api.answers["POST /api/ops/runbooks/execute"] = execute


@pytest.mark.parametrize(
    ("how", "args"),
    [("stream", ()), ("stream", ("--follow",)), ("polled", ()), ("no-wait", ("--no-wait",))],
    ids=["stream", "stream-follow", "polled", "no-wait"],
)
@pytest.mark.parametrize(("status", "code"), [(429, Exit.UNAVAILABLE), (500, 125)], ids=["refused", "125"])
def test_a_run_that_ends_before_executes_answer_exits_as_the_answer_says(
    invoke, api, how, args, status, code
):
    """The end of the run shows (on the stream, or polled where the stream cannot be had or with --no-wait)
    before execute's answer: the answer decides. A 429 made no run, try again later (69), not the run's 125;
    a 500 is a run that could not execute (125; --no-wait: the API has it, 0)."""
    _answer_execute_once_the_run_was_read_again(api, status)

    def events(answer: Answer) -> None:
        if how == "polled":  # the token's streams are all open
            answer.json(429, {"detail": "token 'admin' holds 8 event streams"})
            return
        answer.stream()  # no run yet
        while not api.asked("POST /api/ops/runbooks/execute") and not api.closing.wait(0.01):
            pass
        answer.stream(("runbook", {"runbook": ENDED_AT_ONCE, "lines": []}))
        answer.heartbeats()

    api.answers["GET /api/ops/events"] = events
    result = invoke("run", "restart", "--request-id", "r-1", *args, "--url", api.url, "--token", SECRET)
    assert result.exit_code == (0 if how == "no-wait" and status == 500 else code), result.output
    if status == 429:
        assert result.stderr == (
            f"mdops: too many requests (429): {EXECUTE_ANSWERS[429]}; hint: try again later\n"
        )
    assert api.asked("POST /api/ops/runbooks/execute") == 1


@pytest.mark.parametrize("how", ["stream", "polled"])
@pytest.mark.parametrize(
    ("again", "code"), [("refused", Exit.UNAVAILABLE), ("runs-on", 0)], ids=["refused-again", "runs-on"]
)
def test_a_lost_answer_and_a_run_found_finished_ask_execute_again(invoke, api, how, again, code):
    """Execute's answer is lost (503) after the API made the Runbook, which the namespace's cap ended at
    once (failed, 125). Asked again, mdops finds a finished run: not taken for its own on its look, it sends
    execute again, whose answer says what it is: 429 while the cap is full (69, not 125); or, the cap having
    room now, the API replaces the refusal with a run that goes on past execute's wait (202), followed to
    its end (0, not 70 for a run read without an exit code)."""
    read, execute = "GET /api/ops/runbooks/r-1", "POST /api/ops/runbooks/execute"
    new_run = {**RUN, "name": "r-1"}
    done = {**new_run, "status": "success", "exit_code": 0, "finished_at": "2026-11-26T16:00:09.000+08:00"}

    replaced: list[Answer] = []  # the reads of the run that replaced the refusal

    def reads(answer: Answer) -> None:
        if api.asked(read) == 1:
            answer.json(404, {"detail": "no runbook with request_id 'r-1'"})
        elif api.asked(execute) < 2 or again == "refused":
            answer.json(200, {"runbook": ENDED_AT_ONCE, "health": None})
        else:  # running at its first read, then done
            replaced.append(answer)
            answer.json(200, {"runbook": new_run if len(replaced) == 1 else done, "health": None})

    api.answers[read] = reads
    api.answers[execute] = lambda answer: (
        answer.json(503, {"detail": "not synced"})
        if api.asked(execute) == 1
        else answer.json(429, {"detail": EXECUTE_ANSWERS[429]})
        if again == "refused"
        else answer.json(202, {"runbook": new_run, "health": None})
    )

    def events(answer: Answer) -> None:
        if how == "polled":
            answer.json(429, {"detail": "token 'admin' holds 8 event streams"})
            return
        answer.stream()
        while not api.asked(execute) and not api.closing.wait(0.01):
            pass
        answer.stream(("runbook", {"runbook": ENDED_AT_ONCE, "lines": []}))
        answer.heartbeats()

    api.answers["GET /api/ops/events"] = events
    result = invoke("run", "restart", "--request-id", "r-1", "--url", api.url, "--token", SECRET)
    assert result.exit_code == code, result.output
    assert api.asked(execute) == 2


def _a_run_that_succeeds_once_executed(api: FakeApi, execute: Callable[[int], tuple]) -> None:
    """The API of a run of r-1 that no stream shows (the token's streams are all open: mdops polls), read as
    the API's 404 until execute has answered 200, then as done. ``execute(n)`` gives the status, body and
    headers of the n-th execute's answer."""
    read, executed = "GET /api/ops/runbooks/r-1", "POST /api/ops/runbooks/execute"
    made: list[bool] = []
    api.answers["GET /api/ops/events"] = lambda answer: answer.json(429, {"detail": "8 event streams"})
    api.answers[read] = lambda answer: (
        answer.json(200, DONE) if made else answer.json(404, {"detail": "no runbook r-1"})
    )

    def answer_execute(answer: Answer) -> None:
        status, body, headers = execute(api.asked(executed))
        if status == 200:
            made.append(True)
        answer.json(status, body, **headers)

    api.answers[executed] = answer_execute


DONE = {"runbook": {**RUN, "status": "success", "exit_code": 0}, "health": None}


def test_mdops_run_asks_again_when_its_first_call_finds_the_api_not_ready(invoke, api):
    """The API restarts as mdops run starts: its first call, the look for the request id, gets a 503 (a
    refused connection and a timeout alike). mdops asks again, says so, and runs it once."""
    _a_run_that_succeeds_once_executed(api, lambda n: (200, DONE, {}))
    read = "GET /api/ops/runbooks/r-1"
    looked = api.answers[read]
    api.answers[read] = lambda answer: (
        answer.json(503, {"detail": "not synced"}) if api.asked(read) == 1 else looked(answer)
    )
    result = invoke("run", "restart", "--request-id", "r-1", "--url", api.url, "--token", SECRET)
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "mdops: r-1: the API is not ready (503): not synced; asking again in 0.5 s (the same request id)\n"
    )
    assert api.asked("POST /api/ops/runbooks/execute") == 1


def test_an_execute_past_the_tokens_rate_is_sent_again_when_the_api_says(invoke, api):
    """A 429 with Retry-After (the token's rate): the API says when; mdops waits that long, says so, and
    sends execute again with the same request id."""
    rate = {"detail": "token 'admin' may create 1 per 1 second"}
    _a_run_that_succeeds_once_executed(
        api, lambda n: (429, rate, {"Retry_After": "1"}) if n == 1 else (200, DONE, {})
    )
    result = invoke("run", "restart", "--request-id", "r-1", "--url", api.url, "--token", SECRET)
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"mdops: r-1: too many requests (429): {rate['detail']}; asking again in 1 s (the same request id)\n"
    )
    assert api.asked("POST /api/ops/runbooks/execute") == 2


@pytest.mark.parametrize(
    "refusal",
    [
        (429, {"detail": "token 'admin' may create 200 per 1 day"}, {"Retry_After": "86000"}),
        (429, {"detail": "token 'admin' has 2 unfinished runbooks"}, {}),  # until one ends: hours, maybe
        (409, {"detail": "request_id 'r-1' was used with other parameters"}, {}),
        (422, {"detail": "timeout_seconds: too large"}, {}),
    ],
    ids=["429-a-day-away", "429-a-cap", "409", "422"],
)
def test_an_execute_refused_for_longer_than_mdops_waits_or_for_good_is_not_sent_again(invoke, api, refusal):
    status, body, _ = refusal
    _a_run_that_succeeds_once_executed(api, lambda n: refusal)
    result = invoke("run", "restart", "--request-id", "r-1", "--url", api.url, "--token", SECRET)
    assert result.exit_code == answer_error(status, body, "env").exit_code, result.output
    assert result.stderr.count("\n") == 1 and body["detail"] in result.stderr
    assert api.asked("POST /api/ops/runbooks/execute") == 1


@pytest.mark.parametrize(
    ("held", "said"),
    [
        ("GET /api/ops/runbooks/r-1", "mdops: interrupted\n"),  # before execute: no run was asked for
        (
            "POST /api/ops/runbooks/execute",
            "mdops: interrupted; the run r-1 goes on; hint: mdops logs r-1 -f\n",
        ),
    ],
    ids=["before-execute", "after-execute"],
)
def test_ctrl_c_in_mdops_run_speaks_of_the_run_only_once_it_was_asked_for(api, held, said):
    api.answers[held] = Answer.hold
    api.answers["GET /api/ops/events"] = lambda answer: (answer.stream(), answer.heartbeats())
    process = mdops(api, "run", "restart", "--request-id", "r-1")
    wait_until(lambda: api.asked(held), 30, f"mdops to send {held}")
    process.send_signal(signal.SIGINT)  # Ctrl-C
    assert ended(process) == (130, said)
    assert api.asked("POST /api/ops/runbooks/execute") == (held == "POST /api/ops/runbooks/execute")


def test_ctrl_c_in_logs_follow_exits_130_not_as_a_followed_end_and_says_the_run_goes_on(api):
    api.answers["GET /api/ops/runbooks/r-1"] = lambda answer: answer.json(
        200, {"runbook": RUN, "health": None}
    )
    api.answers["GET /api/ops/events"] = lambda answer: (answer.stream(RUNNING), answer.heartbeats())
    process = mdops(api, "logs", "r-1", "-f")
    wait_until(lambda: api.asked("GET /api/ops/events"), 30, "mdops to follow the run")
    process.send_signal(signal.SIGINT)  # Ctrl-C
    assert ended(process) == (130, "mdops: interrupted; the run r-1 goes on; hint: mdops logs r-1 -f\n")


def test_ctrl_c_again_while_mdops_says_it_was_interrupted_changes_nothing(api):
    """People press Ctrl-C again when the first seems slow: while mdops stops (its threads, its connections)
    and says so, another does not end it by the signal instead (-2 here, a shell's 130 with no word)."""
    api.answers["GET /api/ops/runbooks/r-1"] = lambda answer: answer.json(
        200, {"runbook": RUN, "health": None}
    )
    api.answers["GET /api/ops/events"] = lambda answer: (answer.stream(RUNNING), answer.heartbeats())
    process = mdops(api, "logs", "r-1", "-f")
    assert process.stdout.readline().split() == ["INFO", "line", "1"]  # following
    deadline = time.monotonic() + 30
    while process.poll() is None:  # Ctrl-C, again and again until mdops has exited
        assert time.monotonic() < deadline, "mdops still ran 30 s after its first Ctrl-C"
        process.send_signal(signal.SIGINT)
    code, stderr = ended(process)
    assert (code, stderr.count("\n")) == (130, 1), stderr
    assert stderr.startswith("mdops: interrupted")


# Ctrl-C at the moment mdops imports Rich, as it starts: the finder, asked for Rich first, sends SIGINT to
# its own process, whose handler runs then, in the middle of that import.
CTRL_C_AT_START = """
import os, signal, sys

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "rich":
            os.kill(os.getpid(), signal.SIGINT)

sys.meta_path.insert(0, CtrlC())
import cli.main
cli.main.main()
"""


def test_ctrl_c_while_mdops_starts_is_one_line_and_130_not_an_imports_traceback():
    env = {name: value for name, value in os.environ.items() if not name.startswith("MDOPS_")}
    started = subprocess.run(
        [*WITH_CTRL_C, sys.executable, "-c", CTRL_C_AT_START, "status"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (started.returncode, started.stderr) == (130, "mdops: interrupted\n")


def _text(renderable) -> str:
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def test_a_failed_gate_reads_in_words():
    view = {
        "runbook": {
            "request_id": "hc-1",
            "command": "health_check",
            "exit_code": 3,
            "status": "failed",
            "finished_at": "2026-01-01T10:00:00+08:00",
            "logs": [{"level": "ERROR", "message": "health gate failed: coverage_ratio 0.9 < 0.99"}],
        },
        "health": {
            "coverage_ratio": 0.9,
            "gate": {"passed": False, "enforced": True, "failures": ["coverage_ratio 0.9 < 0.99"]},
        },
    }
    text = _text(render.run_view(view))
    assert "failed (exit code 3: health gate failed)" in text
    assert "gate FAILED: coverage_ratio 0.9 < 0.99 (enforced)" in text
    assert "ERROR   health gate failed" in text
    ended = "health_check hc-1: failed (exit code 3: health gate failed)"
    assert _text(render.result_line(view)).strip() == ended


def test_a_waiting_run_says_why():
    runbook = {
        "request_id": "fo-1",
        "command": "failover",
        "exit_code": None,
        "finished_at": None,
        "logs": [],
    }
    held = {**runbook, "status": "queued", "message": "waiting for 0 of 1 approvals (bob) until 10:15"}
    assert "waits       waiting for 0 of 1 approvals (bob) until 10:15" in _text(
        render.run_view({"runbook": held})
    )
    running = {**runbook, "status": "running", "message": "started"}
    assert "waits" not in _text(render.run_view({"runbook": running}))


def test_the_metrics_tiles_say_which_are_stale():
    summary = {
        "coverage_ratio": {
            "metric": "m",
            "value": 0.999,
            "unit": None,
            "stale": False,
            "context": {"expected_total": 1280},
        },
        "failover_latency_ms": {
            "metric": "m",
            "value": None,
            "unit": "ms",
            "stale": True,
            "context": {"note": "no exporter sample"},
        },
    }
    rows = _text(render.metrics_table(summary)).splitlines()
    assert rows[1].split() == ["coverage_ratio", "0.999", "-", "expected_total", "1280"]
    assert rows[2].split() == ["failover_latency_ms", "-", "ms", "stale;", "no", "exporter", "sample"]


def test_a_log_lines_control_characters_are_shown_not_sent_to_the_terminal():
    """A script's output is kept as it wrote it: an escape sequence in it (clear the screen, set the
    clipboard) is shown as text, never acted on by the terminal that shows the log."""
    line = {"level": "INFO", "message": "a\x1b[2J\x1b]52;c;cHduZWQ=\x07b\x9bc"}
    console = Console(file=io.StringIO(), width=120, force_terminal=True, color_system=None)
    console.print(render.log_line(line))
    assert console.file.getvalue() == "INFO    a\\x1b[2J\\x1b]52;c;cHduZWQ=\\x07b\\x9bc\n"


def test_a_health_reports_control_characters_are_shown_not_sent_to_the_terminal():
    """A script writes its health report as it likes: its extra keys and values, as its log lines."""
    view = {"runbook": {**RUN, "logs": []}, "health": {"coverage_ratio": 1.0, "venue\x1b[2J": "up\x07"}}
    assert "venue\\x1b[2J up\\x07" in _text(render.run_view(view))


def test_a_status_message_and_a_runs_fields_are_shown_escaped_too():
    """What the controller or a person wrote into a Runbook's status reaches the terminal as text."""
    waiting = {**RUN, "status": "queued", "message": "waits for\x1b]0;owned\x07 rb-0", "logs": []}
    assert "waits for\\x1b]0;owned\\x07 rb-0" in _text(render.run_view({"runbook": waiting}))
    listed = {**RUN, "dry_run": False, "enforce": False, "requested_by": "ops\x1b[2J", "created_at": None}
    assert "ops\\x1b[2J" in _text(render.runs_table([listed]))
    read = {**RUN_SUMMARY, "reason": "why\x1b]0;owned\x07", "profile": "p\x1b[2J", "requested_by": None}
    shown = _text(render.run_view({"runbook": read}))
    assert "asked by    -: why\\x1b]0;owned\\x07" in shown and "parameters  profile p\\x1b[2J " in shown


def test_a_log_lines_bidirectional_controls_are_shown_escaped_not_reordering_the_line():
    """A script's line "ok \u202eliaf" would read "ok fail" in a terminal that honours the override."""
    line = {"timestamp": "2026-12-06T10:00:00+08:00", "level": "INFO", "message": "ok \u202eliaf\u2069"}
    shown = _text(render.run_view({"runbook": {**RUN, "logs": [line]}}))
    assert "ok \\u202eliaf\\u2069" in shown and "\u202e" not in shown


def test_the_runs_list_says_why_a_run_that_has_not_started_waits_or_was_never_run():
    held = {**RUN_SUMMARY, "status": "queued", "message": "waiting for 0 of 1 approvals until 2026-12-06"}
    shown = _text(render.runs_table([held, {**held, "status": "success", "dry_run": True}]))
    assert "waiting for 0 of 1 approvals until 2026-12-06" in shown
    assert shown.count("waiting for") == 1 and "dry run" in shown
    # Refused without executing (no exit code): why, as mdops get's log says; a script that failed: not.
    rejected = {**held, "status": "failed", "message": "rejected by bob: not during the auction"}
    failed = {**held, "request_id": "r-2", "status": "failed", "exit_code": 1, "message": "exit code 1"}
    shown = _text(render.runs_table([rejected, failed]))
    assert "rejected by bob: not during the auction" in shown and "exit code 1" not in shown


def test_a_decision_reads_in_words_with_its_comment_escaped():
    made = {"request_id": "fo-1", "decision": "Reject", "approver": "bob", "requester": "alice"}
    assert (
        _text(render.decision_line({**made, "comment": ""})) == "rejected fo-1 (asked for by alice), as bob\n"
    )
    shown = _text(render.decision_line({**made, "decision": "Approve", "comment": "ok\x1b]0;owned\x07"}))
    assert shown == "approved fo-1 (asked for by alice), as bob: ok\\x1b]0;owned\\x07\n"


def test_a_chart_is_drawn_with_its_title_and_times():
    series = {
        "metric": "md_throughput_mps",
        "unit": "msg/s",
        "points": [
            {"timestamp": f"2026-01-01T10:0{i}:00+08:00", "value": v} for i, v in enumerate([5, 7, None, 6])
        ],
    }
    text = _text(render.chart(series, 60, 12))
    assert "md_throughput_mps (msg/s)" in text
    assert "10:00:00" in text and "┤" in text
    assert "\x1b[" not in text  # no colour when the console has none


def test_a_chart_of_one_sample_shows_its_time_only():
    """A fresh stack's Prometheus has one sample in a long window: plotext alone spread that one time into an
    axis of its own making, running backwards (20:39 on the left, 13:59 on the right)."""
    series = {
        "metric": "md_subscription_coverage_ratio",
        "unit": None,
        "points": [{"timestamp": "2026-12-05T17:19:56+08:00", "value": 1}],
    }
    text = _text(render.chart(series, 80, 10))
    assert re.findall(r"\d\d:\d\d:\d\d", text) == ["17:19:56"]


def test_the_status_points_to_mdops_runs_for_more_than_its_recent_runs():
    """mdops runs reads the API's runs list a page at a time: it is not bound to the status' history (one
    run on a new stack, MDOPS_API_HISTORY at most), as the heading said ("mdops runs lists up to 1")."""
    listed = {**RUN, "dry_run": False, "enforce": False, "requested_by": "admin", "created_at": None}
    status = {"environment_mode": "live", "last_runbook": listed, "runbook_history": [listed]}
    text = _text(render.status_view(status))
    assert "recent runs (older ones: mdops runs --limit N)" in text
    assert "up to 1" not in text


def test_a_run_refused_without_executing_reads_as_not_run():
    """A run its change window or a person refused has no exit code (no script ran): failed, not run."""
    view = {
        "runbook": {
            "request_id": "rs-1",
            "command": "restart",
            "exit_code": None,
            "status": "failed",
            "finished_at": "2026-01-01T10:00:00+08:00",
            "logs": [{"level": "ERROR", "message": "rejected by bob: not during the auction"}],
        },
        "health": None,
    }
    assert _text(render.result_line(view)).strip() == "restart rs-1: failed (not run)"
    assert "ERROR   rejected by bob" in _text(render.run_view(view))


def test_a_cancel_and_how_a_run_ended_read_in_words():
    def view(status, exit_code, reason, cancel=None):
        condition = {"type": "Succeeded", "status": "False", "reason": reason, "message": ""}
        runbook = {
            "request_id": "fo\x1b[2J-1",
            "command": "failover",
            "status": status,
            "exit_code": exit_code,
        }
        return {"runbook": runbook, "conditions": [condition], "cancel": cancel}

    assert render.ending(view("success", 0, "Succeeded")) == "success, exit code 0"
    assert render.ending(view("failed", None, "Rejected")) == "failed, Rejected"  # refused: no exit code
    assert render.ending({"runbook": {"status": "failed", "exit_code": None}}) == "failed"
    assert render.succeeded_reason(view("failed", 130, "Cancelled")) == "Cancelled"
    cancelled = view("running", None, "Running", {"requested_by": "bob", "reason": "wrong\x07 venue"})
    assert _text(render.cancel_line(cancelled)).strip() == (
        "cancel of fo\\x1b[2J-1 recorded, by bob: wrong\\x07 venue (running)"  # escaped, never acted on
    )
    nobody = view("pending", None, "Pending", {"requested_by": None, "reason": ""})
    assert _text(render.cancel_line(nobody)).strip() == "cancel of fo\\x1b[2J-1 recorded, by - (pending)"


def test_schedules_and_the_venues_session_read_in_words():
    schedules = [
        {
            "name": "hc",
            "schedule": "every 5m during open",
            "command": "health_check",
            "suspended": False,
            "next_slots": ["2026-01-05T13:00:00+08:00"],
            "last_slot": "2026-01-05T11:55:00+08:00",
            "last_result": "success",
            "missed_slots": 2,
            "skipped_slots": 0,
            "problem": None,
        },
        {
            "name": "drill",
            "schedule": "0 10 * * 6 (+08:00)",
            "command": "drill",
            "suspended": True,
            "next_slots": [],
            "last_slot": None,
            "last_result": None,
            "missed_slots": 0,
            "skipped_slots": 0,
            "problem": None,
        },
    ]
    text = _text(render.schedules_table(schedules))  # long cells fold at 120 columns
    header = ["NAME", "SCHEDULE", "COMMAND", "NEXT", "LAST", "RESULT", "MISSED", "SKIPPED", "NOTE"]
    assert text.splitlines()[0].split() == header
    assert "2026-01-05T13:00" in text and "success" in text and "suspended" in text
    session = {"venue": "XHKG", "state": "open", "next_open": "2026-01-06T09:30:00+08:00"}
    session["next_close"] = "2026-01-05T16:00:00+08:00"
    assert render.session_line(session) == (
        "XHKG open, closes 2026-01-05T16:00:00+08:00, opens 2026-01-06T09:30:00+08:00"
    )
    closed = {**session, "state": "closed", "next_open": "2026-01-05T01:30:00Z"}  # another zone: by instant
    assert render.session_line(closed) == (
        "XHKG closed, opens 2026-01-05T01:30:00Z, closes 2026-01-05T16:00:00+08:00"
    )
    past_the_table = {**session, "state": "closed", "next_open": None, "next_close": None}
    assert render.session_line(past_the_table) == "XHKG closed"
    assert render.session_line({"venue": "XHKG", "state": None, "note": "loading"}) == "XHKG (loading)"


def test_why_a_followed_run_waits_is_shown_escaped_as_its_log_lines_are():
    """``mdops logs -f`` and ``run -f`` say why a run waits from its status message, which whoever may write
    the status (or a refusal the controller quotes) fills: its control characters reach the terminal as
    text, as in ``mdops get``."""
    seen = Seen()
    held = {"runbook": {**_run("queued")["runbook"], "message": "waits\x1b]0;owned\x07\x1b[2J"}, "lines": []}
    seen.follower().event("runbook", held)
    assert seen.warnings == ["r-1 is queued: waits\\x1b]0;owned\\x07\\x1b[2J"]


def test_a_schedules_problem_is_shown_escaped():
    """A schedule's problem is its Ready condition's message, from its status: shown as text too."""
    listed = {
        "name": "hc",
        "schedule": "every 5s",
        "command": "health_check",
        "next_slots": [],
        "last_slot": None,
        "missed_slots": 0,
        "skipped_slots": 0,
        "suspended": False,
        "problem": "cannot\x1b[2J run\x07",
    }
    shown = _text(render.schedules_table([listed]))
    assert "cannot\\x1b[2J run\\x07" in shown and "\x1b" not in shown


def _listed(request_id: str, **fields) -> dict:
    created = {"created_at": "2026-12-05T23:47:49+08:00", "requested_by": "alice", "profile": "primary"}
    return {**RUN_SUMMARY, **created, "window": "day", "request_id": request_id, **fields}


RUNS_PAGE = {
    "runbooks": [
        _listed(
            "9b1c5a2e-3f4d-4e6a-8b7c-1d2e3f4a5b6c", command="health_check", status="success", exit_code=0
        ),
        _listed(
            "fo-2026-12-03",
            command="failover",
            status="queued",
            profile="backup",
            message="waiting for 0 of 1 approvals (bob) until 2026-12-06T00:17:49+08:00",
        ),
        _listed("hc-1", status="failed", exit_code=3, requested_by="schedule:nightly-health", dry_run=True),
    ],
    "matched": 3,
    "next_cursor": None,
}


def test_the_runs_list_reads_whole_at_80_columns_and_as_a_table_when_wide(invoke, api):
    """At 80 columns (an uuid for a request id, the default) every run is a line with its request id,
    command, result, exit code and created time whole (month-day hour:minute), and under it who asked, its
    parameters and why it waits; nothing broken in the middle of a word. Wide, a column each, times whole."""
    api.answers["GET /api/ops/runbooks"] = lambda answer: answer.json(200, RUNS_PAGE)
    narrow = invoke("runs", "--url", api.url, "--token", SECRET, COLUMNS="80")
    assert narrow.exit_code == 0, narrow.output
    lines = narrow.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, narrow.stdout
    uuid = RUNS_PAGE["runbooks"][0]["request_id"]
    assert [line.split() for line in lines[:2]] == [
        ["REQUEST", "ID", "COMMAND", "RESULT", "EXIT", "CREATED"],
        [uuid, "health_check", "success", "0", "12-05", "23:47"],
    ]
    assert lines[2] == "  by alice · profile primary · window day"
    assert lines[3].split() == ["fo-2026-12-03", "failover", "queued", "-", "12-05", "23:47"]
    assert lines[4:6] == [  # wrapped under its first line
        "  by alice · profile backup · window day · waiting for 0 of 1 approvals (bob)",
        "  until 2026-12-06T00:17:49+08:00",
    ]
    assert lines[6].split() == ["hc-1", "restart", "failed", "3", "12-05", "23:47"]
    assert lines[7:] == ["  by schedule:nightly-health · profile primary · window day · dry run"]
    wide = invoke("runs", "--url", api.url, "--token", SECRET, COLUMNS="240")
    rows = [row.split() for row in wide.stdout.splitlines()]
    assert rows[0] == [
        "REQUEST",
        "ID",
        "COMMAND",
        "RESULT",
        "EXIT",
        "PROFILE",
        "WINDOW",
        "BY",
        "CREATED",
        "NOTE",
    ]
    created = "2026-12-05T23:47:49+08:00"
    waits = ["waiting", "for", "0", "of", "1", "approvals", "(bob)", "until", "2026-12-06T00:17:49+08:00"]
    assert rows[1:] == [
        [uuid, "health_check", "success", "0", "primary", "day", "alice", created],
        ["fo-2026-12-03", "failover", "queued", "-", "backup", "day", "alice", created, *waits],
        [
            "hc-1",
            "restart",
            "failed",
            "3",
            "primary",
            "day",
            "schedule:nightly-health",
            created,
            "dry",
            "run",
        ],
    ]


def _whoami(permissions: list[str]) -> dict:
    defaults = {"mode": "live", "window": "auto", "profile": "primary", "config": "default", "enforce": False}
    return {
        "name": "ci",
        "permissions": permissions,
        "commands": ["health_check"],
        "mutating_commands": [],
        "execute_defaults": {**defaults, "timeout_seconds": 600},
        "time_zone": "Asia/Hong_Kong",
        "events_heartbeat_seconds": 15.0,
        "execute_wait_seconds": 10.0,
    }


@pytest.mark.parametrize(
    ("whoami", "hint"),
    [
        (
            _whoami(["runbooks:execute:health_check"]),
            "`mdops runs`, with a token that has status:read, lists",
        ),
        (_whoami(["status:read"]), "`mdops runs` lists"),
        (None, "`mdops runs` lists"),  # an API that does not say: the hint as it was
    ],
    ids=["execute-only", "reader", "unknown"],
)
def test_an_unknown_runs_hint_is_the_runs_list_for_a_token_that_may_read_it(invoke, api, whoami, hint):
    """A token that may execute but not read others' runs (no status:read) cannot list them either."""
    if whoami is not None:
        api.answers["GET /api/ops/whoami"] = lambda answer: answer.json(200, whoami)
    api.answers["GET /api/ops/runbooks/hc-9"] = lambda answer: answer.json(404, {"detail": "no runbook hc-9"})
    for command in ("get", "logs"):
        result = invoke(command, "hc-9", "--url", api.url, "--token", SECRET)
        assert result.exit_code == Exit.NOT_FOUND, result.output
        assert (
            result.stderr == f"mdops: not found (404): no runbook hc-9; hint: {hint} the recent request ids\n"
        )


def test_a_runs_time_that_is_none_is_shown_as_written_at_any_width():
    """The API shows a creation time no zone can hold as written (api.render.iso): the compact form, which
    shortens a time, keeps one it cannot read as it is, rather than fail."""
    odd = {**RUNS_PAGE["runbooks"][0], "created_at": "+10000-01-01T00:00:00Z"}
    for width in (80, 240):
        console = Console(file=io.StringIO(), width=width, color_system=None)
        console.print(render.runs_table([odd]))
        assert "+10000-01-01T00:00:00Z" in console.file.getvalue()


def test_a_request_id_too_long_for_80_columns_is_a_line_of_its_own_the_time_kept_whole():
    """A schedule's run (``schedule.<name>.<slot>``): its id does not push every run's cells past 80
    columns, where a time would be broken over two lines; it has a line of its own, its cells under it."""
    scheduled = {**RUNS_PAGE["runbooks"][0], "request_id": "schedule.nightly-health.20261205t154700z"}
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(render.runs_table([RUNS_PAGE["runbooks"][0], scheduled]))
    lines = console.file.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[3] == "schedule.nightly-health.20261205t154700z"
    assert lines[1].split()[1:] == lines[4].split() == ["health_check", "success", "0", "12-05", "23:47"]
    assert lines[1].index("health_check") == lines[4].index("health_check")


def test_no_runs_is_said_in_words_and_an_empty_list_in_json(invoke, api):
    api.answers["GET /api/ops/runbooks"] = lambda answer: answer.json(
        200, {"runbooks": [], "matched": 0, "next_cursor": None}
    )
    connection = ("--url", api.url, "--token", SECRET)
    assert invoke("runs", *connection).stdout == "no runs\n"
    assert invoke("runs", "--who", "bob", *connection).stdout == "no runs match the filters\n"
    assert json.loads(invoke("runs", "--who", "bob", "-o", "json", *connection).stdout) == []


def test_no_schedules_is_said_in_words_and_an_empty_list_in_json(invoke, api):
    """A header line alone read as a listing cut short, or a table still to come."""
    api.answers["GET /api/ops/schedules"] = lambda answer: answer.json(
        200, {"schedules": [], "truncated": False}
    )
    connection = ("--url", api.url, "--token", SECRET)
    assert invoke("schedules", *connection).stdout == "no schedules\n"
    assert json.loads(invoke("schedules", "-o", "json", *connection).stdout) == []


def test_schedules_the_api_listed_in_part_are_said_to_be_more(invoke, api):
    """The API lists at most 200 schedules an answer (``truncated``): mdops says so, the listing being the
    API's first page, not every schedule."""
    listed = {
        "name": "hc",
        **dict.fromkeys(("schedule", "command", "profile", "mode", "concurrency_policy", "next_slots")),
        **dict.fromkeys(("last_slot", "last_runbook", "last_request_id", "last_result", "problem")),
        **{"suspended": False, "missed_slots": 0, "skipped_slots": 0},
    }
    answers = {"truncated": {"schedules": [listed], "truncated": True}, "whole": {"schedules": [listed]}}
    answers["whole"]["truncated"] = False
    connection = ("--url", api.url, "--token", SECRET)
    for case, answer in answers.items():
        api.answers["GET /api/ops/schedules"] = lambda request, answer=answer: request.json(200, answer)
        for form in ("table", "json"):
            done = invoke("schedules", "-o", form, *connection)
            assert done.exit_code == 0 and "hc" in done.stdout, done.output
            said = "mdops: the API listed its first 1 schedules only: there are more\n"
            assert done.stderr == (said if case == "truncated" else ""), done.stderr


@pytest.mark.parametrize(
    ("command", "code", "state", "flags", "said"),
    [
        ("failover", 124, None, (), True),  # stopped at its timeout: the switch may have happened
        ("failover", 125, None, (), True),  # its runner died
        ("failover", 1, {"active_profile": "primary"}, (), False),  # it failed and said where it left things
        ("health_check", 124, None, (), False),  # it changes nothing
        ("failover", 124, None, ("--dry-run",), False),  # nor does a dry run
        ("failover", 0, {"active_profile": "backup"}, (), False),
    ],
    ids=["timed-out", "runner-died", "reported", "health-check", "dry-run", "success"],
)
def test_a_run_that_ended_without_reporting_the_state_it_left_says_what_to_do(
    invoke, api, command, code, state, flags, said
):
    """A failover stopped at its timeout (or whose runner died) may have switched the feed, but reported
    nothing: mdops status still shows the source from before it. The person on shift is told so, and how to
    learn the state now; mdops get shows what a run left."""
    ended = {**RUN, "command": command, "exit_code": code, "status": "success" if code == 0 else "failed"}
    runbook = {**RUN_SUMMARY, **ended, "dry_run": bool(flags)}
    # The API says whether the run may have changed the platform unreported (its own tests say when).
    read = {"runbook": runbook, "health": None, "state": state, "state_unreported": said}
    _a_run_that_succeeds_once_executed(api, lambda n: (200, {"runbook": ended, "health": None}, {}))
    api.answers["GET /api/ops/runbooks/r-1"] = lambda answer: (
        answer.json(200, read)
        if api.asked("POST /api/ops/runbooks/execute")
        else answer.json(404, {"detail": "no"})
    )
    result = invoke("run", command, *flags, "--request-id", "r-1", "--url", api.url, "--token", SECRET)
    assert result.exit_code == code, result.output
    note = (
        f"mdops: {command} r-1 ended without reporting the state it left: what it changed is not known, and "
        "mdops status shows the state from before it; hint: mdops run health_check reports it now\n"
    )
    assert result.stderr == (note if said else ""), result.output
    shown = invoke("get", "r-1", "--url", api.url, "--token", SECRET).stdout
    left = "not reported: what it changed is not known (mdops run health_check reports it)"
    assert (left in " ".join(shown.split())) == said, shown


def test_why_a_run_waits_is_a_line_of_its_own_under_the_spinner(api):
    """mdops run on a terminal shows a spinner on standard error while it waits; the line that says why the
    run waits (approvals, at 3 a.m.) was written into the spinner's own line, glued to its text."""
    queued = {**RUN, "status": "queued", "message": "waiting for 0 of 1 approvals (bob) until 11:05"}
    reads = {"after": 0}
    api.answers["GET /api/ops/events"] = lambda answer: answer.json(429, {"detail": "8 event streams"})

    def read(answer: Answer) -> None:
        if not api.asked("POST /api/ops/runbooks/execute"):
            return answer.json(404, {"detail": "no runbook r-1"})
        reads["after"] += 1
        answer.json(200, DONE if reads["after"] > 2 else {"runbook": queued, "health": None})

    api.answers["GET /api/ops/runbooks/r-1"] = read
    api.answers["POST /api/ops/runbooks/execute"] = lambda answer: answer.json(
        202, {"runbook": queued, "health": None}
    )
    screen, terminal = os.openpty()
    env = {name: value for name, value in os.environ.items() if not name.startswith("MDOPS_")}
    env.update(MDOPS_API_URL=api.url, MDOPS_API_TOKEN=SECRET, TERM="xterm", COLUMNS="100")
    try:
        done = subprocess.run(
            [sys.executable, "-c", QUICK_MDOPS, "run", "restart", "--request-id", "r-1"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=terminal, timeout=60,
        )  # fmt: skip
        shown = os.read(screen, 65536).decode()
    finally:
        os.close(screen)
        os.close(terminal)
    assert done.returncode == 0
    pieces = re.split(r"[\r\n]+", re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", shown))
    assert f"mdops: r-1 is queued: {queued['message']}" in pieces, pieces


def _status(*history: dict, reported: dict | None = None, stale: dict | None = None) -> dict:
    """The status answer of a platform whose recent runs are ``history`` (newest created first), its
    environment's state reported by ``reported`` and maybe changed since by ``stale``."""
    return {
        "environment_mode": "live",
        "active_profile": "primary",
        "active_window": "night",
        "last_runbook": history[0],
        "runbook_history": list(history),
        "health_by_request": {},
        "last_health": None,
        "last_exit_codes": {},
        "last_updated_at": None,
        "audit": [],
        "session": {
            "venue": "XHKG",
            "state": None,
            "next_open": None,
            "next_close": None,
            "calendar": "c",
            "note": "x",
        },
        "state_reported_by": reported and _reference(reported),
        "state_stale_by": stale and _reference(stale),
    }


def _ended(request_id: str, command: str, code: int, finished: str) -> dict:
    status = "success" if code == 0 else "failed"
    return {**RUN_SUMMARY, "request_id": request_id, "name": request_id, "command": command,
            "exit_code": code, "status": status, "finished_at": f"2026-12-06T{finished}+08:00"}  # fmt: skip


def _reference(run: dict) -> dict:
    return {key: run[key] for key in ("request_id", "command", "exit_code", "finished_at")}


@pytest.mark.parametrize("stale", [False, True], ids=["reported", "stale"])
def test_the_status_says_which_run_reported_the_state_and_which_may_have_changed_it_since(invoke, api, stale):
    """The status' environment is the state the last run that reported one left. A failover stopped at its
    timeout had switched the feed (the simulator on backup) while mdops status said 'live / primary /
    night': nothing told the person on shift that it may be stale, nor how to learn it. The API says which
    run that is (its own tests say how it finds it); mdops says it, and asks for nothing more."""
    failback, failover = (
        _ended("fb-1", "failback", 0, "02:59:00"),
        _ended("fo-2", "failover", 124, "03:01:00"),
    )
    body = _status(failover, failback, reported=failback, stale=failover if stale else None)
    api.answers["GET /api/ops/status"] = lambda answer: answer.json(200, body)
    shown = " ".join(invoke("status", "--url", api.url, "--token", SECRET).stdout.split())
    assert "reported by failback fb-1 at 2026-12-06T02:59:00+08:00" in shown, shown
    warned = (
        "may be stale: failover fo-2 ended without reporting the state it left (exit code 124: timed out); "
        "mdops run health_check reports it now"
    )
    assert (warned in shown) == stale, shown
    assert [asked for asked, _ in api.requests] == ["GET /api/ops/status"]  # no read of each run
    assert json.loads(invoke("status", "-o", "json", "--url", api.url, "--token", SECRET).stdout) == body


@pytest.mark.parametrize("accepted", [False, True], ids=["no-controller", "accepted"])
def test_a_run_no_controller_took_up_while_the_api_waited_is_said_to_be(invoke, api, accepted):
    """The controller is down (killed, crash-looping: restarted at most once a minute): the run has no status
    at all, execute answers 202 pending after its wait, and mdops run waited on without a word."""
    pending = {**RUN_SUMMARY, "status": "pending", "logs": []}
    conditions = [{"type": "Succeeded", "status": "Unknown", "reason": "Pending", "message": "accepted"}]
    view = {"runbook": pending, "health": None, "state": None, "conditions": conditions if accepted else []}
    _a_run_that_succeeds_once_executed(
        api, lambda n: (202, {"runbook": RUN | {"status": "pending"}, "health": None}, {})
    )
    reads = {"after": 0}

    def read(answer: Answer) -> None:
        if not api.asked("POST /api/ops/runbooks/execute"):
            return answer.json(404, {"detail": "no runbook r-1"})
        reads["after"] += 1
        answer.json(200, DONE if reads["after"] > 4 else view)

    api.answers["GET /api/ops/runbooks/r-1"] = read
    result = invoke("run", "restart", "--request-id", "r-1", "--url", api.url, "--token", SECRET)
    assert result.exit_code == 0, result.output
    said = (
        "mdops: r-1 is pending: no controller has taken it up while the API waited for it (is the "
        "controller running?); waiting on\n"
    )
    assert result.stderr == ("" if accepted else said)  # once, though mdops polled on


def test_a_lost_answer_whose_run_is_found_unfinished_is_followed_to_its_end(invoke, api):
    """Execute's answer is lost (503) after the API made the run; asked again, mdops finds it running: its
    own, made before the answer was lost. It follows it to its end, with no answer of execute to read."""
    read, execute = "GET /api/ops/runbooks/r-1", "POST /api/ops/runbooks/execute"
    answers = iter([(404, {"detail": "no runbook r-1"}), (200, {"runbook": RUN, "health": None})])
    api.answers[read] = lambda answer: answer.json(*next(answers, (200, DONE)))
    api.answers[execute] = lambda answer: answer.json(503, {"detail": "not synced"})

    def events(answer: Answer) -> None:  # the run, then its end once execute was sent
        answer.stream(RUNNING)
        while not api.asked(execute) and not api.closing.wait(0.01):
            pass
        answer.stream(("runbook", {"runbook": DONE["runbook"], "lines": []}))
        answer.heartbeats()

    api.answers["GET /api/ops/events"] = events
    result = invoke("run", "restart", "--request-id", "r-1", "--url", api.url, "--token", SECRET)
    assert result.exit_code == 0, result.output
    assert api.asked(execute) == 1


def test_a_config_file_that_is_no_yaml_is_refused_without_its_text(invoke, config_file):
    """PyYAML's message quotes the line it stopped at: here the token's."""
    config_file.parent.mkdir()
    config_file.write_text(f"contexts:\n  local: {{url: http://api:8080, token: {SECRET}: x}}\n")
    config_file.chmod(0o600)
    result = invoke("config", "view")
    assert result.exit_code == Exit.CONFIG, result.output
    assert "not YAML: " in result.stderr and "at line 2, column " in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and SECRET[:6] not in result.stderr, result.stderr
