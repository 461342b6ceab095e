"""The installed ``mdops`` (the venv's console script), run as a user runs it, against the local stack.

Every run here is a real one: the controller runs the reference scripts against the simulator, and the
log lines checked are the ones those scripts wrote; ``restart`` runs a script of this module's instead
(:data:`WRITER`), which writes its lines over a few seconds and keeps a witness of them. HOME and the
config file are the test's own.
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
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import httpx
import pytest
import yaml
from jsonschema import Draft202012Validator
from prometheus_client.parser import text_string_to_metric_families

from api.schemas import SummaryResponse
from cli.errors import Exit
from devcluster.processes import answers_200, wait_until
from devcluster.stack import NAMESPACE
from devcluster.supervisor import RECORD, Backoff, write_env
from runbooks import crd
from runbooks.kube import api_client as new_api_client
from tests.api.proxy import Proxy
from tests.conftest import scripted
from tests.pids import WITH_CTRL_C
from tests.runbook_client import HOLD, Runbooks, lines, reference_scripts

BIN = Path(sys.executable).parent  # the venv's bin, where the package installs mdops and kubectl-mdops
# The checkout under test, first on mdops's path: a worktree that shares another checkout's virtualenv
# (whose editable install points there) tests its own cli/, not that checkout's.
REPO = Path(__file__).resolve().parents[2]
MDOPS = BIN / "mdops"
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# The `restart` script of this module: 5 lines over a second, a hold until the test creates
# $FILES/<request id>.go (at once if it exists), 8 more lines; each line also goes to the witness file
# $FILES/<request id>.lines as the script writes it.
WRITER = (
    """
    witness="$FILES/$MDOPS_REQUEST_ID.lines"
    RELEASE="$FILES/$MDOPS_REQUEST_ID.go"
    write() { echo "INFO: $1"; echo "$1" >> "$witness"; }
    for i in 1 2 3 4 5; do write "line $i of $MDOPS_REQUEST_ID"; sleep 0.2; done
    """
    + HOLD
    + """
    for i in 6 7 8 9 10 11 12 13; do write "line $i of $MDOPS_REQUEST_ID"; sleep 0.2; done
    """
)
WRITTEN = 13


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """The stack's scripts (the reference ones, linked, and WRITER as `restart`) and the files WRITER uses."""
    folder = tmp_path_factory.mktemp("cli")
    reference_scripts(folder / "scripts", restart=WRITER)
    return folder


HEARTBEAT = 1  # seconds: the API's heartbeat here, so that a run followed is often silent for longer


@pytest.fixture(scope="module")
def stack_options(files) -> dict:
    # A killed API comes back after 1 s each time: its tests kill it within two minutes of each other,
    # and the supervisor's default backoff waited 2, 4 and then 8 s (each test's proxy makes the API
    # unreachable for a while, whatever its restart takes).
    backoff = Backoff(reset_after=1.0)
    return {**scripted(files, MDOPS_API_EVENTS_HEARTBEAT_SECONDS=str(HEARTBEAT)), "backoff": backoff}


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
        self.env = {
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(home),
            "PYTHONPATH": str(REPO),
            **env,
        }

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


