"""Fixtures of the REST API tests: the app on the real control plane, with the real controller, real
Prometheus and the real simulator.

Runs are real: a test that needs a finished run starts the controller on its own namespace (the API's)
with small shell scripts it writes (:class:`Scripts`, the ``controller`` fixture).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import ApiSettings
from devcluster.components import SESSIONS, ControllerProcess, install_rbac
from devcluster.processes import Process, free_port, wait_until
from devcluster.prometheus import Prometheus, ScrapeTarget
from sim.process import run_sim
from tests.runbook_client import Runbooks, lines, write_script

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
READER_TOKEN = "reader-token-for-tests"
METRICS_TOKEN = "metrics-token-for-tests"
HEALTH_CHECKER_TOKEN = "health-check-runner-token"
EXECUTOR_TOKEN = "executor-token-all-commands"
HASHED_TOKEN = "hashed-token-for-tests"
NOTHING_TOKEN = "token-with-no-permission"

TOKENS_FILE = f"""
tokens:
  - name: reader
    token: {READER_TOKEN}
    permissions: [status:read]
  - name: metrics
    token: {METRICS_TOKEN}
    permissions: [metrics:read]
  - name: health-checker
    token: {HEALTH_CHECKER_TOKEN}
    permissions: ["runbooks:execute:health_check", "runbooks:execute:drill"]
  - name: executor
    token: {EXECUTOR_TOKEN}
    permissions: [runbooks:execute]
  - name: hashed
    token_sha256: {hashlib.sha256(HASHED_TOKEN.encode()).hexdigest()}
    permissions: [status:read, metrics:read]
  - name: nobody
    token: {NOTHING_TOKEN}
    permissions: []
"""


def auth(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module", autouse=True)
def _settings_from_the_tests_only():
    """The settings come from the tests, not from a developer's shell (e.g. a sourced stack.env)."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("MDOPS_") or k == "OPS_API_TOKEN"}
    yield
    os.environ.update(saved)


# -- Kubernetes ----------------------------------------------------------------------------------


@pytest.fixture
def runbooks(api_client, namespace, mdops_crds) -> Runbooks:
    """The Runbooks of this test's namespace (the API's and the controller's)."""
    return Runbooks(api_client, namespace)


# -- the real controller -------------------------------------------------------------------------

# Script lines that record the run in $RUNS (so a test can count executions); HOLD holds it until the test
# calls ``Scripts.release()``.
RECORD = 'echo "$MDOPS_REQUEST_ID dry=$MDOPS_DRY_RUN" >> "$RUNS"\n'


def reporting(report: dict[str, Any]) -> str:
    """Script lines that write ``report`` (``{"health": ..., "state": ...}``) to the run's report file."""
    return f"cat > \"$MDOPS_REPORT_FILE\" <<'JSON'\n{json.dumps(report)}\nJSON\n"


class Scripts:
    """The scripts folder of this test's controller, one script per command written by the test (the
    runner looks a script up when a run starts, so they may be written after the controller started),
    and the files the scripts see: ``$RUNS`` (see ``RECORD``) and ``$RELEASE`` (see ``HOLD``)."""

    def __init__(self, workdir: Path):
        self.folder = workdir / "scripts"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.runs_file = workdir / "runs.log"
        self.release_file = workdir / "release"

    def write(self, command: str, body: str) -> Path:
        return write_script(self.folder, command, body)

    def runs(self) -> list[str]:
        """One line per execution: ``<request id> dry=<0|1>``."""
        return lines(self.runs_file)

    def release(self) -> None:
        self.release_file.touch()

    def controller_env(self) -> dict[str, str]:
        env = {"RUNS": str(self.runs_file), "RELEASE": str(self.release_file)}
        return {"MDOPS_SCRIPTS_DIR": str(self.folder), "MDOPS_SCRIPT_ENV": json.dumps(env)}


@pytest.fixture
def scripts(tmp_path) -> Iterator[Scripts]:
    made = Scripts(tmp_path)
    yield made
    made.release()  # nothing held outlives the test


