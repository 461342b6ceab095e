"""Property-based fuzzing of every endpoint (hypothesis), against the app on the real control plane and
a real Prometheus: no 5xx (the only specified 500 needs a run that ended with exit code 125, which no
fuzzed request can reach here), and nothing gets past auth without a valid token."""

from __future__ import annotations

import urllib.parse
import uuid

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from api.listing import CURSOR_PATTERN
from api.prometheus import TIMESERIES_UNITS
from api.settings import ApiSettings
from runbooks.contract import Command, RunState
from tests.api.conftest import (
    ADMIN_TOKEN,
    EXECUTOR_TOKEN,
    HEALTH_CHECKER_TOKEN,
    METRICS_TOKEN,
    READER_TOKEN,
    running_app,
    write_tokens,
)

RUN_ID = "fuzz-run"
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
VALID_TOKENS = [ADMIN_TOKEN, READER_TOKEN, METRICS_TOKEN, HEALTH_CHECKER_TOKEN, EXECUTOR_TOKEN]
PROTECTED = [
    ("GET", "/api/ops/status"),
    ("GET", "/api/ops/metrics/summary"),
    ("GET", "/api/ops/metrics/timeseries"),
    ("POST", "/api/ops/runbooks/execute"),
    ("GET", "/api/ops/runbooks/{request_id}"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/api/ops/events"),
    ("GET", "/api/ops/whoami"),
]


@pytest.fixture(scope="module")
def fuzz_api(cluster, mdops_crds, prometheus, tmp_path_factory):
    """One app for all examples (hypothesis repeats a test body, not its fixtures)."""
    namespace = f"fuzz-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", namespace)
    tokens = tmp_path_factory.mktemp("fuzz") / "tokens.yaml"
    write_tokens(tokens)
    settings_ = ApiSettings(
        kubeconfig=cluster.kubeconfig,
        namespace=namespace,
        OPS_API_TOKEN=ADMIN_TOKEN,
        api_tokens_file=tokens,
        prometheus_url=prometheus.url,
        api_execute_wait_seconds=0,
    )
    with running_app(settings_) as api:
        # A run for the cancels and decisions to act on (no controller: it stays pending).
        made = api.post(
            "/api/ops/runbooks/execute",
            json={"command": "failover", "request_id": RUN_ID},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert made.status_code == 202, made.text
        yield api
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def text(min_size: int = 0, max_size: int | None = None, alphabet=None) -> st.SearchStrategy[str]:
    """Text a JSON body can carry (no lone surrogates, which are not UTF-8)."""
    return st.text(
        alphabet if alphabet is not None else st.characters(exclude_categories=("Cs",)),
        min_size=min_size,
        max_size=max_size,
    )


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)
field_values = {
    "command": st.sampled_from([c.value for c in Command]) | json_scalars,
    "mode": st.sampled_from(["live", "uat"]) | json_scalars,
    "window": st.sampled_from(["day", "night", "auto"]) | json_scalars,
    "profile": st.sampled_from(["primary", "backup"]) | json_scalars,
    "config": text(max_size=300) | json_scalars,
    "request_id": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,80}", fullmatch=True) | json_scalars,
    "enforce": st.booleans() | json_scalars,
    "dry_run": st.booleans() | json_scalars,
    "reason": text(max_size=1100) | json_scalars,
    "timeout_seconds": st.integers(-5, 100_000) | json_scalars,
}
valid_fields = {
    "mode": st.sampled_from(["live", "uat"]),
    "window": st.sampled_from(["day", "night", "auto"]),
    "profile": st.sampled_from(["primary", "backup"]),
    "config": text(max_size=50),
    "request_id": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,80}", fullmatch=True),
    "enforce": st.booleans(),
    "dry_run": st.booleans(),
    "reason": text(max_size=100),
    "timeout_seconds": st.integers(1, 86400),
}
commands = st.sampled_from([c.value for c in Command])
valid_bodies = st.fixed_dictionaries({"command": commands}, optional=valid_fields)
execute_bodies = (
    valid_bodies
    | st.fixed_dictionaries({}, optional=field_values)
    | st.fixed_dictionaries(
        {"command": st.sampled_from([c.value for c in Command])},
        optional={k: v for k, v in field_values.items() if k != "command"},
    )
    | st.dictionaries(text(max_size=12), json_values, max_size=5)
    | json_values
)
tokens = st.sampled_from(VALID_TOKENS)
bad_headers = st.one_of(
    st.just({}),
    text(max_size=40).map(lambda t: {"Authorization": f"Bearer {t}"}),
    st.sampled_from(VALID_TOKENS).map(lambda t: {"Authorization": f"Basic {t}"}),
    st.sampled_from(VALID_TOKENS).map(lambda t: {"Authorization": f"Bearer {t}x"}),
)
query_values = st.one_of(st.integers(-100, 20_000).map(str), text(max_size=20))


