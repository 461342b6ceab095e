"""The installed ``mdops`` (the venv's console script), run as a user runs it, against the local stack.

Every run here is a real one: the controller runs the reference scripts against the simulator, and the
log lines checked are the ones those scripts wrote. HOME and the config file are the test's own.
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from jsonschema import Draft202012Validator

from cli.errors import Exit
from devcluster.supervisor import write_env

BIN = Path(sys.executable).parent  # the venv's bin, where the package installs mdops and kubectl-mdops
MDOPS = BIN / "mdops"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def openapi(stack) -> dict:
    """The API's own OpenAPI document, as the running server gives it."""
    headers = {"Authorization": f"Bearer {stack.admin_token}"}
    return httpx.get(f"{stack.api_url}/openapi.json", headers=headers, timeout=30).json()


def conforms(openapi: dict, schema: str, body) -> None:
    """``body`` is valid for the OpenAPI component ``schema`` (a list: each item)."""
    validator = Draft202012Validator(
        {"$ref": f"#/components/schemas/{schema}", "components": openapi["components"]}
    )
    for item in body if isinstance(body, list) else [body]:
        validator.validate(item)


class User:
    """A person at a shell: a HOME and a config file of their own, and only the environment they set."""

    def __init__(self, home: Path, **env: str):
        self.home = home
        self.config = home / ".config" / "mdops" / "config.yaml"
        self.env = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HOME": str(home), **env}

    def run(self, *argv: str, input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(a) for a in argv], env=self.env, input=input, capture_output=True, text=True, timeout=timeout
        )

    def mdops(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run(MDOPS, *args, **kwargs)


@pytest.fixture
def admin(stack, tmp_path) -> User:
    """Someone who has sourced the stack's env file: MDOPS_API_URL and the admin token."""
    return User(tmp_path, MDOPS_API_URL=stack.api_url, MDOPS_API_TOKEN=stack.admin_token)


def request_id() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


def test_sourcing_the_stack_env_file_is_enough(stack, tmp_path):
    env_file = tmp_path / "stack.env"
    write_env(env_file, stack.settings())  # what `make up` writes to .mdops/stack.env
    result = User(tmp_path).run("sh", "-c", f". {env_file} && mdops status -o json")
    assert result.returncode == 0, result.stderr
    assert "environment_mode" in json.loads(result.stdout)


def test_a_health_check_followed_to_success_exits_0(admin, openapi):
    rid = request_id()
    run = admin.mdops("run", "health_check", "--request-id", rid, "--reason", "cli test", "--follow")
    assert run.returncode == 0, run.stderr
    printed = run.stdout.splitlines()
    assert printed[-1] == f"health_check {rid}: success (exit code 0)"
    # The lines the script itself wrote, each printed once, in the order of the run's log.
    got = admin.mdops("get", rid, "-o", "json")
    assert got.returncode == 0
    view = json.loads(got.stdout)
    conforms(openapi, "ExecuteResponse", view)
    logged = [f"{line['level']:<8}{line['message']}" for line in view["runbook"]["logs"]]
    assert printed[:-1] == logged
    assert any(line.endswith("health_check requested by admin: cli test") for line in printed)

    # The same request id again is the same run; with other parameters, a conflict.
    again = admin.mdops("run", "health_check", "--request-id", rid, "--reason", "cli test", "-o", "json")
    assert again.returncode == 0 and json.loads(again.stdout) == view
    other = admin.mdops("run", "health_check", "--request-id", rid, "--reason", "another")
    assert other.returncode == Exit.CONFLICT
    assert other.stderr.startswith("mdops: conflict (409): ") and "differs in: reason" in other.stderr


def test_a_failing_health_gate_exits_3(stack, admin, openapi):
    httpx.post(f"{stack.sim_url}/admin/faults", json={"lose_instruments": 200}, timeout=10)
    try:
        run = admin.mdops("run", "health_check", "--enforce", "-o", "json")
    finally:
        httpx.delete(f"{stack.sim_url}/admin/faults", timeout=10)
    assert run.returncode == 3, run.stderr
    view = json.loads(run.stdout)
    conforms(openapi, "ExecuteResponse", view)
    assert view["runbook"]["status"] == "failed" and view["health"]["gate"]["passed"] is False
    assert any("coverage=0.84375" in line["message"] for line in view["runbook"]["logs"])  # the script's


def test_no_wait_gives_the_request_id_then_logs_follow_it_to_the_end(admin):
    started = admin.mdops("run", "drill", "--no-wait", "--reason", "cli drill")
    assert started.returncode == 0, started.stderr
    rid = started.stdout.strip()
    assert re.fullmatch(r"[0-9a-f-]{36}", rid)  # a new UUID4

    followed = admin.mdops("logs", rid, "-f")
    assert followed.returncode == 0, followed.stderr
    final = json.loads(admin.mdops("get", rid, "-o", "json").stdout)
    assert final["runbook"]["status"] == "success"
    logged = [f"{line['level']:<8}{line['message']}" for line in final["runbook"]["logs"]]
    assert followed.stdout.splitlines() == logged  # every line once, none twice, in order
    assert any(line.startswith("INFO    drill: switch from primary to backup") for line in logged)
    assert any(line.startswith("INFO    drill finished:") for line in logged)

    as_json = admin.mdops("logs", rid, "-o", "json")
    assert [json.loads(line) for line in as_json.stdout.splitlines()] == final["runbook"]["logs"]
    drills = json.loads(admin.mdops("runs", "--command", "drill", "-o", "json").stdout)
    assert rid in [r["request_id"] for r in drills] and {r["command"] for r in drills} == {"drill"}


def test_the_viewer_token_may_read_but_not_run(stack, tmp_path):
    viewer = User(tmp_path, MDOPS_API_URL=stack.api_url, MDOPS_API_TOKEN=stack.viewer_token)
    assert viewer.mdops("status").returncode == 0
    denied = viewer.mdops("run", "health_check")
    assert denied.returncode == Exit.NOT_ALLOWED
    assert denied.stdout == ""
    assert denied.stderr.count("\n") == 1
    assert denied.stderr.startswith("mdops: not allowed (403): token 'viewer' lacks the permission")
    assert "hint: " in denied.stderr
    assert stack.viewer_token not in denied.stderr


def test_json_and_yaml_output_are_the_apis_own_shapes(admin, openapi):
    assert admin.mdops("run", "health_check").returncode == 0  # something in the history
    for args, schema in (
        (("status",), "StatusResponse"),
        (("runs",), "RunbookSummary"),
        (("metrics",), "SummaryResponse"),
        (("chart", "md_throughput_mps", "--minutes", "5", "--step", "5"), "TimeseriesResponse"),
    ):
        result = admin.mdops(*args, "-o", "json")
        assert result.returncode == 0, (args, result.stderr)
        body = json.loads(result.stdout)
        conforms(openapi, schema, body)
        if args == ("status",):
            assert yaml.safe_load(admin.mdops(*args, "-o", "yaml").stdout).keys() == body.keys()


def test_contexts_switch_between_tokens(stack, tmp_path):
    user = User(tmp_path)  # no MDOPS_API_URL: the config file decides
    for name, token in (("admin", stack.admin_token), ("viewer", stack.viewer_token)):
        added = user.mdops("config", "set-context", name, "--url", stack.api_url, "--token", "-", input=token)
        assert added.returncode == 0, added.stderr
    assert stat.S_IMODE(user.config.stat().st_mode) == 0o600
    assert user.mdops("config", "use-context", "viewer").returncode == 0
    assert user.mdops("run", "health_check").returncode == Exit.NOT_ALLOWED
    assert user.mdops("config", "use-context", "admin").returncode == 0
    assert user.mdops("run", "health_check").returncode == 0


def test_a_group_readable_config_file_is_refused(stack, tmp_path):
    user = User(tmp_path)
    user.mdops(
        "config", "set-context", "admin", "--url", stack.api_url, "--token", "-", input=stack.admin_token
    )
    user.mdops("config", "use-context", "admin")
    user.config.chmod(0o640)
    refused = user.mdops("status")
    assert refused.returncode == Exit.CONFIG
    assert refused.stdout == ""
    assert f"{user.config} is open to others (mode 0640)" in refused.stderr
    assert stack.admin_token not in refused.stderr


def test_kubectl_mdops_runs_the_plugin(stack, admin):
    kubectl = stack.cluster.kubectl_path  # the project's kubectl; it finds kubectl-mdops on the PATH
    result = admin.run(kubectl, "mdops", "status")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("environment")
    helped = admin.run(kubectl, "mdops", "--help")
    assert helped.stdout.startswith("Usage: kubectl mdops")


def test_colour_only_on_a_terminal_and_never_with_no_color(admin):
    def on_a_terminal(**env: str) -> str:
        screen, terminal = pty.openpty()
        try:
            done = subprocess.run(
                [MDOPS, "runs", "--limit", "1"],
                env={**admin.env, **env},
                stdout=terminal,
                stderr=terminal,
                timeout=60,
            )
            assert done.returncode == 0
            return os.read(screen, 65536).decode()  # a few hundred bytes: all of it
        finally:
            os.close(screen)
            os.close(terminal)

    assert admin.mdops("run", "health_check").returncode == 0
    assert "\x1b[32m" in on_a_terminal(TERM="xterm-256color")  # success, in green
    assert not re.search(r"\x1b\[[0-9;]*3[0-9]m", on_a_terminal(TERM="xterm-256color", NO_COLOR="1"))
    assert not ANSI.search(admin.mdops("runs", "--limit", "1").stdout)  # into a pipe


def test_metrics_watch_refreshes_until_interrupted(admin):
    watching = subprocess.Popen(
        [MDOPS, "metrics", "--watch", "--interval", "0.5", "-o", "json"],
        env=admin.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        refreshes = [json.loads(watching.stdout.readline()) for _ in range(2)]
        assert all(
            set(r)
            == {
                "coverage_ratio",
                "throughput_mps",
                "failover_latency_ms",
                "runbook_exit_code",
                "consumer_backlog_messages",
            }
            for r in refreshes
        )
    finally:
        watching.send_signal(signal.SIGINT)  # Ctrl-C
    assert watching.wait(timeout=30) == 0
