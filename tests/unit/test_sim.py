"""The market-data simulator: the model driven step by step, its metrics, and the real server."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from devcluster.controlplane import REPO
from devcluster.processes import wait_until
from sim.metrics import METRIC_NAMES, make_registry
from sim.model import Config, FeedModel, SimError
from sim.process import SimProcess, run_sim

T = TypeVar("T")

# -- the model, driven deterministically -------------------------------------------------------------


def model(**overrides: Any) -> FeedModel:
    return FeedModel(Config(**{"noise": 0.0, **overrides}))


def test_default_universe_and_subscriptions() -> None:
    m = model()
    s = m.status()
    assert (s["state"], s["active_source"], s["window"]) == ("running", "primary", "day")
    assert s["expected_total"] == s["active_total"] == s["matched_total"] == 1280
    assert s["ignored_total"] == 2
    assert s["coverage_ratio"] == 1.0
    assert s["failover_latency_ms"] is None
    m.set_window("night")
    assert m.expected_total == m.matched_total == round(1280 * 0.7)
    with pytest.raises(SimError) as exc:
        m.set_window("evening")
    assert exc.value.status == 400


def test_universe_is_deterministic_per_seed() -> None:
    assert FeedModel(Config(seed=1)).universe == FeedModel(Config(seed=1)).universe
    assert FeedModel(Config(seed=1)).universe != FeedModel(Config(seed=2)).universe


def test_throughput_follows_matched_instruments() -> None:
    m = model(msg_rate=4.2)
    m.step(0.5)
    assert m.throughput == pytest.approx(1280 * 4.2)
    noisy_a, noisy_b = FeedModel(Config(seed=7)), FeedModel(Config(seed=7))
    samples = []
    for _ in range(20):
        noisy_a.step(0.5)
        noisy_b.step(0.5)
        assert noisy_a.throughput == noisy_b.throughput  # seeded
        samples.append(noisy_a.throughput)
    assert len(set(samples)) > 1
    assert all(0.8 * 1280 * 4.2 < x < 1.2 * 1280 * 4.2 for x in samples)


def test_stop_start_restart() -> None:
    m = model(restart_ms=300)
    assert m.stop() is True
    assert m.stop() is False  # idempotent
    m.step(0.5)
    s = m.status()
    assert (s["state"], s["active_total"], s["matched_total"], s["coverage_ratio"]) == ("stopped", 0, 0, 0.0)
    assert s["throughput_mps"] == 0.0
    assert m.start() is True
    assert m.status()["coverage_ratio"] == 1.0
    m.restart()
    assert m.state == "stopped"
    with pytest.raises(SimError):
        m.start()  # a restart is in progress
    m.step(0.2)
    assert m.state == "stopped"
    m.step(0.2)
    assert m.state == "running"
    assert m.failover_latency_ms is None  # a restart is not a switch


def test_lost_instruments_lower_coverage() -> None:
    m = model()
    m.set_faults(lose_instruments=64)
    m.step(0.5)
    assert m.matched_total == 1216
    assert m.coverage_ratio == pytest.approx(1216 / 1280)
    assert m.throughput == pytest.approx(1216 * 4.2)
    m.set_faults(lose_instruments=5000)
    assert m.matched_total == 0
    m.clear_faults()
    assert m.coverage_ratio == 1.0


def test_stalled_source_delivers_nothing() -> None:
    m = model(failover_ms=100, failover_jitter=0.0)
    m.set_faults(stall_source="backup")  # not active: no effect
    assert m.matched_total == 1280
    assert m.source_up("primary")
    m.set_faults(stall_source="primary")
    m.step(0.5)
    assert (m.matched_total, m.coverage_ratio, m.throughput) == (0, 0.0, 0.0)
    assert m.active_total == 1280
    assert not m.source_up("primary")
    m.switch("backup")
    m.step(0.2)
    assert m.active_source == "backup"
    assert m.coverage_ratio == 1.0
    assert m.source_up("backup")
    assert m.status()["faults"]["stall_source"] == "primary"  # other faults kept
    with pytest.raises(SimError):
        m.set_faults(stall_source="tertiary")


def test_backlog_grows_and_drains() -> None:
    m = model(consumer_capacity=8000)  # 1280 * 4.2 = 5376 msg/s
    m.step(1.0)
    assert m.backlog == 0
    m.set_faults(grow_backlog=5000)  # net +2376 msg/s
    m.step(2.0)
    assert m.backlog == pytest.approx(2 * 2376)
    m.clear_faults()  # net -2624 msg/s
    m.step(1.0)
    assert m.backlog == pytest.approx(2 * 2376 - 2624)
    m.step(5.0)
    assert m.backlog == 0
    slow = model(consumer_capacity=5000)  # throughput above capacity: +376 msg/s
    slow.step(10.0)
    assert slow.backlog == pytest.approx(3760)


def test_failover_takes_the_configured_time_and_measures_it() -> None:
    m = model(failover_ms=1000, failover_jitter=0.0)
    m.step(0.25)
    tr = m.switch("backup")
    assert (tr.action, tr.target) == ("failover", "backup")
    s = m.status()
    assert (s["state"], s["active_source"], s["throughput_mps"], s["matched_total"]) == (
        "failing_over",
        "primary",
        0.0,
        0,
    )
    m.step(0.5)
    assert m.state == "failing_over"
    assert m.seconds_to_next_event() == pytest.approx(0.5)
    m.step(0.75)  # overshoots the due time: the switch completes at it, not at the end of the step
    s = m.status()
    assert (s["state"], s["active_source"]) == ("running", "backup")
    assert s["failover_latency_ms"] == 1000
    assert s["last_switch"] == {"action": "failover", "from": "primary", "to": "backup", "latency_ms": 1000}
    assert m.throughput == pytest.approx(1280 * 4.2)
    with pytest.raises(SimError) as exc:
        m.switch("backup")
    assert exc.value.status == 409
    assert "already backup" in exc.value.detail
    m.switch("primary", latency_ms=200)
    m.step(0.2)
    assert (m.active_source, m.status()["failover_latency_ms"]) == ("primary", 200)


def test_failover_latency_is_jittered_with_the_seed() -> None:
    def latencies(seed: int) -> list[int]:
        m = FeedModel(Config(seed=seed, failover_ms=1500, failover_jitter=0.2))
        out = []
        for target in ("backup", "primary") * 3:
            m.switch(target)
            m.step(2.0)
            out.append(m.status()["failover_latency_ms"])
        return out

    first = latencies(3)
    assert first == latencies(3)
    assert all(1200 <= x <= 1800 for x in first)
    assert len(set(first)) > 1


def test_switch_refusals() -> None:
    m = model()
    with pytest.raises(SimError, match="already primary"):
        m.switch("primary")
    m.switch("backup")
    with pytest.raises(SimError, match="in progress"):
        m.switch("backup")
    with pytest.raises(SimError, match="in progress"):
        m.stop()
    m.step(5.0)
    m.stop()
    with pytest.raises(SimError, match="stopped"):
        m.switch("primary")
    with pytest.raises(SimError) as exc:
        m.switch("primary", latency_ms=-1)
    assert exc.value.status == 400


def test_collector_exports_state_at_scrape_time() -> None:
    m = model(failover_ms=100, failover_jitter=0.0)
    registry = make_registry(m)

    def scrape() -> dict[str, list]:
        text = generate_latest(registry).decode()
        return {f.name: f.samples for f in text_string_to_metric_families(text)}

    families = scrape()
    assert set(families) == set(METRIC_NAMES) - {"md_failover_latency_ms"}  # no latency before a switch
    for name in METRIC_NAMES:
        if name in families and name not in ("md_feed_up", "md_active_source_info"):
            assert len(families[name]) == 1 and families[name][0].labels == {}, name
    assert families["md_subscription_coverage_ratio"][0].value == 1.0
    assert {s.labels["source"]: s.value for s in families["md_feed_up"]} == {"primary": 1.0, "backup": 0.0}
    m.switch("backup")
    m.step(0.5)
    families = scrape()
    assert families["md_failover_latency_ms"][0].value == pytest.approx(100)
    assert [s.labels for s in families["md_active_source_info"]] == [{"source": "backup"}]
    assert {s.labels["source"]: s.value for s in families["md_feed_up"]} == {"primary": 0.0, "backup": 1.0}


# -- the real server, as a subprocess ----------------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[SimProcess]:
    with run_sim(args=["--failover-ms", "200"]) as proc:
        yield proc


def scrape(sim: SimProcess) -> dict[str, list]:
    code, text = sim.request("GET", "/metrics")
    assert code == 200
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_server_metrics_and_health(sim: SimProcess) -> None:
    assert sim.request("GET", "/healthz") == (200, {"ok": True})
    families = scrape(sim)
    assert set(families) == set(METRIC_NAMES) - {"md_failover_latency_ms"}
    assert [s.value for s in families["md_subscription_expected_total"]] == [1280.0]
    (throughput,) = families["md_throughput_mps"]
    assert throughput.labels == {} and throughput.value > 0


def test_server_failover_and_failback(sim: SimProcess) -> None:
    code, status = sim.request("POST", "/admin/failover")
    assert code == 202
    assert status["state"] == "failing_over"
    assert status["transition"]["target"] == "backup"
    final = wait_until(lambda: (s := sim.status())["state"] == "running" and s, 10, "the restart to finish")
    assert final["active_source"] == "backup"
    assert 160 <= final["failover_latency_ms"] <= 240
    assert scrape(sim)["md_failover_latency_ms"][0].value == pytest.approx(
        final["failover_latency_ms"], abs=1
    )

    code, body = sim.request("POST", "/admin/failover")
    assert code == 409
    assert "already backup" in body["detail"]

    started = time.monotonic()
    code, status = sim.request("POST", "/admin/failback?wait=true", {"latency_ms": 300, "jitter": 0})
    elapsed_ms = (time.monotonic() - started) * 1000
    assert code == 200
    assert (status["state"], status["active_source"], status["transition"]) == ("running", "primary", None)
    assert status["failover_latency_ms"] == 300
    assert elapsed_ms >= 290  # the call really waited for the switch


def test_server_controls_and_faults(sim: SimProcess) -> None:
    code, status = sim.request("POST", "/admin/stop")
    assert (code, status["state"], status["coverage_ratio"]) == (200, "stopped", 0.0)
    code, status = sim.request("POST", "/admin/start")
    assert (code, status["state"], status["coverage_ratio"]) == (200, "running", 1.0)
    code, status = sim.request("POST", "/admin/restart")
    assert (code, status["state"]) == (200, "running")
    code, status = sim.request("POST", "/admin/window", {"window": "night"})
    assert (code, status["window"], status["expected_total"]) == (200, "night", 896)
    code, status = sim.request("POST", "/admin/faults", {"lose_instruments": 96, "grow_backlog": 50000})
    assert code == 200
    assert status["faults"] == {"lose_instruments": 96, "stall_source": None, "grow_backlog": 50000}
    assert status["coverage_ratio"] == pytest.approx(800 / 896, abs=1e-6)
    wait_until(lambda: sim.status()["consumer_backlog_messages"] > 0, 10, "a backlog")
    code, status = sim.request("POST", "/admin/faults", {"stall_source": "primary"})
    assert (status["matched_total"], status["faults"]["lose_instruments"]) == (0, 96)
    code, status = sim.request("DELETE", "/admin/faults")
    assert code == 200
    assert status["faults"] == {"lose_instruments": 0, "stall_source": None, "grow_backlog": 0}
    assert status["coverage_ratio"] == 1.0


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "detail"),
    [
        ("GET", "/nope", None, 404, "not found"),
        ("DELETE", "/admin/status", None, 405, "not allowed"),
        ("POST", "/admin/window", {"window": "evening"}, 400, "window"),
        ("POST", "/admin/window", {}, 400, "window is required"),
        ("POST", "/admin/faults", {"lose_instruments": "many"}, 400, "integer"),
        ("POST", "/admin/faults", {"stall_source": "tertiary"}, 400, "stall_source"),
        ("POST", "/admin/faults", {"melt": True}, 400, "unknown field"),
        ("POST", "/admin/failover", {"latency_ms": "fast"}, 400, "number"),
        ("POST", "/admin/failback", None, 409, "already primary"),
        ("POST", "/admin/failover?wait=maybe", None, 400, "wait"),
    ],
)
def test_server_errors(sim: SimProcess, method: str, path: str, body: object, code: int, detail: str) -> None:
    got_code, got = sim.request(method, path, body)
    assert got_code == code
    assert detail in got["detail"]
    assert sim.status()["state"] == "running"


def test_server_rejects_bad_json(sim: SimProcess) -> None:
    for payload in (b"{bad", b"[1, 2]"):
        req = urllib.request.Request(sim.url + "/admin/faults", data=payload, method="POST")
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, timeout=5)
        assert exc.value.code == 400


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--port", "99999"], "argument --port: must be a port from 0 to 65535, got '99999'"),
        (["--port", "-1"], "argument --port: must be a port from 0 to 65535, got '-1'"),
        (["--port", "0", "--tick", "inf"], "argument --tick: must be a finite number > 0, got 'inf'"),
        (["--port", "0", "--msg-rate", "nan"], "error: msg_rate: not a finite number"),
        (["--port", "0", "--failover-ms", "inf"], "error: failover_ms: not a finite number"),
    ],
)
def test_invalid_options_are_refused_in_a_line_without_a_traceback(args, said) -> None:
    """Not bind()'s OverflowError, nor a ticker thread that dies of an infinite sleep while the server
    serves on (a NaN rate: metrics of NaN for ever)."""
    done = subprocess.run(
        [sys.executable, "-m", "sim", *args], capture_output=True, text=True, timeout=30, cwd=REPO
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.rstrip().endswith(said) and "Traceback" not in done.stderr, done.stderr