def ascii_header(headers: dict[str, str]) -> dict[str, str]:
    # httpx sends str header values as ASCII: keep what it can encode.
    return {k: v.encode("ascii", "replace").decode("ascii").replace("\n", " ") for k, v in headers.items()}


def no_server_error(response) -> None:
    assert response.status_code < 500, (response.status_code, response.text)


@FUZZ
@given(body=valid_bodies | execute_bodies, token=st.sampled_from([ADMIN_TOKEN, EXECUTOR_TOKEN]) | tokens)
def test_execute_never_fails_with_a_server_error(fuzz_api, body, token):
    response = fuzz_api.post(
        "/api/ops/runbooks/execute", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    event(f"status {response.status_code}")
    no_server_error(response)
    assert response.status_code in (200, 202, 403, 409, 422, 429), response.text  # 429: the token's quota
    if response.status_code == 422:
        assert response.json()["detail"]


@FUZZ
@given(raw=st.binary(max_size=200), content_type=st.sampled_from(["application/json", "text/plain", ""]))
def test_execute_with_raw_bytes_is_a_client_error(fuzz_api, raw, content_type):
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    if content_type:
        headers["Content-Type"] = content_type
    response = fuzz_api.post("/api/ops/runbooks/execute", content=raw, headers=headers)
    no_server_error(response)


@FUZZ
@given(
    metric=st.sampled_from(list(TIMESERIES_UNITS)) | text(max_size=60),
    params=st.dictionaries(st.sampled_from(["minutes", "step_seconds", "other"]), query_values, max_size=3),
    token=tokens,
)
def test_timeseries_never_fails_with_a_server_error(fuzz_api, metric, params, token):
    response = fuzz_api.get(
        "/api/ops/metrics/timeseries",
        params={"metric": metric, **params},
        headers={"Authorization": f"Bearer {token}"},
    )
    no_server_error(response)
    if response.status_code == 200:
        body = response.json()
        assert body["metric"] in TIMESERIES_UNITS
        assert body["unit"] == TIMESERIES_UNITS[body["metric"]]


@FUZZ
@given(request_id=text(min_size=1, max_size=100), token=tokens)
def test_reading_a_run_never_fails_with_a_server_error(fuzz_api, request_id, token):
    path = "/api/ops/runbooks/" + urllib.parse.quote(request_id, safe="")
    response = fuzz_api.get(path, headers={"Authorization": f"Bearer {token}"})
    no_server_error(response)
    assert response.status_code in (200, 403, 404, 422), response.text  # 422: not a request id at all


@FUZZ
@given(
    endpoint=st.sampled_from(PROTECTED),
    headers=bad_headers,
    body=execute_bodies,
    params=st.dictionaries(text(max_size=10), text(max_size=10), max_size=3),
)
def test_nothing_gets_past_auth_without_a_valid_token(fuzz_api, endpoint, headers, body, params):
    method, path = endpoint
    path = path.replace("{request_id}", "x")
    response = fuzz_api.request(method, path, json=body, params=params, headers=ascii_header(headers))
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    path=text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40),
    token=st.none() | tokens,
)
def test_any_path_and_method_is_never_a_server_error(fuzz_api, method, path, token):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = fuzz_api.request(method, "/" + path.lstrip("/"), headers=headers)
    no_server_error(response)
    if token is None and response.status_code not in (404, 405):
        # Only the health endpoints and the console's files (no data; `/` redirects there) answer without a
        # token.
        path = response.request.url.path
        assert (
            response.status_code == 401 or path in ("/healthz", "/readyz") or path.startswith("/console/")
        ), path