@pytest.fixture
def controller(start_controller, scripts) -> ControllerProcess:
    """The real controller (``python -m controller``, local executor) on this test's namespace, the one
    the API under test watches, running ``scripts``; started up (a run takes well under a second from
    then, inside the tests' default wait of execute)."""
    started = start_controller(**scripts.controller_env())

    def serving() -> bool:  # /metrics is served once the controller has started up
        try:
            return bool(started.metrics())
        except OSError:
            return False

    wait_until(serving, 60, "the controller to start", [started.process])
    return started


# -- the app -------------------------------------------------------------------------------------


def write_tokens(path: Path, text: str = TOKENS_FILE) -> Path:
    """A tokens file as the API accepts it: readable by its owner only, from its creation."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
        file.write(text)
    return path


def replace_tokens(path: Path, text: str) -> None:
    """The tokens file changed as Kubernetes changes a mounted Secret: a new file put in its place."""
    os.replace(write_tokens(path.with_name("tokens.new"), text), path)


def tokens_without(name: str) -> str:
    """:data:`TOKENS_FILE` without the token named ``name``: that token revoked."""
    listed = yaml.safe_load(TOKENS_FILE)["tokens"]
    assert name in {token["name"] for token in listed}
    return yaml.safe_dump({"tokens": [token for token in listed if token["name"] != name]})


@pytest.fixture
def tokens_file(tmp_path):
    return write_tokens(tmp_path / "tokens.yaml")


@pytest.fixture
def make_settings(
    cluster, mdops_crds, namespace, tokens_file, kept_calendar, tmp_path
) -> Callable[..., ApiSettings]:
    def make(**overrides: Any) -> ApiSettings:
        values: dict[str, Any] = {
            "calendar_cache": kept_calendar(tmp_path / "api" / SESSIONS),
            "kubeconfig": cluster.kubeconfig,
            "namespace": namespace,
            "OPS_API_TOKEN": ADMIN_TOKEN,
            "api_tokens_file": tokens_file,
            "prometheus_url": f"http://127.0.0.1:{free_port()}",  # closed: tests that need one say so
            "prometheus_timeout_seconds": 2,
            # Long enough for a run's end on a loaded machine (a 200); tests that want a 202 say so.
            "api_execute_wait_seconds": 60,
            "api_metrics_max_age_seconds": 0,  # every request sees Prometheus now; reuse is tested on its own
            **overrides,
        }
        return ApiSettings(**values)

    return make


@contextlib.contextmanager
def running_app(settings: ApiSettings, ready: bool = True) -> Iterator[TestClient]:
    """The app with its lifespan (cache, clients) in a TestClient; ready: wait for the cache's sync."""
    with TestClient(create_app(settings)) as test_client:
        if ready:
            wait_until(lambda: test_client.get("/readyz").status_code == 200, 30, "the API's /readyz")
        yield test_client


@pytest.fixture
def start_api(make_settings) -> Iterator[Callable[..., TestClient]]:
    """``start_api(**settings)``: a running app on this test's namespace; stopped at the end."""
    with contextlib.ExitStack() as stack:

        def start(**overrides: Any) -> TestClient:
            return stack.enter_context(running_app(make_settings(**overrides)))

        yield start


@pytest.fixture
def api(start_api) -> TestClient:
    return start_api()


def wait_cached(api: TestClient, request_id: str) -> None:
    """Until the API's cache holds the run of ``request_id`` (its GET may read it from the API server)."""
    wait_until(
        lambda: api.app.state.cache.find(request_id) is not None, 30, f"the API's cache to hold {request_id}"
    )


# -- metrics: a real simulator, the real controller's /metrics, real Prometheus ---------------------


@pytest.fixture(scope="session")
def sim():
    with run_sim(args=["--failover-ms", "300", "--failover-jitter", "0"]) as process:
        yield process


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory, sim) -> Iterator[Prometheus]:
    """Prometheus scraping the simulator, shared by the tests that need no runbook metrics."""
    targets = [ScrapeTarget("sim", f"127.0.0.1:{sim.port}")]
    with Prometheus(tmp_path_factory.mktemp("prometheus"), targets, scrape_interval="1s") as server:
        wait_until(server.targets_up, 60, "Prometheus to scrape the simulator")
        yield server


