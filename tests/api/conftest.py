"""Fixtures of the REST API tests: the app on the real control plane, real Prometheus, real simulator.

The controller is not part of these tests: where a test needs a finished run, it writes the Runbook's
status through the status subresource, in the shape the controller's contract gives it
(:func:`runbook_status`). End-to-end tests with the real controller complement those.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kubernetes import client
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from api.main import create_app
from api.settings import ApiSettings
from devcluster.processes import free_port, wait_until
from devcluster.prometheus import Prometheus, ScrapeTarget
from runbooks import crd, models
from sim.process import run_sim

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


@pytest.fixture(scope="session")
def api_crd(cluster):
    """The Runbook CRD, as generated from runbooks/models.py."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=crd.render())
    cluster.kubectl("wait", "--for=condition=Established", "crd/runbooks.ops.mdops.io", "--timeout=30s")
    return cluster


@pytest.fixture
def objects(api_client) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def runbook_status(
    state: str,
    *,
    request_id: str,
    exit_code: int | None = None,
    finished_at: datetime.datetime | None = None,
    logs: list[tuple[str, str]] = (),
    health: dict[str, Any] | None = None,
    env_state: dict[str, str] | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    """A status in the controller's contract: ``state`` is pending, queued, running, success or failed."""
    now = rfc3339(now_utc())
    reasons = {"pending": "Pending", "queued": "Queued", "running": "Running", "success": "Succeeded"}
    reason = reasons.get(state) or {125: "ExecutionError", 124: "TimedOut", 3: "HealthGateFailed"}.get(
        exit_code, "Failed"
    )
    succeeded = {"success": "True", "failed": "False"}.get(state, "Unknown")
    conditions = [
        models.Condition(
            type="Succeeded", status=succeeded, reason=reason, message=message or "", last_transition_time=now
        ),
        models.Condition(
            type="Running",
            status="True" if state == "running" else "False",
            reason=reason,
            last_transition_time=now,
        ),
    ]
    status = models.RunbookStatus(
        conditions=conditions,
        request_id=request_id,
        window="day",
        target="default",
        exit_code=exit_code,
        result=state if state in ("success", "failed") else None,
        message=message,
        started_at=now if state in ("running", "success", "failed") else None,
        finished_at=rfc3339(finished_at or now_utc()) if state in ("success", "failed") else None,
        logs=[models.LogLine(time=now, level=level, message=text) for level, text in logs],
        health=health,
        state=models.EnvironmentState(**env_state) if env_state else None,
        execution=models.Execution(executor="local", name="4242") if state != "pending" else None,
        attempts=1 if state in ("running", "success", "failed") else 0,
    )
    return status.to_k8s()


class Runbooks:
    """Create Runbooks and write their status as the controller would (status subresource)."""

    def __init__(self, objects: client.CustomObjectsApi, namespace: str):
        self.objects = objects
        self.namespace = namespace

    def create(self, name: str, **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": models.API_VERSION,
            "kind": models.KIND,
            "metadata": {"name": name},
            "spec": models.RunbookSpec(**spec).to_k8s(),
        }
        return self.objects.create_namespaced_custom_object(
            models.GROUP, models.VERSION, self.namespace, models.PLURAL, body
        )

    def get(self, name: str) -> dict[str, Any]:
        return self.objects.get_namespaced_custom_object(
            models.GROUP, models.VERSION, self.namespace, models.PLURAL, name
        )

    def delete(self, name: str) -> None:
        self.objects.delete_namespaced_custom_object(
            models.GROUP, models.VERSION, self.namespace, models.PLURAL, name
        )

    def list(self) -> list[dict[str, Any]]:
        return self.objects.list_namespaced_custom_object(
            models.GROUP, models.VERSION, self.namespace, models.PLURAL
        )["items"]

    def set_status(self, name: str, state: str, **kwargs: Any) -> dict[str, Any]:
        obj = self.get(name)
        request_id = obj["spec"].get("requestId") or name
        status = runbook_status(state, request_id=request_id, **kwargs)
        return self.objects.patch_namespaced_custom_object_status(
            models.GROUP, models.VERSION, self.namespace, models.PLURAL, name, {"status": status}
        )

    def finish_when_created(
        self, name: str, state: str, timeout: float = 30, **kwargs: Any
    ) -> threading.Thread:
        """In a thread: wait for ``name`` to exist, then finish it (a stand-in for the controller)."""

        def exists() -> bool:
            try:
                self.get(name)
                return True
            except client.ApiException as error:
                if error.status == 404:
                    return False
                raise

        def run() -> None:
            wait_until(exists, timeout, f"Runbook {name} to be created", interval=0.02)
            self.set_status(name, state, **kwargs)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


@pytest.fixture
def runbooks(objects, namespace, api_crd) -> Runbooks:
    return Runbooks(objects, namespace)


# -- the app -------------------------------------------------------------------------------------


@pytest.fixture
def tokens_file(tmp_path):
    path = tmp_path / "tokens.yaml"
    path.write_text(TOKENS_FILE)
    return path


@pytest.fixture
def make_settings(cluster, api_crd, namespace, tokens_file) -> Callable[..., ApiSettings]:
    def make(**overrides: Any) -> ApiSettings:
        values: dict[str, Any] = {
            "kubeconfig": cluster.kubeconfig,
            "namespace": namespace,
            "OPS_API_TOKEN": ADMIN_TOKEN,
            "api_tokens_file": tokens_file,
            "prometheus_url": f"http://127.0.0.1:{free_port()}",  # closed: tests that need one say so
            "prometheus_timeout_seconds": 2,
            "api_execute_wait_seconds": 5,
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


# -- metrics: a real simulator, a real exporter of the controller's gauges, real Prometheus ------


class RunbookExporter:
    """A real Prometheus exporter of the controller's runbook gauges (``md_runbook_exit_code{command}``,
    ``md_runbook_last_run_timestamp_seconds{command}``), standing in until the controller exports them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.exit_code = Gauge(
            "md_runbook_exit_code", "Exit code of the last run.", ["command"], registry=self.registry
        )
        self.last_run = Gauge(
            "md_runbook_last_run_timestamp_seconds",
            "When the last run finished.",
            ["command"],
            registry=self.registry,
        )
        self.port = free_port()
        self.server, self.thread = start_http_server(self.port, "127.0.0.1", registry=self.registry)

    def finished(self, command: str, exit_code: int, at: float) -> None:
        self.exit_code.labels(command).set(exit_code)
        self.last_run.labels(command).set(at)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def sim():
    with run_sim(args=["--failover-ms", "300", "--failover-jitter", "0"]) as process:
        yield process


@pytest.fixture(scope="session")
def runbook_exporter():
    exporter = RunbookExporter()
    yield exporter
    exporter.close()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory, sim, runbook_exporter) -> Iterator[Prometheus]:
    targets = [
        ScrapeTarget("sim", f"127.0.0.1:{sim.port}"),
        ScrapeTarget("controller", f"127.0.0.1:{runbook_exporter.port}"),
    ]
    with Prometheus(tmp_path_factory.mktemp("prometheus"), targets, scrape_interval="1s") as server:
        wait_until(server.targets_up, 60, "Prometheus to scrape the simulator and the exporter")
        yield server
