"""Bearer tokens: 401 without a valid one, 403 without the permission, permissions per command."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from api.auth import MIN_TOKEN_LENGTH, TokensFileError, TokenStore
from cli.errors import Exit
from devcluster.processes import wait_until
from tests.api.conftest import (
    ADMIN_TOKEN,
    EXECUTOR_TOKEN,
    HASHED_TOKEN,
    HEALTH_CHECKER_TOKEN,
    METRICS_TOKEN,
    NOTHING_TOKEN,
    READER_TOKEN,
    auth,
    replace_tokens,
    running_app,
    tokens_without,
    write_tokens,
)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


EXECUTE = "/api/ops/runbooks/execute"
PROTECTED = [
    ("GET", "/api/ops/status", None),
    ("GET", "/api/ops/metrics/summary", None),
    ("GET", "/api/ops/metrics/timeseries?metric=md_throughput_mps", None),
    ("POST", EXECUTE, {"command": "health_check"}),
    ("GET", "/api/ops/runbooks/some-id", None),
    ("GET", "/metrics", None),
    ("GET", "/openapi.json", None),
]


def call(api, method, path, body, headers):
    return api.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
        {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": ADMIN_TOKEN},
        {"X-Api-Token": ADMIN_TOKEN},
    ],
    ids=["none", "wrong", "longer", "shorter", "empty", "basic", "no-scheme", "other-header"],
)
def test_no_valid_token_is_401_with_a_bearer_challenge(api, runbooks, method, path, body, headers):
    response = call(api, method, path, body, headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "detail" in response.json()
    assert runbooks.list() == []  # nothing got through


def test_a_missing_token_wins_over_an_invalid_body(api):
    response = api.post(EXECUTE, json={"command": "reboot", "colour": "red"})
    assert response.status_code == 401


def test_open_endpoints_need_no_token(api):
    assert api.get("/healthz").status_code == 200
    assert api.get("/readyz").status_code == 200


# (token, method, path, body) -> expected status when the token is valid
ALLOWED = {
    READER_TOKEN: {"status", "runbook"},
    METRICS_TOKEN: {"summary", "timeseries", "metrics"},
    HEALTH_CHECKER_TOKEN: {"execute:health_check", "execute:drill", "runbook"},
    EXECUTOR_TOKEN: {f"execute:{c}" for c in ("start", "failover", "health_check", "drill")} | {"runbook"},
    HASHED_TOKEN: {"status", "summary", "timeseries", "metrics", "runbook"},
    NOTHING_TOKEN: set(),
    ADMIN_TOKEN: {"status", "summary", "timeseries", "metrics", "runbook"}
    | {f"execute:{c}" for c in ("start", "failover", "health_check", "drill")},
}
REQUESTS = {
    "status": ("GET", "/api/ops/status", None),
    "summary": ("GET", "/api/ops/metrics/summary", None),
    "timeseries": ("GET", "/api/ops/metrics/timeseries?metric=nope", None),  # 422 once allowed
    "metrics": ("GET", "/metrics", None),
    "runbook": ("GET", "/api/ops/runbooks/unknown-id", None),  # 404 once allowed
    **{
        f"execute:{c}": ("POST", EXECUTE, {"command": c, "request_id": f"perm-{c}"})
        for c in ("start", "failover", "health_check", "drill")
    },  # 202 once allowed
}


@pytest.mark.parametrize("token", list(ALLOWED), ids=lambda t: t.split("-")[0])
def test_permissions_per_token(start_api, runbooks, token):
    api = start_api(api_execute_wait_seconds=0)
    for what, (method, path, body) in REQUESTS.items():
        response = call(api, method, path, body, auth(token))
        if what in ALLOWED[token]:
            assert response.status_code in (200, 202, 404, 422), (what, response.text)
        else:
            assert response.status_code == 403, (what, response.text)
            assert "lacks the permission" in response.json()["detail"]
    executed = {f"execute:{rb['spec']['command']}" for rb in runbooks.list()}
    assert executed == {what for what in ALLOWED[token] if what.startswith("execute:")}


def test_a_command_permission_is_checked_once_the_body_is_valid(api):
    """401 (no token), then 403 (no execute permission at all), then 422 (body), then 403 (command)."""
    invalid = {"command": "start", "dry_run": "no"}
    assert api.post(EXECUTE, json=invalid).status_code == 401
    assert api.post(EXECUTE, json=invalid, headers=auth(READER_TOKEN)).status_code == 403
    # A token that may not execute learns nothing from the body: not whether it parses, nor how it is sent.
    for content, kind in ((b'{"command": "start", "mode": [', "application/json"), (b"start", "text/plain")):
        refused = api.post(EXECUTE, content=content, headers={**auth(READER_TOKEN), "Content-Type": kind})
        assert refused.status_code == 403, refused.text
    malformed = api.post(
        "/api/ops/runbooks/some-id/approve",
        content=b'{"comment": ',
        headers={**auth(EXECUTOR_TOKEN), "Content-Type": "application/json"},
    )
    assert malformed.status_code == 403, malformed.text
    assert api.post(EXECUTE, json=invalid, headers=auth(HEALTH_CHECKER_TOKEN)).status_code == 422
    valid = {"command": "start"}
    assert api.post(EXECUTE, json=valid, headers=auth(HEALTH_CHECKER_TOKEN)).status_code == 403


def test_a_per_command_permission_allows_that_command_only(start_api, runbooks):
    api = start_api(api_execute_wait_seconds=0)
    allowed = api.post(
        EXECUTE, json={"command": "health_check", "request_id": "hc"}, headers=auth(HEALTH_CHECKER_TOKEN)
    )
    assert allowed.status_code == 202
    refused = api.post(
        EXECUTE, json={"command": "failover", "request_id": "fo"}, headers=auth(HEALTH_CHECKER_TOKEN)
    )
    assert refused.status_code == 403
    assert "runbooks:execute:failover" in refused.json()["detail"]
    assert [rb["metadata"]["name"] for rb in runbooks.list()] == ["hc"]
    assert runbooks.get("hc")["spec"]["requestedBy"] == "health-checker"
    # Following one's own run needs no status:read.
    assert api.get("/api/ops/runbooks/hc", headers=auth(HEALTH_CHECKER_TOKEN)).status_code == 200
    assert api.get("/api/ops/status", headers=auth(HEALTH_CHECKER_TOKEN)).status_code == 403


def test_execute_shows_a_token_without_status_read_nothing_of_anothers_run(start_api, runbooks):
    """Asking again with a request id is the same run, for whoever may read it; to a token that may read
    its own runs only, another's request id is a 409 that tells nothing of that run: neither its answer
    (its logs, health, result) nor which of its parameters differ."""
    api = start_api(api_execute_wait_seconds=0)
    body = {"command": "health_check", "request_id": "admins-check", "reason": "nightly"}
    assert api.post(EXECUTE, json=body, headers=auth()).status_code == 202
    for token in (HEALTH_CHECKER_TOKEN, EXECUTOR_TOKEN):
        for asked in (body, {**body, "reason": "a guess"}, {**body, "command": "drill"}):
            response = api.post(EXECUTE, json=asked, headers=auth(token))
            assert response.status_code == 409, response.text
            assert response.json()["detail"] == (
                "request_id 'admins-check' is another requester's; use a new request_id"
            )
        assert api.get("/api/ops/runbooks/admins-check", headers=auth(token)).status_code == 404
    again = api.post(EXECUTE, json=body, headers=auth())
    assert again.status_code == 202 and again.json()["runbook"]["request_id"] == "admins-check"
    assert [rb["spec"]["requestedBy"] for rb in runbooks.list()] == ["admin"]


def test_the_openapi_document_declares_the_bearer_scheme(api):
    assert api.get("/openapi.json").status_code == 401
    assert api.get("/docs").status_code == 404
    document = api.get("/openapi.json", headers=auth(NOTHING_TOKEN)).json()  # any valid token
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "OPS_API_TOKEN, or a token of the tokens file (MDOPS_API_TOKENS_FILE).",
    }
    for path, method in [
        ("/api/ops/status", "get"),
        ("/api/ops/metrics/summary", "get"),
        ("/api/ops/metrics/timeseries", "get"),
        ("/api/ops/runbooks/execute", "post"),
        ("/api/ops/runbooks/{request_id}", "get"),
        ("/metrics", "get"),
    ]:
        assert document["paths"][path][method]["security"] == [{"bearer": []}], path
    for path in ("/healthz", "/readyz"):
        assert "security" not in document["paths"][path]["get"]


def test_tokens_are_never_logged(start_api, caplog):
    api = start_api(api_execute_wait_seconds=0)  # no controller: the admin's execute is a 202 at once
    caplog.set_level(logging.DEBUG)
    for token in (ADMIN_TOKEN, "a-wrong-token-0123", READER_TOKEN, HASHED_TOKEN):
        for method, path, body in PROTECTED:
            call(api, method, path, body, auth(token))
    for token in (ADMIN_TOKEN, "a-wrong-token-0123", READER_TOKEN, HASHED_TOKEN):
        assert token not in caplog.text


def test_only_the_admin_token_without_a_file(start_api):
    api = start_api(api_tokens_file=None)
    assert api.get("/api/ops/status", headers=auth()).status_code == 200
    assert api.get("/api/ops/status", headers=auth(READER_TOKEN)).status_code == 401


def test_no_token_configured_refuses_everything(make_settings):
    with running_app(make_settings(OPS_API_TOKEN=None, api_tokens_file=None)) as api:
        assert api.get("/api/ops/status", headers=auth()).status_code == 401
        assert api.get("/api/ops/status", headers={"Authorization": "Bearer "}).status_code == 401


LONG = "x" * MIN_TOKEN_LENGTH


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (f"tokens: [{{name: a, token: {LONG}, permissions: [root]}}]", "unknown permission"),
        (
            f"tokens: [{{name: a, token: {LONG}, permissions: ['runbooks:execute:reboot']}}]",
            "unknown permission",
        ),
        ("tokens: [{name: a, permissions: [status:read]}]", "exactly one of token and token_sha256"),
        (f"tokens: [{{name: a, token: {LONG}, token_sha256: '" + "0" * 64 + "'}]", "exactly one of token"),
        ("tokens: [{name: a, token_sha256: abc}]", "token_sha256"),
        (f"tokens: [{{name: a, token: {LONG}}}, {{name: a, token: {LONG}y}}]", "duplicate token name"),
        (f"tokens: [{{name: a, token: {LONG}, colour: red}}]", "colour"),
        ("tokens: [{name: a, token: short-token}]", f"at least {MIN_TOKEN_LENGTH} items"),
        (f"tokens: [{{name: a, token: 'p\u00e4ss{LONG}'}}]", "outside visible ASCII"),
        (f"tokens: [{{name: a, token: 'with space {LONG}'}}]", "outside visible ASCII"),
        (f'tokens: [{{name: "ci\\abot", token: {LONG}}}]', r"bidirectional controls: U\+0007"),
        (f"tokens: [{{name: 'schedule:nightly', token: {LONG}}}]", "names the runs of RunbookSchedules"),
        (f"tokens: [{{name: 'system:serviceaccount:ops:ci', token: {LONG}}}]", "not a person"),
    ],
)
def test_an_invalid_tokens_file_is_refused_at_start(tmp_path, text, error):
    with pytest.raises(TokensFileError, match=error) as refused:
        TokenStore.load(None, write_tokens(tmp_path / "tokens.yaml", text))
    assert LONG not in str(refused.value) and "short-token" not in str(refused.value)  # no token shown


@pytest.mark.parametrize(
    ("admin", "text"),
    [
        (None, f"tokens: [{{name: a, token: {LONG}}}, {{name: b, token: {LONG}}}]"),
        (LONG, f"tokens: [{{name: a, token: {LONG}}}]"),
        (None, f"tokens: [{{name: a, token: {LONG}}}, {{name: b, token_sha256: {sha256(LONG)}}}]"),
    ],
    ids=["two-entries", "admin-and-entry", "plain-and-digest"],
)
def test_two_tokens_with_the_same_secret_are_refused(tmp_path, admin, text):
    with pytest.raises(TokensFileError, match="are the same secret"):
        TokenStore.load(admin and SecretStr(admin), write_tokens(tmp_path / "tokens.yaml", text))


def test_a_short_admin_token_is_refused():
    with pytest.raises(TokensFileError, match="OPS_API_TOKEN is shorter"):
        TokenStore.load(SecretStr("s3cret"), None)
    with pytest.raises(TokensFileError, match="OPS_API_TOKEN has a character outside visible ASCII"):
        TokenStore.load(SecretStr(LONG + "\u00e9"), None)


def test_a_token_named_admin_beside_the_admin_token_is_refused(tmp_path):
    """Two holders would share one name: one identity in the audit, one quota, one set of streams."""
    path = write_tokens(
        tmp_path / "tokens.yaml", f"tokens: [{{name: b, token: {LONG}b}}, {{name: admin, token: {LONG}}}]"
    )
    with pytest.raises(TokensFileError, match="the name of OPS_API_TOKEN's holder"):
        TokenStore.load(SecretStr(LONG + "-admin"), path)
    assert len(TokenStore.load(None, path)) == 2


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o620, 0o602])
def test_a_tokens_file_others_may_read_or_change_is_refused(tmp_path, mode):
    path = write_tokens(tmp_path / "tokens.yaml", f"tokens: [{{name: a, token: {LONG}}}]")
    os.chmod(path, mode)  # as someone's careless chmod: the API checks the file it is given
    with pytest.raises(TokensFileError, match=f"mode {mode:04o} lets others read or change"):
        TokenStore.load(None, path)
    os.chmod(path, 0o400)
    assert len(TokenStore.load(None, path)) == 1


def test_an_invalid_tokens_file_stops_the_app(make_settings, tmp_path):
    path = write_tokens(
        tmp_path / "bad.yaml", f"tokens: [{{name: a, token: {LONG}, permissions: [everything]}}]"
    )
    with pytest.raises(TokensFileError), running_app(make_settings(api_tokens_file=path)):
        pass


def test_the_token_store_matches_exactly():
    secret = "s3cret-of-sixteen-or-more"
    store = TokenStore.load(SecretStr(secret), None)
    assert store.authenticate(secret).name == "admin"
    for other in (secret[:-1], secret + " ", secret.upper(), "", secret + "\x00"):
        assert store.authenticate(other) is None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_token_revoked_or_added_in_the_tokens_file_takes_effect_without_a_restart(tmp_path, caplog):
    path = write_tokens(
        tmp_path / "tokens.yaml", f"tokens: [{{name: a, token: {LONG}a}}, {{name: b, token: {LONG}b}}]"
    )
    clock = Clock()
    store = TokenStore(None, path, clock)
    assert store.authenticate(LONG + "a").name == "a"
    replace_tokens(path, f"tokens: [{{name: b, token: {LONG}b}}, {{name: c, token: {LONG}c}}]")
    clock.now = 0.5  # looked at no more than once a second
    assert store.authenticate(LONG + "a").name == "a" and store.authenticate(LONG + "c") is None
    clock.now = 1.0
    caplog.set_level(logging.INFO)
    assert store.authenticate(LONG + "a") is None
    assert store.authenticate(LONG + "c").name == "c" and store.authenticate(LONG + "b").name == "b"
    assert "the tokens file changed and was read again; tokens in effect: 2" in caplog.text
    assert LONG not in caplog.text


@pytest.mark.parametrize(
    "change",
    ["malformed", "not YAML", "not UTF-8", "open to others", "gone"],
)
def test_a_tokens_file_changed_into_one_that_cannot_be_used_leaves_the_tokens_before(
    tmp_path, caplog, change
):
    """As a restart would be refused; said in the log once per change, the tokens not shown."""
    path = write_tokens(tmp_path / "tokens.yaml", f"tokens: [{{name: a, token: {LONG}a}}]")
    clock = Clock()
    store = TokenStore(None, path, clock)
    if change == "malformed":
        replace_tokens(path, f"tokens: [{{name: a, token: {LONG}a, permissions: [root]}}]")
    elif change == "not YAML":
        replace_tokens(path, f"tokens: [{{name: a, token: {LONG}a")
    elif change == "not UTF-8":
        latin = write_tokens(path.with_name("tokens.new"), "tokens: []\n# caf")
        with latin.open("ab") as file:
            file.write(b"\xe9")
        os.replace(latin, path)
    elif change == "open to others":
        os.chmod(path, 0o644)
    else:
        path.unlink()
    for second in (1, 2, 3):
        clock.now = second
        assert store.authenticate(LONG + "a").name == "a"
    refused = [r for r in caplog.records if "the tokens before stay in effect" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.ERROR, caplog.text
    assert LONG not in caplog.text
    if change == "gone":
        write_tokens(path, f"tokens: [{{name: d, token: {LONG}d}}]")
    else:
        replace_tokens(path, f"tokens: [{{name: d, token: {LONG}d}}]")
    clock.now = 4
    assert store.authenticate(LONG + "a") is None and store.authenticate(LONG + "d").name == "d"


def test_a_principal_is_held_while_its_token_stays_as_it_was(tmp_path):
    """What an open event stream asks (:meth:`TokenStore.holds`): a token kept as it was through a change of
    the file keeps its principal; one revoked, or whose permissions changed, does not."""
    path = write_tokens(
        tmp_path / "tokens.yaml",
        f"tokens: [{{name: a, token: {LONG}a}}, {{name: b, token: {LONG}b}}, {{name: c, token: {LONG}c}}]",
    )
    clock = Clock()
    store = TokenStore(SecretStr(LONG + "admin"), path, clock)
    a, b, c, admin = (store.authenticate(LONG + suffix) for suffix in ("a", "b", "c", "admin"))
    replace_tokens(
        path,
        f"tokens: [{{name: a, token: {LONG}a}}, {{name: c, token: {LONG}c, permissions: [metrics:read]}}]",
    )
    clock.now = 1
    assert store.holds(a) and store.holds(admin)
    assert not store.holds(b) and not store.holds(c)
    assert store.holds(store.authenticate(LONG + "c"))


def test_the_api_takes_a_token_revoked_in_its_tokens_file_without_a_restart(start_server, tokens_file):
    """The real API process: a token taken out of its tokens file is refused within seconds (before, until
    the API restarted: a Secret updated in place changed nothing)."""
    server = start_server()
    status = f"{server.url}/api/ops/status"
    assert httpx.get(status, headers=auth(READER_TOKEN), timeout=30).status_code == 200
    replace_tokens(tokens_file, tokens_without("reader"))

    def refused() -> bool:
        return httpx.get(status, headers=auth(READER_TOKEN), timeout=30).status_code == 401

    wait_until(refused, 30, "the revoked token to be refused")
    assert httpx.get(status, headers=auth(METRICS_TOKEN), timeout=30).status_code == 403  # the others stay


def mdops(url: str, token: str, *args: str, home) -> subprocess.CompletedProcess:
    """The installed command line, as a user with only these in the environment runs it."""
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "MDOPS_API_URL": url, "MDOPS_API_TOKEN": token}
    command = [str(Path(sys.executable).parent / "mdops"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def test_mdops_run_names_the_permission_the_command_needs(start_server, tmp_path):
    """Its first look for the run (status:read, or any execute permission) is refused: the token is told
    what running the command needs, not what the look did."""
    server = start_server()
    result = mdops(server.url, NOTHING_TOKEN, "run", "health_check", home=tmp_path)
    assert result.returncode == Exit.NOT_ALLOWED, result.stderr
    assert "'runbooks:execute:health_check' (or 'runbooks:execute')" in result.stderr
    assert "status:read" not in result.stderr


def test_mdops_says_when_its_url_is_not_the_mdops_apis(prometheus, tmp_path):
    """Another server's 404 (here Prometheus') is a wrong URL, not a run that does not exist."""
    result = mdops(prometheus.url, NOTHING_TOKEN, "get", "fo-1", home=tmp_path)
    assert result.returncode == Exit.API_FAILED, result.stderr
    assert "is the URL the mdops API's?" in result.stderr