class Following:
    """mdops following a run in the background; its standard output collected line by line as it comes."""

    def __init__(self, user: User, *args: str):
        self.process = subprocess.Popen(
            [*WITH_CTRL_C, MDOPS, *args],
            env=user.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.printed: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.printed.append(line.rstrip("\n"))

    def script_lines(self) -> list[str]:
        """What mdops printed of WRITER's lines, as the script wrote them."""
        return [line.removeprefix("INFO    ") for line in self.printed if line.startswith("INFO    line ")]

    def end(self, timeout: float = 120) -> tuple[int, str]:
        """Its exit code and standard error, once it has exited."""
        code = self.process.wait(timeout)
        self.reader.join(10)
        return code, self.process.stderr.read()


def behind(proxy: Proxy, user: User) -> User:
    """``user``, with the API behind ``proxy``."""
    return User(
        user.home, MDOPS_API_URL=f"http://127.0.0.1:{proxy.port}", MDOPS_API_TOKEN=user.env["MDOPS_API_TOKEN"]
    )


def api_requests(stack, route: str) -> float:
    """How many GET requests to ``route`` the API has answered (any status), from its own /metrics."""
    text = httpx.get(
        f"{stack.api_url}/metrics", headers={"Authorization": f"Bearer {stack.admin_token}"}
    ).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "mdops_api_requests_total"
        and sample.labels["method"] == "GET"
        and sample.labels["route"] == route
    )


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
    conforms(openapi, "RunView", view)
    logged = [f"{line['level']:<8}{line['message']}" for line in view["runbook"]["logs"]]
    assert printed[:-1] == logged
    assert any(line.endswith("health_check requested by admin: cli test") for line in printed)

    # The same request id again is the same run; with other parameters, a conflict.
    again = admin.mdops("run", "health_check", "--request-id", rid, "--reason", "cli test", "-o", "json")
    assert again.returncode == 0, again.stderr
    answer = json.loads(again.stdout)  # execute's shape, of which the read says more
    assert answer == {
        "runbook": {key: view["runbook"][key] for key in answer["runbook"]},
        "health": view["health"],
    }
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
    mine = json.loads(admin.mdops("runs", "--who", "ADM", "--limit", "1", "-o", "json").stdout)
    assert [r["requested_by"] for r in mine] == ["admin"]


def test_get_shows_who_asked_for_a_run_when_what_and_why_it_waits(admin, files, openapi):
    """Someone about to decide on a run reads it with mdops get: who asked for it and why, its parameters,
    when it was created (exactly as --created-at takes it, as mdops runs lists it), its uid (--uid), and
    what it waits for (here the lock of its target, which a restart holds)."""
    first, second = request_id(), request_id()
    try:
        assert admin.mdops("run", "restart", "--no-wait", "--request-id", first).returncode == 0
        started = admin.mdops("run", "restart", "--no-wait", "--request-id", second, "--reason", "after it")
        assert started.returncode == 0, started.stderr

        def read() -> dict:
            return json.loads(admin.mdops("get", second, "-o", "json").stdout)["runbook"]

        wait_until(lambda: read()["status"] == "queued", 60, "the second restart to queue for the lock")
        view = json.loads(admin.mdops("get", second, "-o", "json").stdout)
        conforms(openapi, "RunView", view)
        [listed] = [
            r for r in json.loads(admin.mdops("runs", "-o", "json").stdout) if r["request_id"] == second
        ]
        assert {k: view["runbook"][k] for k in ("created_at", "uid", "message")} == {
            k: listed[k] for k in ("created_at", "uid", "message")
        }
        shown = admin.mdops("get", second)
        assert shown.returncode == 0, shown.stderr
        assert "asked by    admin: after it\n" in shown.stdout
        assert "parameters  profile primary · mode live · window auto\n" in shown.stdout
        assert f"created     {listed['created_at']}\n" in shown.stdout
        assert f"uid         {listed['uid']}\n" in shown.stdout
        assert f"waits       {listed['message']}\n" in shown.stdout
    finally:
        for rid in (first, second):
            (files / f"{rid}.go").touch()
    assert admin.mdops("logs", second, "-f").returncode == 0  # both ran, one after the other


def test_cancel_of_a_finished_run_says_how_it_ended_and_exits_73(admin):
    done = request_id()
    assert admin.mdops("run", "health_check", "--request-id", done).returncode == 0
    refused = admin.mdops("cancel", done, "--reason", "too late")
    assert (refused.returncode, refused.stdout) == (Exit.CONFLICT, "")
    assert refused.stderr == f"mdops: {done} has finished: success, exit code 0; nothing to cancel\n"
    assert json.loads(admin.mdops("get", done, "-o", "json").stdout)["cancel"] is None
    unknown = admin.mdops("cancel", "no-such-run")
    assert unknown.returncode == Exit.NOT_FOUND, unknown.stderr