@pytest.fixture
def controller_prometheus(tmp_path, sim, controller) -> Iterator[Prometheus]:
    """This test's Prometheus, scraping the simulator and this test's real controller (whose /metrics
    has ``md_runbook_exit_code`` once a run has finished)."""
    targets = [
        ScrapeTarget("sim", f"127.0.0.1:{sim.port}"),
        ScrapeTarget("controller", f"127.0.0.1:{controller.metrics_port}"),
    ]
    with Prometheus(tmp_path / "prometheus", targets, scrape_interval="1s") as server:
        wait_until(
            server.targets_up,
            60,
            "Prometheus to scrape the simulator and the controller",
            [controller.process],
        )
        yield server


# -- the API as a real process (python -m api), for what only a real socket shows ----------------------


def http(
    method: str, url: str, body: dict | None = None, headers: dict | None = None
) -> tuple[int, Any, str]:
    """One request with the standard library: (status, headers, text); status 0 when nothing answered."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()
    except OSError:
        return 0, {}, ""


class ApiProcess(Process):
    """``python -m api`` configured by its environment only; ``url`` is where it listens."""

    def __init__(self, env: dict[str, str], workdir: Path):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MDOPS_") and k != "OPS_API_TOKEN"}
        super().__init__(
            "api", [sys.executable, "-m", "api"], workdir, env={**clean, **env, "MDOPS_API_PORT": str(port)}
        )

    def rss_kib(self) -> int:
        """The process's resident memory (VmRSS), in KiB."""
        status = Path(f"/proc/{self.popen.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


@pytest.fixture
def start_server(cluster, mdops_crds, namespace, tokens_file, prometheus, tmp_path, kept_calendar):
    """``start_server(**env)``: ``python -m api`` on this test's namespace, ready; stopped at the end."""
    started: list[ApiProcess] = []

    def start(**env: str) -> ApiProcess:
        folder = tmp_path / f"api-{len(started)}"
        folder.mkdir()
        process = ApiProcess(
            {
                "PYTHONUNBUFFERED": "1",
                "MDOPS_KUBECONFIG": str(cluster.kubeconfig),
                "MDOPS_NAMESPACE": namespace,
                "OPS_API_TOKEN": ADMIN_TOKEN,
                "MDOPS_API_TOKENS_FILE": str(tokens_file),
                "MDOPS_PROMETHEUS_URL": prometheus.url,
                "MDOPS_API_EXECUTE_WAIT_SECONDS": "60",  # as make_settings: tests that want a 202 say so
                "MDOPS_API_LOG_LEVEL": "debug",
                "MDOPS_CALENDAR_CACHE": str(kept_calendar(folder / SESSIONS)),
                **env,
            },
            folder,
        )
        started.append(process)
        wait_until(lambda: http("GET", process.url + "/readyz")[0] == 200, 30, "the API's /readyz", [process])
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def server(start_server) -> ApiProcess:
    return start_server()


def as_service_account(
    start_server, cluster, namespace: str, tmp_path: Path, tokens: dict[str, tuple[str, list[str]]]
) -> ApiProcess:
    """``python -m api`` as mdops's ServiceAccount with its packaged Role (under the identity policies, if
    installed), with ``tokens`` (name: (token, permissions)); execute answers at once (no controller)."""
    entries = [{"name": n, "token": t, "permissions": p} for n, (t, p) in tokens.items()]
    tokens_file = write_tokens(tmp_path / "account-tokens.yaml", json.dumps({"tokens": entries}))
    account = install_rbac(cluster, namespace, tmp_path)
    kubeconfig = cluster.service_account_kubeconfig(namespace, account, tmp_path / "sa.kubeconfig")
    return start_server(
        MDOPS_KUBECONFIG=str(kubeconfig),
        MDOPS_API_TOKENS_FILE=str(tokens_file),
        MDOPS_API_EXECUTE_WAIT_SECONDS="0",
    )
