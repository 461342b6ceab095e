"""GET /api/ops/status from the watch-fed cache, on the real control plane.

Runs are real: the controller runs the test's scripts in the API's namespace (see conftest).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from api import listing
from api.cache import RunbookCache
from api.main import create_app
from api.settings import ApiSettings
from devcluster.components import ControllerProcess
from devcluster.controlplane import ControlPlane
from devcluster.processes import free_port, wait_until
from runbooks import models
from runbooks.kube import api_client as new_api_client
from tests.api.conftest import (
    ADMIN_TOKEN,
    EXECUTOR_TOKEN,
    READER_TOKEN,
    RECORD,
    Scripts,
    auth,
    http,
    reporting,
    running_app,
)
from tests.api.proxy import Proxy
from tests.runbook_client import HOLD, Runbooks

STATUS = "/api/ops/status"
RUNS = "/api/ops/runbooks"


def status_when(api, check, what: str, timeout: float = 15) -> dict:
    """The status once ``check(status)`` holds (the cache follows the API server within moments)."""

    def current():
        body = api.get(STATUS, headers=auth(READER_TOKEN)).json()
        return body if check(body) else None

    return wait_until(current, timeout, what)


def run(runbooks, name: str, **spec) -> dict:
    """Create a Runbook and wait for the controller to finish it."""
    runbooks.create(name, **spec)
    return runbooks.wait_finished(name, timeout=30)


PASSED = {"gate": {"passed": True, "enforced": False, "failures": []}}


READY_SESSION = {"venue", "session", "calendar"}  # /readyz shows the venue's session too


def test_empty_namespace(api):
    response = api.get(STATUS, headers=auth())
    assert response.status_code == 200
    body = response.json()
    assert body.pop("session")["venue"] == "XHKG"  # the venue's session: tests/api/test_sessions.py
    assert body == {
        "environment_mode": None,
        "active_profile": None,
        "active_window": None,
        "last_runbook": None,
        "runbook_history": [],
        "health_by_request": {},
        "last_health": None,
        "last_exit_codes": {},
        "last_updated_at": None,
        "state_reported_by": None,
        "state_stale_by": None,
        "audit": [],
    }


def test_one_runbook_with_an_odd_time_never_fails_the_status(server, runbooks):
    """A status written by hand (as anyone allowed to write a status may) with times near the year 9999 that
    overflow once moved to +08:00: the real process still answers, with the other runs as usual."""
    odd = "9999-12-31T23:59:59-12:00"
    finished = {"type": "Succeeded", "status": "True", "reason": "Succeeded", "lastTransitionTime": odd}
    runbooks.create("odd", command="health_check")
    runbooks.set_status(
        "odd", {"conditions": [finished], "exitCode": 0, "finishedAt": odd, "health": {"generated_at": odd}}
    )
    runbooks.create("fine", command="start")

    def both():
        code, _, text = http("GET", server.url + STATUS, headers=auth(READER_TOKEN))
        assert code == 200, text
        body = json.loads(text)
        return body if len(body["runbook_history"]) == 2 and body["last_exit_codes"] else None

    body = wait_until(both, 15, "both Runbooks in the status")
    assert body["last_runbook"]["request_id"] == "fine"
    assert body["health_by_request"]["odd"]["generated_at"] == odd
    assert body["last_exit_codes"] == {"health_check": 0}


def test_status_follows_the_runbooks(api, runbooks, controller, scripts):
    start_health = {"coverage_ratio": 0.999, "generated_at": "2025-09-22T00:00:00Z"}
    failover_health = {"coverage_ratio": 0.995, "generated_at": "2025-09-22T01:00:00Z"}
    scripts.write("start", RECORD + reporting({"health": start_health}))
    scripts.write(
        "failover", RECORD + "echo 'INFO: Failover completed'\n" + reporting({"health": failover_health})
    )
    scripts.write("health_check", RECORD + "exit 1\n")
    scripts.write("failback", RECORD + HOLD)
    # One after the other, so that they finish in this order.
    run(runbooks, "start-1", command="start", window="day", reason="open of day", requested_by="alice")
    run(
        runbooks,
        "fo-1",
        command="failover",
        profile="backup",
        window="night",
        reason="primary down",
        requested_by="bob",
    )
    run(runbooks, "hc-1", command="health_check")

    status = status_when(api, lambda s: s["last_exit_codes"].get("health_check") == 1, "three runs")
    assert status["environment_mode"] == "live"
    assert status["active_profile"] == "backup"
    assert status["active_window"] == "night"
    assert status["last_exit_codes"] == {"start": 0, "failover": 0, "health_check": 1}
    assert status["last_health"] == {
        "coverage_ratio": 0.995,
        "generated_at": "2025-09-22T09:00:00+08:00",
        **PASSED,
    }
    assert status["health_by_request"] == {
        "start-1": {"coverage_ratio": 0.999, "generated_at": "2025-09-22T08:00:00+08:00", **PASSED},
        "fo-1": {"coverage_ratio": 0.995, "generated_at": "2025-09-22T09:00:00+08:00", **PASSED},
    }
    assert {r["request_id"] for r in status["runbook_history"]} == {"start-1", "fo-1", "hc-1"}
    fo = next(r for r in status["runbook_history"] if r["request_id"] == "fo-1")
    assert fo["status"] == "success" and fo["logs"] == [{"level": "INFO", "message": "Failover completed"}]
    assert fo["finished_at"].endswith("+08:00")
    audit = {entry["request_id"]: entry for entry in status["audit"]}
    assert audit["fo-1"]["who"] == "bob"
    assert audit["fo-1"]["why"] == "primary down"
    assert audit["fo-1"]["what"].startswith("failover profile=backup")
    assert audit["fo-1"]["outcome"] == "success (exit code 0)"
    assert audit["hc-1"]["who"] == "unknown"
    assert audit["hc-1"]["outcome"] == "failed (exit code 1)"
    assert status["last_updated_at"].endswith("+08:00")

    # A run still going (its script holds) is the last runbook, and changes no state until it finishes.
    runbooks.create("fb-1", command="failback", window="day")
    status = status_when(
        api,
        lambda s: s["last_runbook"]["request_id"] == "fb-1" and s["last_runbook"]["status"] == "running",
        "the running run",
    )
    assert status["last_runbook"]["exit_code"] is None
    assert status["active_profile"] == "backup"
    assert "failback" not in status["last_exit_codes"]
    scripts.release()
    status = status_when(api, lambda s: s["active_profile"] == "primary", "the failback's state")
    assert status["last_exit_codes"]["failback"] == 0
    assert status["active_window"] == "day"

    # A deleted Runbook leaves the status.
    runbooks.delete("hc-1")
    status = status_when(api, lambda s: "health_check" not in s["last_exit_codes"], "the deletion")
    assert "hc-1" not in {r["request_id"] for r in status["runbook_history"]}
    assert scripts.runs() == ["start-1 dry=0", "fo-1 dry=0", "hc-1 dry=0", "fb-1 dry=0"]


def test_dry_runs_change_no_reported_state(api, runbooks, controller, scripts):
    scripts.write("start", RECORD + reporting({"health": {"coverage_ratio": 1.0}}))
    scripts.write("failover", RECORD + reporting({"health": {"coverage_ratio": 0.5}}) + "exit 1\n")
    run(runbooks, "real", command="start")
    status_when(api, lambda s: s["active_profile"] == "primary", "the real run")
    run(runbooks, "dry", command="failover", profile="backup", dry_run=True)  # finished after "real"
    status = status_when(api, lambda s: s["last_runbook"]["status"] == "failed", "the dry run")
    assert status["last_runbook"]["request_id"] == "dry" and status["last_runbook"]["dry_run"] is True
    assert status["active_profile"] == "primary"
    assert status["last_exit_codes"] == {"start": 0}
    assert status["last_health"]["coverage_ratio"] == 1.0
    assert status["health_by_request"]["dry"]["coverage_ratio"] == 0.5  # its own report, by request
    assert status["audit"][0]["what"].endswith("dry_run")
    assert scripts.runs() == ["real dry=0", "dry dry=1"]


def test_history_is_bounded_and_newest_first(start_api, runbooks):
    api = start_api(api_history=3, api_execute_wait_seconds=0)
    for i in range(5):
        response = api.post(
            "/api/ops/runbooks/execute",
            json={"command": "health_check", "request_id": f"h-{i}"},
            headers=auth(),
        )
        assert response.status_code == 202
    status = status_when(
        api, lambda s: s["last_runbook"] and s["last_runbook"]["request_id"] == "h-4", "5 runs"
    )
    assert [r["request_id"] for r in status["runbook_history"]] == ["h-4", "h-3", "h-2"]
    assert [e["request_id"] for e in status["audit"]] == ["h-4", "h-3", "h-2"]
    assert {e["who"] for e in status["audit"]} == {"admin"}


def test_timestamps_use_the_configured_zone(start_api, runbooks, controller, scripts):
    scripts.write("stop", RECORD)
    finished = run(runbooks, "stop-1", command="stop")["status"]["finishedAt"]  # UTC
    for zone, offset in (("Asia/Shanghai", "+08:00"), ("UTC", "+00:00")):
        api = start_api(timezone=zone)
        shown = api.get(STATUS, headers=auth()).json()["last_runbook"]["finished_at"]
        assert shown.endswith(offset), shown
        moment = datetime.datetime.fromisoformat(finished).replace(microsecond=0)
        assert datetime.datetime.fromisoformat(shown) == moment


def test_the_status_is_the_same_after_an_api_restart(make_settings, runbooks, controller, scripts):
    scripts.write("start", RECORD)
    scripts.write("failover", RECORD)
    settings = make_settings()
    with running_app(settings) as api:
        runbooks.create("before", command="start")
        before = status_when(api, lambda s: s["active_profile"] == "primary", "the first run")
    # While no API runs, Runbooks change: the new process lists them.
    run(runbooks, "between", command="failover", profile="backup")
    runbooks.delete("before")
    wait_until(lambda: runbooks.gone("before"), 15, "the controller to let the deleted Runbook go")
    with running_app(settings) as api:
        after = api.get(STATUS, headers=auth()).json()
    assert before["last_exit_codes"] == {"start": 0}
    assert after["last_exit_codes"] == {"failover": 0}
    assert after["active_profile"] == "backup"
    assert [r["request_id"] for r in after["runbook_history"]] == ["between"]


def test_the_watch_reconnects_after_its_connection_drops(api, runbooks, controller, scripts):
    scripts.write("stop", RECORD)
    cache = api.app.state.cache
    lists, watches = cache.lists, cache.watches
    cache.interrupt()  # as if the network or the API server dropped the watch
    runbooks.create("after-drop", command="stop")
    status = status_when(api, lambda s: s["last_exit_codes"].get("stop") == 0, "the run made after the drop")
    assert status["last_runbook"]["request_id"] == "after-drop"
    # It listed again, then watched again: the list may have brought the run before the watch is back.
    wait_until(lambda: cache.watches > watches and cache.connected, 10, "the watch to be connected again")
    assert cache.lists == lists + 1


def test_a_gone_resource_version_makes_the_cache_list_again(cluster, mdops_crds, namespace, runbooks):
    """410 Gone from the real API server: a watch resumed from a resourceVersion it no longer keeps."""
    runbooks.create("seen", command="start")
    api = new_api_client(cluster.kubeconfig)
    cache = RunbookCache(api, namespace)
    cache.resource_version = "1"  # as a watcher that remembered a very old position
    cache.start()
    try:
        wait_until(cache.synced.is_set, 15, "the cache to list after 410 Gone")
        assert (cache.gone, cache.lists, cache.errors) == (1, 1, 0)
        assert cache.get("seen") is not None
        runbooks.create("later", command="stop")
        wait_until(lambda: cache.get("later") is not None, 10, "the watch to follow")
    finally:
        cache.stop()
        api.close()


def test_the_cache_keeps_the_runs_list_order_through_changes_deletions_and_lists(
    cluster, mdops_crds, namespace, runbooks
):
    """The runs list pages from the order the cache keeps (api.listing.key) as Runbooks are made, change,
    go, and as it lists again: always every cached Runbook once, in that order."""
    for name in ("b", "a", "c"):  # within a second or two: the order is then by name
        runbooks.create(name, command="start")
    api = new_api_client(cluster.kubeconfig)
    cache = RunbookCache(api, namespace).start()

    def in_order(*names: str) -> bool:
        ordered = cache.ordered()
        return [r.name for r in ordered] == list(names) and ordered == sorted(
            cache.snapshot()[1], key=listing.key
        )

    try:
        wait_until(cache.synced.is_set, 15, "the first list")
        first = sorted(("a", "b", "c"), key=lambda n: cache.get(n).list_key)
        assert in_order(*first)
        runbooks.set_status("b", finished_status("b", 0))  # a new version of a run keeps its place
        runbooks.create("d", command="stop")
        runbooks.delete(first[0])
        wait_until(lambda: in_order(*first[1:], "d"), 15, "the cache to follow, in order")
        assert cache.get("b").finished
        cache.interrupt()  # lists again
        runbooks.create("e", command="stop")
        wait_until(lambda: cache.lists == 2 and in_order(*first[1:], "d", "e"), 15, "a second list, in order")
    finally:
        cache.stop()
        api.close()


def test_a_watch_the_server_ends_is_resumed_without_listing_again(cluster, mdops_crds, namespace, runbooks):
    """The API server closes a watch after its timeoutSeconds: the cache resumes from the last
    resourceVersion (no list, nothing missed)."""
    api = new_api_client(cluster.kubeconfig)
    cache = RunbookCache(api, namespace, watch_timeout_seconds=1).start()
    try:
        wait_until(cache.synced.is_set, 15, "the first list")
        wait_until(lambda: cache.watches >= 3, 15, "the server to end two watches")
        runbooks.create("while-resuming", command="start")
        wait_until(lambda: cache.get("while-resuming") is not None, 10, "the Runbook in the cache")
        assert (cache.lists, cache.errors, cache.gone) == (1, 0, 0)
    finally:
        cache.stop()
        api.close()


def test_a_watch_whose_connection_goes_silent_is_given_up_and_listed_again(
    cluster, mdops_crds, namespace, runbooks, tmp_path
):
    """Only the watch's connection goes silent (a connection tracker dropped it; no probe here to notice
    the API server away): the server ends its watches after watch_timeout_seconds, so a watch silent for
    half as long again is dead, and the cache lists again and sees what it missed."""
    with Proxy(cluster.server) as proxy:
        api = new_api_client(proxy.kubeconfig(cluster.kubeconfig, tmp_path / "proxied"))
        cache = RunbookCache(api, namespace, watch_timeout_seconds=2).start()
        try:
            wait_until(cache.synced.is_set, 15, "the first list")
            proxy.stall()  # the watch open now passes nothing more; a new connection flows
            runbooks.create("while-silent", command="start")
            wait_until(lambda: cache.get("while-silent") is not None, 15, "the cache to list again")
            assert cache.lists >= 2 and "timed out" in (cache.last_error or ""), cache.last_error
        finally:
            cache.stop()
            api.close()


def test_waiting_for_the_first_sync_is_woken_by_it(cluster, mdops_crds, namespace):
    api = new_api_client(cluster.kubeconfig)
    cache = RunbookCache(api, namespace)

    async def wait_then_start() -> bool:
        # call_soon runs start() only once wait_synced below has registered its waiter and suspended.
        asyncio.get_running_loop().call_soon(cache.start)
        return await cache.wait_synced(30)

    try:
        assert asyncio.run(wait_then_start()) is True
    finally:
        cache.stop()
        api.close()


def test_the_status_recovers_when_the_kube_apiserver_restarts(tmp_path, tokens_file):
    """A control plane of this test's own, whose kube-apiserver is stopped and started again (etcd keeps
    the data): status answers from the cache meanwhile, and the watch comes back by itself. The real
    controller runs the Runbooks there (and reconnects too)."""
    scripts = Scripts(tmp_path)
    scripts.write("start", RECORD)
    scripts.write("failover", RECORD)
    (tmp_path / "controller").mkdir()
    with ControlPlane(tmp_path / "cp") as plane:
        plane.install_crds()
        plane.kubectl("create", "namespace", "restart")
        controller = ControllerProcess(
            plane.kubeconfig, "restart", tmp_path / "controller", scripts.controller_env()
        )
        kube = new_api_client(plane.kubeconfig)
        made = Runbooks(kube, "restart")
        settings = ApiSettings(
            kubeconfig=plane.kubeconfig,
            namespace="restart",
            OPS_API_TOKEN=ADMIN_TOKEN,
            api_tokens_file=tokens_file,
        )
        try:
            with running_app(settings) as api:
                cache = api.app.state.cache
                made.create("before", command="start")
                status_when(api, lambda s: s["active_profile"] == "primary", "the first run")

                apiserver = next(p for p in plane.processes if p.name == "kube-apiserver")
                apiserver.stop()
                wait_until(lambda: not cache.connected, 30, "the watch to notice")
                during = api.get(STATUS, headers=auth())
                assert during.status_code == 200 and during.json()["last_exit_codes"] == {"start": 0}

                apiserver.restart("started again by the test")
                wait_until(
                    lambda: plane.kubectl("get", "--raw", "/readyz", check=False).returncode == 0,
                    60,
                    "the kube-apiserver to be ready again",
                    [apiserver],
                )
                made.create("after", command="failover", profile="backup")
                made.delete("before")
                status = status_when(
                    api,
                    lambda s: s["active_profile"] == "backup" and "start" not in s["last_exit_codes"],
                    "the runs made after the restart",
                    timeout=30,
                )
                assert [r["request_id"] for r in status["runbook_history"]] == ["after"]
                assert cache.lists >= 2 and cache.errors >= 1
                assert scripts.runs() == ["before dry=0", "after dry=0"]
        finally:
            controller.stop()
            kube.close()


def test_a_namespace_that_does_not_exist_yet_syncs_empty(make_settings):
    with running_app(make_settings(namespace=f"absent-{uuid.uuid4().hex[:8]}")) as api:
        ready = api.get("/readyz").json()  # nothing about the Runbooks; the venue's session beside
        assert ready["status"] == "ready" and ready.keys() == {"status", *READY_SESSION}
        assert api.get(STATUS, headers=auth()).json()["runbook_history"] == []


def test_status_and_execute_are_503_until_the_cache_syncs(make_settings, cluster):
    """A cache that cannot list (connection refused, as while the API server restarts) is not ready."""
    bad = cluster.workdir / "refused-kubeconfig"
    port = cluster.server.rsplit(":", 1)[1]
    bad.write_text(cluster.kubeconfig.read_text().replace(f":{port}", f":{free_port()}"))
    with running_app(make_settings(kubeconfig=bad, api_sync_wait_seconds=0.5), ready=False) as api:
        assert api.get("/readyz").status_code == 503
        response = api.get(STATUS, headers=auth())
        assert response.status_code == 503
        assert "not synced" in response.json()["detail"]
        execute = api.post("/api/ops/runbooks/execute", json={"command": "start"}, headers=auth())
        assert execute.status_code == 503
        assert api.get("/healthz").status_code == 200


def finished_status(request_id: str, exit_code: int) -> dict:
    """A finished run's status in the controller's contract, written by hand (see its one user)."""
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    reason, result = ("Succeeded", "success") if exit_code == 0 else ("Failed", "failed")
    status = models.RunbookStatus(
        conditions=[
            models.Condition(
                type="Succeeded",
                status="True" if exit_code == 0 else "False",
                reason=reason,
                last_transition_time=now,
            )
        ],
        request_id=request_id,
        window="day",
        target="default",
        exit_code=exit_code,
        result=result,
        started_at=now,
        finished_at=now,
        logs=[models.LogLine(time=now, level="INFO", message=f"line {n}") for n in range(5)],
        health={"coverage_ratio": 0.99, "generated_at": "2025-09-22T00:00:00Z"},
        state=models.EnvironmentState(environment_mode="live", active_profile="primary", active_window="day"),
        execution=models.Execution(executor="local", name="4242"),
        attempts=1,
    )
    return status.to_k8s()


@pytest.fixture
def many_runbooks(api_client, cluster, mdops_crds, request) -> Runbooks:
    """700 Runbooks in the real API server, a fifth of them finished. Their statuses are written by hand:
    a large population is the input here, not runs (latency with 10,000 is bench/api_latency.py's)."""
    name = f"many-{int(time.time())}"
    cluster.kubectl("create", "namespace", name)
    request.addfinalizer(lambda: cluster.kubectl("delete", "namespace", name, "--wait=false", check=False))
    api_client.configuration.connection_pool_maxsize = 16
    made = Runbooks(api_client, name)
    commands = ["start", "stop", "restart", "failover", "failback", "drill", "health_check"]

    def make(i: int) -> None:
        made.create(f"rb-{i:05d}", command=commands[i % 7], reason=f"load {i}", requested_by="bench")
        if i % 5 == 0:
            made.set_status(f"rb-{i:05d}", finished_status(f"rb-{i:05d}", 0 if i % 3 else 1))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(make, range(700)))
    return made


