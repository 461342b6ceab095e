"""The console's files (no token, security headers) and ``GET /api/ops/whoami`` (what the page offers)."""

from __future__ import annotations

from api.routes.console import SECURITY_HEADERS
from tests.api.conftest import HEALTH_CHECKER_TOKEN, READER_TOKEN, auth


def test_the_console_is_served_without_a_token_under_a_strict_policy(api):
    page = api.get("/console/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for name, value in SECURITY_HEADERS.items():
        assert page.headers[name] == value
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
    script = api.get("/console/js/main.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert api.get("/console/vendor/uPlot.esm.js").status_code == 200  # built by `make console`
    assert api.get("/console/js/nothing.js").status_code == 404
    # A path out of the console's folder (the client would normalise a plain "..": send it encoded).
    assert api.get("/console/%2e%2e/auth.py").status_code == 404
    assert api.get("/console/%2e%2e/%2e%2e/api/auth.py").status_code == 404
    assert api.post("/console/").status_code == 405
    home = api.get("/", follow_redirects=False)
    assert home.status_code == 307 and home.headers["location"] == "/console/"


def test_whoami_says_what_the_token_may_do(api):
    admin = api.get("/api/ops/whoami", headers=auth()).json()
    assert admin["name"] == "admin" and "health_check" in admin["commands"] and len(admin["commands"]) == 7
    assert admin["mutating_commands"] == ["start", "stop", "restart", "failover", "failback", "drill"]
    assert admin["execute_defaults"] == {
        "mode": "live", "window": "auto", "profile": "primary", "config": "", "enforce": False,
        "timeout_seconds": 300,
    }  # fmt: skip
    assert admin["time_zone"] == "Asia/Shanghai"
    assert admin["events_heartbeat_seconds"] == 15.0  # the console's stream is dropped after 3 silent ones
    assert admin["execute_wait_seconds"] == 60.0  # these tests' setting: the console waits longer than it
    reader = api.get("/api/ops/whoami", headers=auth(READER_TOKEN)).json()
    assert (reader["name"], reader["permissions"], reader["commands"]) == ("reader", ["status:read"], [])
    checker = api.get("/api/ops/whoami", headers=auth(HEALTH_CHECKER_TOKEN)).json()
    assert checker["commands"] == ["drill", "health_check"]
    assert api.get("/api/ops/whoami").status_code == 401


def test_the_consoles_files_are_served_whole_whatever_range_is_asked(api):
    """They are small, and a Range header Starlette cannot serve was answered in plain text (400, 416),
    not as the API's errors are: the files are always served whole, and no ranges are offered."""
    whole = api.get("/console/js/main.js")
    assert whole.status_code == 200 and "accept-ranges" not in whole.headers
    for asked in ("bytes=abc", "bytes=5-1", "bytes=99999999-", "items=0-1", "bytes=0-10", "bytes=0-0,-1"):
        response = api.get("/console/js/main.js", headers={"Range": asked, "If-Range": whole.headers["etag"]})
        assert response.status_code == 200, (asked, response.status_code, response.text)
        assert response.content == whole.content, asked