times = st.builds(
    lambda moment, offset: moment.isoformat() + offset,
    st.datetimes(),
    st.sampled_from(["", "Z", "+00:00", "+08:00", "+14:00", "-12:00", "+99:99"]),
)
list_params = st.fixed_dictionaries(
    {},
    optional={
        "limit": query_values,
        "cursor": st.from_regex(CURSOR_PATTERN, fullmatch=True) | text(max_size=40),
        "since": times | query_values,
        "requested_by": text(max_size=300),
        "command": st.sampled_from([c.value for c in Command]) | text(max_size=12),
        "status": st.sampled_from([s.value for s in RunState]) | text(max_size=12),
    },
)


@FUZZ
@given(params=list_params, token=tokens)
def test_the_runs_list_never_fails_with_a_server_error(fuzz_api, params, token):
    """Limits, forged cursors (any string of the cursor's form is a place in the list), times at the ends of
    the calendar in any offset: a page or a 422, never a 5xx."""
    response = fuzz_api.get("/api/ops/runbooks", params=params, headers={"Authorization": f"Bearer {token}"})
    event(f"status {response.status_code}")
    no_server_error(response)
    assert response.status_code in (200, 403, 422), response.text
    if response.status_code == 200:
        page = response.json()
        assert len(page["runbooks"]) <= page["matched"] or "cursor" in params
        assert page["next_cursor"] is None or urllib.parse.quote(page["next_cursor"]) == page["next_cursor"]


decision_fields = {
    "reason": text(max_size=1100) | json_scalars,
    "comment": text(max_size=1100) | json_scalars,
    "uid": st.uuids().map(str) | json_scalars,
    "created_at": times | json_scalars,
}
decision_bodies = (
    st.none()
    | st.fixed_dictionaries({}, optional=decision_fields)
    | st.dictionaries(text(max_size=12), json_values, max_size=4)
    | json_values
)


@FUZZ
@given(
    action=st.sampled_from(["cancel", "approve", "reject"]),
    request_id=st.just(RUN_ID) | text(min_size=1, max_size=60),
    body=decision_bodies,
    token=tokens,
)
@example(action="cancel", request_id=".", body=None, token=ADMIN_TOKEN)  # found by the fuzzing: a 405
@example(action="approve", request_id="..", body=None, token=ADMIN_TOKEN)
def test_cancels_and_decisions_never_fail_with_a_server_error(fuzz_api, action, request_id, body, token):
    """Cancel, approve and reject of a pending run or of anything else, with any body: an answer the API
    specifies for them, never a 500."""
    path = f"/api/ops/runbooks/{urllib.parse.quote(request_id, safe='')}/{action}"
    headers = {"Authorization": f"Bearer {token}"}
    response = fuzz_api.post(path, headers=headers, **({} if body is None else {"json": body}))
    event(f"{action} {response.status_code}")
    if response.status_code == 503:  # the Kubernetes API would not serve now (it throttles, or has just
        # (re)initialised the storage of a resource): the API's documented answer, in JSON
        assert response.json()["detail"].startswith("Kubernetes API"), response.text
    else:
        no_server_error(response)
    # A request id that is a dot segment ("." or "..", no run's: a request id starts with a letter or digit)
    # is not sent as written: the client takes it out of the path (RFC 3986), which names another route.
    dot_segment = (405,) if request_id in (".", "..") else ()
    assert response.status_code in (200, 201, 202, 403, 404, 409, 422, 503, *dot_segment), response.text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=tokens)
def test_status_and_summary_never_fail(fuzz_api, token):
    for path in ("/api/ops/status", "/api/ops/metrics/summary", "/metrics"):
        response = fuzz_api.get(path, headers={"Authorization": f"Bearer {token}"})
        no_server_error(response)
        assert response.status_code in (200, 403)