async def filled(cache) -> None:
    """Until the API's cache holds the Runbooks of ``many_runbooks`` (it fills from its own thread)."""
    deadline = time.monotonic() + 60
    while sum(r.finished for r in cache.snapshot()[1]) < 140 or len(cache) < 700:
        assert time.monotonic() < deadline, "700 Runbooks, 140 finished, in the cache"
        await asyncio.sleep(0.1)


def test_status_of_a_large_namespace_is_bounded_and_follows_changes(make_settings, many_runbooks):
    """The cache holds every Runbook; the answer keeps MDOPS_API_HISTORY entries and is recomputed when
    the cache changes."""
    app = create_app(make_settings(namespace=many_runbooks.namespace))

    async def check() -> tuple[dict, dict]:
        async with app.router.lifespan_context(app):
            cache = app.state.cache
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
                await filled(cache)
                first = (await http.get(STATUS, headers=auth())).json()
                version = cache.version
                await asyncio.to_thread(many_runbooks.create, "one-more", command="start")
                deadline = time.monotonic() + 30
                while cache.version == version:
                    assert time.monotonic() < deadline, "the new Runbook in the cache"
                    await asyncio.sleep(0.01)
                after = (await http.get(STATUS, headers=auth())).json()
        return first, after

    first, after = asyncio.run(check())
    assert len(first["runbook_history"]) == 20
    assert set(first["last_exit_codes"]) == {
        "start",
        "stop",
        "restart",
        "failover",
        "failback",
        "drill",
        "health_check",
    }
    assert after["last_runbook"]["request_id"] == "one-more"
    assert len(after["runbook_history"]) == 20