def test_cancel_stops_a_running_run_and_follows_it_to_its_end(admin, files, openapi):
    """The person on shift cancels a restart that runs (held by its script), the one mdops get showed (--uid):
    a uid that is not the run's cancels nothing (exit 73, in the API's words); --no-wait says the cancel is
    recorded; mdops cancel again changes nothing, says so, follows the run to its end (exit code 130,
    Cancelled) and exits 0; the run stays, with who cancelled it and why."""
    rid = request_id()
    try:
        assert admin.mdops("run", "restart", "--no-wait", "--request-id", rid).returncode == 0
        wait_until(
            lambda: (
                json.loads(admin.mdops("get", rid, "-o", "json").stdout)["runbook"]["status"] == "running"
            ),
            60,
            "the restart to run",
        )
        uid = json.loads(admin.mdops("get", rid, "-o", "json").stdout)["runbook"]["uid"]
        other = str(
            uuid.uuid4()
        )  # a run made again since mdops get showed it, or a typo: the API cannot tell
        refused = admin.mdops("cancel", rid, "--uid", other, "--no-wait")
        assert (refused.returncode, refused.stdout) == (Exit.CONFLICT, ""), refused.stderr
        assert refused.stderr == (
            f"mdops: conflict (409): run '{rid}' is not the one you named (Runbook {other}): either the run "
            "you named was deleted and its request id asked for again since you looked, or the uid is "
            f"mistyped: nothing was cancelled; hint: mdops get {rid} shows the run as it is now\n"
        )
        assert json.loads(admin.mdops("get", rid, "-o", "json").stdout)["cancel"] is None
        malformed = admin.mdops("cancel", rid, "--uid", rid)
        assert malformed.returncode == Exit.USAGE and "not a uid" in malformed.stderr, malformed.stderr
        recorded = admin.mdops("cancel", rid, "--reason", "wrong venue", "--uid", uid.upper(), "--no-wait")
        assert recorded.returncode == 0, recorded.stderr
        assert recorded.stdout == f"cancel of {rid} recorded, by admin: wrong venue (running)\n"
        followed = admin.mdops("cancel", rid, "--reason", "again")
    finally:
        (files / f"{rid}.go").touch()  # whatever happened, nothing held outlives the test
    assert followed.stderr == f"mdops: {rid} was already cancelled: nothing changed\n"
    assert followed.returncode == 0, followed.stdout
    assert "cancelled   by admin: wrong venue\n" in followed.stdout
    view = json.loads(admin.mdops("get", rid, "-o", "json").stdout)
    conforms(openapi, "RunView", view)
    assert (view["runbook"]["status"], view["runbook"]["exit_code"]) == ("failed", 130)
    assert view["cancel"] == {"requested_by": "admin", "reason": "wrong venue"}


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


