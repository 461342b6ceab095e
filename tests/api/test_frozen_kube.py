"""The API while the kube-apiserver is frozen (SIGSTOP: its port accepts connections, it answers nothing),
on a control plane of this module's own (never the shared one)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import time
from collections.abc import Iterator

import pytest

from api.settings import ApiSettings
from devcluster.controlplane import ControlPlane
from devcluster.processes import wait_until
from runbooks.kube import api_client as new_api_client
from tests.api.conftest import ADMIN_TOKEN, auth, running_app, wait_cached
from tests.runbook_client import Runbooks

NAMESPACE = "frozen"
PROMPT = 16  # seconds: a read timeout of 10 s, and room for a loaded machine; the client's retries took 30-90


@pytest.fixture(scope="module")
def plane(tmp_path_factory) -> Iterator[ControlPlane]:
    with ControlPlane(tmp_path_factory.mktemp("frozen-plane")) as own:
        own.install_crds()
        own.kubectl("create", "namespace", NAMESPACE)
        yield own


@contextlib.contextmanager
def frozen(plane: ControlPlane) -> Iterator[None]:
    """The kube-apiserver stopped (SIGSTOP) meanwhile; always continued (SIGCONT) after."""
    apiserver = next(p for p in plane.processes if p.name == "kube-apiserver")
    os.kill(apiserver.popen.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(apiserver.popen.pid, signal.SIGCONT)


def settings_of(plane: ControlPlane, tokens_file, **overrides) -> ApiSettings:
    values = {
        "kubeconfig": plane.kubeconfig,
        "namespace": NAMESPACE,
        "OPS_API_TOKEN": ADMIN_TOKEN,
        "api_tokens_file": tokens_file,
        "api_execute_wait_seconds": 0,  # no controller here: 202 once created
        **overrides,
    }
    return ApiSettings(**values)


def timed(call, *args, **kwargs):
    began = time.monotonic()
    response = call(*args, **kwargs)
    return response, time.monotonic() - began


def test_requests_to_a_frozen_kube_apiserver_are_a_prompt_503(plane, tokens_file):
    """Execute's create, the schedules' list, a decision's policies list and the read of a run the cache
    does not hold give up within about the read timeout, as a 503 naming Kubernetes (a cached run is read
    from the cache at once); the create whose answer was lost is, asked again, the same run."""
    kube = new_api_client(plane.kubeconfig)
    try:
        Runbooks(kube, NAMESPACE).create("waiting", command="start", requestId="waiting", requestedBy="ops")
        with running_app(settings_of(plane, tokens_file)) as api:
            wait_cached(api, "waiting")
            body = {"command": "start", "request_id": "made-while-frozen"}
            with frozen(plane):
                calls = {
                    "execute": lambda: api.post("/api/ops/runbooks/execute", json=body, headers=auth()),
                    "schedules": lambda: api.get("/api/ops/schedules", headers=auth()),
                    "reject": lambda: api.post("/api/ops/runbooks/waiting/reject", headers=auth()),
                    "a run not cached": lambda: api.get("/api/ops/runbooks/not-cached", headers=auth()),
                }
                for what, call in calls.items():
                    response, took = timed(call)
                    assert response.status_code == 503, (what, response.text)
                    assert response.json()["detail"].startswith("Kubernetes API unreachable"), what
                    assert took < PROMPT, (what, took)
                cached, took = timed(api.get, "/api/ops/runbooks/waiting", headers=auth())
                assert cached.status_code == 200 and took < 2, (cached.text, took)  # from the cache alone

            def answered():
                response = api.post("/api/ops/runbooks/execute", json=body, headers=auth())
                return response if response.status_code != 503 else None

            again = wait_until(answered, 60, "execute once the kube-apiserver answers again")
            assert again.status_code == 202, again.text
            assert again.json()["runbook"]["request_id"] == "made-while-frozen"
            made = [
                r
                for r in Runbooks(kube, NAMESPACE).list()
                if r["spec"].get("requestId") == "made-while-frozen"
            ]
            assert len(made) == 1
    finally:
        kube.close()


def test_many_requests_to_a_frozen_kube_apiserver_are_each_a_prompt_503(plane, tokens_file):
    """Requests that arrive together while the API server answers none do not wait behind each other's
    timeouts: each is a 503 within about one of them, and the endpoints that need no request to it answer
    meanwhile."""
    clients = 4 * min(32, (os.cpu_count() or 1) + 4)  # four times the threads of the event loop's own pool
    with running_app(settings_of(plane, tokens_file)) as api:
        with frozen(plane), concurrent.futures.ThreadPoolExecutor(clients + 1) as pool:
            asked = [
                pool.submit(timed, api.get, "/api/ops/schedules", headers=auth()) for _ in range(clients)
            ]
            status, took = timed(api.get, "/api/ops/status", headers=auth())
            assert status.status_code == 200 and took < 2, took
            for response, took in (future.result() for future in asked):
                assert response.status_code == 503, response.text
                assert response.json()["detail"].startswith("Kubernetes API unreachable")
                assert took < PROMPT, took
        wait_until(
            lambda: api.get("/api/ops/schedules", headers=auth()).status_code == 200,
            60,
            "the schedules once the kube-apiserver answers again",
        )


def test_readyz_is_503_within_about_the_grace_while_the_kube_apiserver_is_frozen(plane, tokens_file):
    """A frozen API server ends no watch (its stream just stays quiet): the cache's probe, unanswered, makes
    /readyz a 503 once the grace has passed; once it answers again the cache lists again and is ready."""
    grace = 5
    with running_app(settings_of(plane, tokens_file, api_watch_grace_seconds=grace)) as api:
        cache = api.app.state.cache
        lists = cache.lists
        with frozen(plane):
            began = time.monotonic()

            def not_ready():
                response = api.get("/readyz")
                return response if response.status_code == 503 else None

            response = wait_until(not_ready, 45, "/readyz to say not ready")
            took = time.monotonic() - began
            assert response.json()["reason"].startswith("the Runbook watch has been down for")
            assert took < grace + 2 * cache.probe_seconds + 5, (
                took
            )  # a probe's interval and timeout, and slack
            assert api.get("/readyz").status_code == 503  # and it stays so
        wait_until(lambda: api.get("/readyz").status_code == 200, 60, "/readyz to be ready again")
        wait_until(lambda: cache.lists > lists, 30, "the cache to list again")