def test_the_runs_list_pages_through_every_runbook_with_filters(make_settings, many_runbooks):
    """GET /api/ops/runbooks: every Runbook of a large namespace once across its pages, newest first; the
    filters apply before paging; a bad query is a 422 and a token without status:read a 403."""
    app = create_app(make_settings(namespace=many_runbooks.namespace))

    async def check() -> tuple[list[dict], dict, list[httpx.Response]]:
        async with app.router.lifespan_context(app):
            cache = app.state.cache
            await filled(cache)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
                pages, cursor = [], None
                while len(pages) < 10:
                    params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
                    pages.append((await http.get(RUNS, params=params, headers=auth())).json())
                    cursor = pages[-1]["next_cursor"]
                    if cursor is None:
                        break
                failed = await http.get(RUNS, params={"status": "failed", "command": "start"}, headers=auth())
                refused = [
                    await http.get(RUNS, params=params, headers=auth(token))
                    for params, token in [
                        ({"limit": 0}, ADMIN_TOKEN),
                        ({"limit": 201}, ADMIN_TOKEN),
                        ({"cursor": "bm90IGEgY3Vyc29y"}, ADMIN_TOKEN),  # base64: not a place
                        ({"since": "2026-12-04T08:00:00"}, ADMIN_TOKEN),
                        ({"since": "1733299200"}, ADMIN_TOKEN),  # seconds: not a time here
                        ({"status": "done"}, ADMIN_TOKEN),
                        ({}, EXECUTOR_TOKEN),
                    ]
                ]
        return pages, failed.json(), refused

    pages, failed, refused = asyncio.run(check())
    listed = [r for p in pages for r in p["runbooks"]]
    assert [len(p["runbooks"]) for p in pages] == [200, 200, 200, 100]
    assert {p["matched"] for p in pages} == {700}
    assert sorted(r["name"] for r in listed) == [f"rb-{i:05d}" for i in range(700)]
    stamps = [r["created_at"] for r in listed]
    assert stamps == sorted(stamps, reverse=True)
    # rb-i is a start when i % 7 == 0, finished when i % 5 == 0, and then failed when i % 3 == 0
    expected = sorted(f"rb-{i:05d}" for i in range(0, 700, 105))
    assert sorted(r["name"] for r in failed["runbooks"]) == expected
    assert (failed["matched"], failed["next_cursor"]) == (len(expected), None)
    assert [r.status_code for r in refused] == [422, 422, 422, 422, 422, 422, 403]
    assert all(r.headers["content-type"] == "application/json" for r in refused)
    assert "query" in refused[2].text and "cursor" in refused[2].text