def test_schedules_show_their_trigger_next_slots_and_last_run(stack, admin, openapi):
    """Two schedules of the stack's controller as `mdops schedules` shows them: the API's shape with -o json,
    and a table row each; the last run named is one the controller ran for the schedule."""
    every, paused = f"{request_id()}-every5s", f"{request_id()}-paused"
    body = {"template": {"command": "health_check"}, "trigger": {"every": "5s"}, "startingDeadlineSeconds": 4}
    for name, spec in ((every, body), (paused, {**body, "suspend": True})):
        manifest = json.dumps(crd.SCHEDULE.manifest(name, spec))
        stack.cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=manifest)
    try:

        def ran() -> dict | None:
            listed = admin.mdops("schedules", "--slots", "3", "-o", "json")
            assert listed.returncode == 0, listed.stderr
            views = {view["name"]: view for view in json.loads(listed.stdout)}
            return views.get(every, {}).get("last_result") == "success" and views

        views = wait_until(ran, 60, f"a run of {every} in mdops schedules")
        conforms(openapi, "ScheduleView", list(views.values()))
        assert (views[every]["schedule"], len(views[every]["next_slots"])) == ("every 5s", 3)
        assert (views[paused]["suspended"], views[paused]["next_slots"]) == (True, [])
        last = json.loads(admin.mdops("get", views[every]["last_request_id"], "-o", "json").stdout)["runbook"]
        assert last["status"] == "success"  # and the script itself says who asked for it:
        assert any(f"health_check requested by schedule:{every}" in line["message"] for line in last["logs"])

        table = admin.mdops("schedules").stdout.splitlines()
        assert table[0].split() == [
            "NAME",
            "SCHEDULE",
            "COMMAND",
            "NEXT",
            "LAST",
            "RESULT",
            "MISSED",
            "SKIPPED",
            "NOTE",
        ]
        rows = {line.split()[0]: line for line in table[1:]}
        assert rows[every].split()[1:4] == ["every", "5s", "health_check"]
        assert rows[paused].split()[1:5] == ["every", "5s", "health_check", "-"]  # no next slot
        assert rows[paused].endswith(" suspended")
    finally:
        for name in (every, paused):
            stack.cluster.kubectl("delete", "rbs", name, "-n", NAMESPACE)


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


SUMMARY_KEYS = set(SummaryResponse.model_fields)  # the summary's five metrics


def test_metrics_watch_refreshes_until_interrupted(admin):
    watching = subprocess.Popen(
        [*WITH_CTRL_C, MDOPS, "metrics", "--watch", "--interval", "0.5", "-o", "json"],
        env=admin.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        refreshes = [json.loads(watching.stdout.readline()) for _ in range(2)]
        assert all(set(r) == SUMMARY_KEYS for r in refreshes)
    finally:
        watching.send_signal(signal.SIGINT)  # Ctrl-C
    assert watching.wait(timeout=30) == 0


def test_metrics_watch_waits_out_an_api_that_cannot_be_reached_for_a_while(admin, stack):
    """While the API cannot be reached (a proxy in front of it cut, as an API restarting is), a --watch
    says so on standard error and asks again; the refreshes go on once it answers, until Ctrl-C."""
    with Proxy(stack.api_url) as proxy:
        watching = Following(behind(proxy, admin), "metrics", "--watch", "--interval", "0.5", "-o", "json")
        ended = lambda: watching.process.poll() is not None  # noqa: E731
        wait_until(lambda: watching.printed or ended(), 30, "a first refresh")
        proxy.cut()
        wait_until(lambda: proxy.refused >= 2 or ended(), 30, "mdops to ask again while the API is away")
        assert not ended(), watching.end()
        refreshed = len(watching.printed)
        proxy.resume()
        wait_until(lambda: len(watching.printed) >= refreshed + 2 or ended(), 30, "refreshes again")
        watching.process.send_signal(signal.SIGINT)  # Ctrl-C
        code, stderr = watching.end()
    assert code == 0, stderr
    assert all(json.loads(line).keys() == SUMMARY_KEYS for line in watching.printed)
    assert f"mdops: cannot reach the API at http://127.0.0.1:{proxy.port}" in stderr
    assert "; asking again in 0.5 s\n" in stderr


# -- following a run over the event stream ---------------------------------------------------------

EVENTS = "/api/ops/events"
RUNBOOK = "/api/ops/runbooks/{request_id}"


def test_a_followed_run_loses_no_line_when_the_stream_drops_and_it_is_not_polled(stack, admin, files):
    """mdops shows WRITER's lines as they come; the connection is cut while the script writes more, and
    mdops resumes with Last-Event-ID: every line once, in the order the script wrote them. Over the stream,
    not by polling: the API counts two streams and no GET of the run but the first, the one that asks for
    the run after execute's answer was lost in the cut, and the last."""
    rid = request_id()
    streams, reads = api_requests(stack, EVENTS), api_requests(stack, RUNBOOK)
    with Proxy(stack.api_url) as proxy:
        following = Following(behind(proxy, admin), "run", "restart", "--request-id", rid, "--follow", "-v")
        wait_until(lambda: len(following.script_lines()) >= 3, 60, "mdops to show the first lines")
        proxy.cut()
        (files / f"{rid}.go").touch()  # the script goes on while mdops cannot reach the API
        witness = files / f"{rid}.lines"
        wait_until(lambda: len(lines(witness)) == WRITTEN, 60, "the script to write its lines")
        proxy.resume()
        code, stderr = following.end()
    assert code == 0, stderr
    assert following.script_lines() == lines(witness)  # every line once, in order
    assert following.printed[-1] == f"restart {rid}: success (exit code 0)"
    assert f"event stream of {rid}: " in stderr and "reconnecting in" in stderr  # with -v
    assert "polling" not in stderr
    wait_until(lambda: api_requests(stack, EVENTS) - streams >= 2, 30, "the API to count both streams")
    assert api_requests(stack, RUNBOOK) - reads <= 3  # polling reads it once a second for ~4 s and more


def test_a_followed_run_loses_and_repeats_no_line_when_the_api_restarts(stack, admin, files):
    """The API is killed mid-run and its supervisor starts it again: mdops reconnects, the new process
    cannot resume after the last event id (its ids have another epoch), sends `reset` and the run as it is
    now, and mdops shows only the lines it had not shown. The exit status is still the runbook's."""
    rid = request_id()
    following = Following(admin, "run", "restart", "--request-id", rid, "--follow", "-v")
    wait_until(lambda: len(following.script_lines()) >= 3, 60, "mdops to show the first lines")
    api = json.loads((stack.workdir / RECORD).read_text())["components"]["api"]
    os.kill(api["pid"], signal.SIGKILL)
    (files / f"{rid}.go").touch()  # the script goes on while the API is down
    code, stderr = following.end()
    assert code == 0, stderr
    assert following.script_lines() == lines(files / f"{rid}.lines")
    assert following.printed[-1] == f"restart {rid}: success (exit code 0)"
    assert f"event stream of {rid} reset (cannot resume after that event id)" in stderr
    assert "may be missing" not in stderr
    restarted = json.loads((stack.workdir / RECORD).read_text())["components"]["api"]
    assert restarted["restarts"] == api["restarts"] + 1  # the witness that it was a new process


def test_a_run_silent_for_longer_than_the_heartbeat_is_followed_to_its_end(stack, admin, files):
    """WRITER holds after its first lines while the API sends heartbeats (comment lines) on the stream:
    mdops takes them for no event, and exits with the run's code once the script goes on and ends."""
    rid = request_id()
    following = Following(admin, "run", "restart", "--request-id", rid, "--follow")
    shown = lambda: len(following.script_lines()) == 5 or following.process.poll() is not None  # noqa: E731
    wait_until(shown, 60, "mdops to show the lines before the hold")
    assert following.process.poll() is None, following.end()
    headers = {"Authorization": f"Bearer {stack.admin_token}"}
    # A stream of the same run: the heartbeats the API sends while the script is silent (a witness that
    # mdops's stream got them too, from the same server with the same setting).
    with httpx.stream(
        "GET", f"{stack.api_url}{EVENTS}", params={"request_id": rid}, headers=headers, timeout=30
    ) as stream:
        heartbeats = (line for line in stream.iter_lines() if line.startswith(":"))
        for _ in range(3):
            next(heartbeats)
    assert following.process.poll() is None, following.end()  # still following through the silence
    (files / f"{rid}.go").touch()
    code, stderr = following.end()
    assert code == 0, stderr
    assert following.script_lines() == lines(files / f"{rid}.lines")
    assert following.printed[-1] == f"restart {rid}: success (exit code 0)"


@contextmanager
def every_stream_held(stack) -> Iterator[None]:
    """Every event stream the admin token may have, held open (the API refuses the next with a 429)."""
    client = httpx.Client(headers={"Authorization": f"Bearer {stack.admin_token}"}, timeout=30)
    held: list[httpx.Response] = []
    try:
        # Every stream the token may have (8 by default, 1,000 at most), and one refused.
        while (not held or held[-1].status_code == 200) and len(held) <= 1000:
            held.append(client.send(client.build_request("GET", stack.api_url + EVENTS), stream=True))
        assert held[-1].status_code == 429
        yield
    finally:
        for response in held:
            response.close()
        client.close()


def test_without_a_stream_to_spare_mdops_polls_and_says_so_with_v_only(stack, admin, files):
    """Past the token's streams the API answers 429: mdops follows the run by polling, as before; -v says
    so in one line, without it standard error stays empty."""
    with every_stream_held(stack):
        followed = {}
        for flags in (("-v",), ()):
            rid = request_id()
            (files / f"{rid}.go").touch()
            following = Following(admin, "run", "restart", "--request-id", rid, "--follow", *flags)
            followed[flags] = (rid, following, *following.end())
    for rid, following, code, stderr in followed.values():
        assert code == 0, stderr
        assert following.script_lines() == lines(files / f"{rid}.lines")
    _, _, _, said = followed[("-v",)]
    assert said.startswith("mdops: no event stream (too many requests (429): token ")
    assert said.count("\n") == 1
    assert followed[()][3] == ""


def test_logs_followed_by_polling_wait_for_an_api_that_stops_answering(stack, admin, files):
    """`mdops logs -f`, polling (no stream to spare), behind a proxy that is cut while the script goes on:
    mdops asks again until the API answers, then shows every line once and exits 0."""
    rid = request_id()
    started = admin.mdops("run", "restart", "--request-id", rid, "--no-wait")
    assert started.returncode == 0, started.stderr
    with every_stream_held(stack), Proxy(stack.api_url) as proxy:
        following = Following(behind(proxy, admin), "logs", rid, "-f", "-v")
        wait_until(lambda: len(following.script_lines()) >= 3, 60, "mdops to show the first lines")
        proxy.cut()
        asked = lambda: proxy.refused >= 2 or following.process.poll() is not None  # noqa: E731
        wait_until(asked, 30, "mdops to ask while the API is cut off")
        assert following.process.poll() is None, following.end()  # it waits for the API, not gives up
        (files / f"{rid}.go").touch()
        wait_until(lambda: len(lines(files / f"{rid}.lines")) == WRITTEN, 60, "the script to write its lines")
        proxy.resume()
        code, stderr = following.end()
    assert code == 0, stderr
    assert following.script_lines() == lines(files / f"{rid}.lines")  # every line once, in order
    assert f"{rid}: cannot reach the API at http://127.0.0.1:{proxy.port}" in stderr
    assert "asking again in" in stderr


def wait_for_the_restarted_api(stack, api: dict) -> None:
    """Until the supervisor has started the API again after ``api`` (its record then), and it is ready."""

    def restarted() -> bool:
        entry = json.loads((stack.workdir / RECORD).read_text())["components"]["api"]
        return entry["restarts"] == api["restarts"] + 1 and entry["state"] == "running"

    wait_until(restarted, 30, "the supervisor to start the API again")
    wait_until(lambda: answers_200(f"{stack.api_url}/readyz"), 60, "the restarted API to be ready")


def assert_ran_once(stack, files: Path, rid: str) -> None:
    """WRITER ran once for ``rid`` (its own witness has each line once), and one Runbook has that id."""
    assert lines(files / f"{rid}.lines") == [f"line {i} of {rid}" for i in range(1, WRITTEN + 1)]
    kube = new_api_client(stack.cluster.kubeconfig)
    try:
        runbooks = Runbooks(kube, NAMESPACE).list()
    finally:
        kube.close()
    assert [rb["spec"]["requestId"] for rb in runbooks].count(rid) == 1


@pytest.mark.parametrize("polled", [False, True], ids=["streamed", "polled"])
def test_a_run_whose_answer_is_lost_when_the_api_dies_runs_once_and_exits_with_its_code(
    stack, admin, files, polled
):
    """The API is SIGKILLed after it made the run and while execute waits for its end (WRITER holds): the
    answer is lost. mdops, behind a proxy cut from just before the kill until the supervisor has started
    the API again (so that the API is unreachable for a while, whatever its restart takes), asks the API
    again until it answers, with the same request id, and exits with the runbook's exit code: the run ran
    once, one Runbook of that request id. Followed over the event stream, or by polling (every stream of the
    token held: the API refuses mdops's)."""
    rid = request_id()
    witness = files / f"{rid}.lines"
    with every_stream_held(stack) if polled else nullcontext(), Proxy(stack.api_url) as proxy:
        following = Following(behind(proxy, admin), "run", "restart", "--request-id", rid, "-v")
        # The witness that the Runbook was made and runs: the script's first line. It holds until the test
        # releases it, so execute (which waits 30 s for the end) has not answered.
        wait_until(lambda: lines(witness) or following.process.poll() is not None, 60, "the run to start")
        assert following.process.poll() is None, following.end()
        api = json.loads((stack.workdir / RECORD).read_text())["components"]["api"]
        proxy.cut()
        os.kill(api["pid"], signal.SIGKILL)

        # Ready before the proxy lets mdops through: the proxy connects to the API as it accepts.
        wait_for_the_restarted_api(stack, api)
        asked = lambda: proxy.refused >= 2 or following.process.poll() is not None  # noqa: E731
        wait_until(asked, 30, "mdops to ask again while the API cannot be reached")
        assert following.process.poll() is None, following.end()
        proxy.resume()
        (files / f"{rid}.go").touch()
        code, stderr = following.end()
    assert code == 0, stderr
    assert f"mdops: {rid}: cannot reach the API at http://127.0.0.1:{proxy.port}" in stderr
    assert "asking again in 0.5 s" in stderr
    assert_ran_once(stack, files, rid)


@pytest.mark.parametrize("how", ["killed", "stopped"])
def test_mdops_run_started_while_the_api_is_down_waits_for_it_and_runs_once(stack, admin, files, how):
    """The API is down as mdops run starts: SIGKILLed (its supervisor starts it again; a proxy in front,
    cut until then, refuses mdops's connections whatever the restart takes), or SIGSTOPped (connections
    are taken and not answered: each call times out). mdops asks again with the same request id, says so,
    and once the API answers runs the runbook, once: the script's own witness has its lines once, and
    there is one Runbook of that request id."""
    rid = request_id()
    (files / f"{rid}.go").touch()  # WRITER does not hold
    api = json.loads((stack.workdir / RECORD).read_text())["components"]["api"]
    with Proxy(stack.api_url) as proxy:
        user = behind(proxy, admin)
        if how == "killed":
            proxy.cut()
            os.kill(api["pid"], signal.SIGKILL)
        else:
            os.kill(api["pid"], signal.SIGSTOP)
        following = Following(user, "run", "restart", "--request-id", rid, "--request-timeout", "2")
        try:
            if how == "killed":
                asked = lambda: proxy.refused >= 2 or following.process.poll() is not None  # noqa: E731
                wait_until(asked, 30, "mdops to ask again while the API cannot be reached")
                assert following.process.poll() is None, following.end()
                wait_for_the_restarted_api(stack, api)
            else:  # its first call timed out, and mdops says that it asks again
                said = following.process.stderr.readline()
                assert said.startswith(
                    f"mdops: {rid}: no answer from the API at http://127.0.0.1:{proxy.port}"
                )
                assert said.endswith("; asking again in 0.5 s (the same request id)\n")
        finally:
            proxy.resume()
            if how == "stopped":
                os.kill(api["pid"], signal.SIGCONT)
        code, stderr = following.end()
    assert code == 0, stderr
    if how == "killed":
        assert f"mdops: {rid}: cannot reach the API at http://127.0.0.1:{proxy.port}" in stderr
        assert "asking again in 0.5 s (the same request id)" in stderr
    assert_ran_once(stack, files, rid)