def test_readyz_says_nothing_of_the_runbooks_and_fails_while_the_watch_is_broken(
    start_server, cluster, runbooks, tmp_path
):
    """Open to probes: no counts. The API server unreachable past MDOPS_API_WATCH_GRACE_SECONDS: 503, and
    ready again once it is back; status keeps answering from the cache meanwhile."""
    runbooks.create("before", command="start")
    with Proxy(cluster.server) as proxy:
        server = start_server(
            MDOPS_KUBECONFIG=str(proxy.kubeconfig(cluster.kubeconfig, tmp_path / "proxied")),
            MDOPS_API_WATCH_GRACE_SECONDS="1",
        )
        code, _, text = http("GET", server.url + "/readyz")
        assert (code, json.loads(text)["status"], json.loads(text).keys() - READY_SESSION) == (
            200,
            "ready",
            {"status"},
        )
        proxy.cut()
        code, _, text = wait_until(
            lambda: (answer := http("GET", server.url + "/readyz"))[0] == 503 and answer, 30, "readyz to fail"
        )
        assert json.loads(text)["reason"].startswith("the Runbook watch has been down for")
        code, _, text = http("GET", server.url + STATUS, headers=auth(READER_TOKEN))
        assert code == 200 and json.loads(text)["last_runbook"]["request_id"] == "before"
        proxy.resume()
        wait_until(lambda: http("GET", server.url + "/readyz")[0] == 200, 30, "readyz to recover")
