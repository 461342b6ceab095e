"""Benchmark: the controller's overhead per Runbook, its throughput, and its memory.

Starts its own control plane and controller (local executor, a trivial script), then measures

1. overhead: for Runbooks created one after another, the time from the create call to the moment a
   watch sees the Runbook finished (p50, p99);
2. throughput: 200 Runbooks created at once, the time until every one has finished;
3. the controller's peak resident memory (VmHWM).

Targets on a 2-core machine: p50 < 300 ms, 200 Runbooks in < 60 s, memory < 200 MB.

    python -m bench.controller_overhead [--sequential 50] [--burst 200]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from devcluster.components import ControllerProcess
from devcluster.controlplane import ControlPlane
from devcluster.processes import wait_until
from runbooks import keys, models
from runbooks.kube import api_client

NAMESPACE = "bench"


class Finishes:
    """Records, from a list and a watch, when each Runbook of a namespace was first seen finished, and
    how (the reason of its Succeeded condition). A subclass follows another kind by its own ``list`` and
    ``finished`` (``bench.controller_scale.JobFinishes``: Jobs).

    Listed first, then watched from the list's resourceVersion (watched again when a watch ends, listed
    again after 410 Gone), so that no finish is missed however long the benchmark runs."""

    def __init__(self, api: client.ApiClient, namespace: str):
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.seen: dict[str, float] = {}
        self.reasons: dict[str, str] = {}
        self.ready = threading.Event()
        self.lock = threading.Lock()
        threading.Thread(target=self._follow, daemon=True).start()

    @staticmethod
    def finished(body: dict) -> str | None:
        """How the object finished (its Succeeded condition's reason), or None while it has not."""
        conditions = (body.get("status") or {}).get("conditions") or []
        ended = (c for c in conditions if c["type"] == "Succeeded" and c["status"] in ("True", "False"))
        return next((done.get("reason", "") for done in ended), None)

    def list(self, **options: object) -> dict:
        return self.custom.list_namespaced_custom_object(
            keys.GROUP, keys.VERSION, self.namespace, keys.PLURAL, **options
        )

    def _record(self, body: dict) -> None:
        reason = self.finished(body)
        if reason is not None:
            with self.lock:
                self.seen.setdefault(body["metadata"]["name"], time.monotonic())
                self.reasons.setdefault(body["metadata"]["name"], reason)

    def _follow(self) -> None:
        with contextlib.suppress(Exception):  # the control plane stops at the end of the run
            while True:
                listed = self.list()
                for body in listed["items"]:
                    self._record(body)
                version = listed["metadata"]["resourceVersion"]
                self.ready.set()
                with contextlib.suppress(ApiException):  # 410 Gone: list again
                    while True:
                        stream = watch.Watch().stream(
                            self.list, resource_version=version, timeout_seconds=600
                        )
                        for event in stream:  # an expired version raises ApiException (410)
                            version = event["object"]["metadata"]["resourceVersion"]
                            self._record(event["object"])

    def at(self, name: str) -> float | None:
        with self.lock:
            return self.seen.get(name)

    def count(self) -> int:
        with self.lock:
            return len(self.seen)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def memory_mb(pid: int, field: str = "VmHWM") -> float:
    """A memory figure of a process from /proc (VmHWM: its peak resident memory; VmRSS: the current)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def trivial_scripts(work: Path) -> Path:
    """A scripts folder whose health_check exits 0 at once."""
    scripts = work / "scripts"
    scripts.mkdir()
    (scripts / "health_check").write_text("#!/bin/sh\nexit 0\n")
    (scripts / "health_check").chmod(0o755)
    return scripts


def create_runbook(custom: client.CustomObjectsApi, namespace: str, name: str) -> float:
    """Create a trivial health_check Runbook; return when the create call began (time.monotonic)."""
    body = models.manifest(name, {"command": "health_check", "window": "day"})
    started = time.monotonic()
    custom.create_namespaced_custom_object(keys.GROUP, keys.VERSION, namespace, keys.PLURAL, body)
    return started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=50)
    parser.add_argument("--burst", type=int, default=200)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mdops-bench-"))
    scripts = trivial_scripts(work)
    with ControlPlane(work / "cluster") as cluster:
        cluster.install_crds()
        cluster.kubectl("create", "namespace", NAMESPACE)
        controller = ControllerProcess(
            cluster.kubeconfig, NAMESPACE, work, {"MDOPS_SCRIPTS_DIR": str(scripts)}
        )
        try:
            api = api_client(cluster.kubeconfig)
            custom = client.CustomObjectsApi(api)
            finishes = Finishes(api, NAMESPACE)
            finishes.ready.wait(10)

            def create(name: str) -> float:
                return create_runbook(custom, NAMESPACE, name)

            # Warm-up: the controller is up and has run once.
            create("warmup")
            wait_until(lambda: finishes.at("warmup"), 60, "the warm-up run")

            overheads = []
            for index in range(args.sequential):
                name = f"seq-{index}"
                started = create(name)
                done = wait_until(lambda name=name: finishes.at(name), 60, name)
                overheads.append((done - started) * 1000)

            names = [f"burst-{index}" for index in range(args.burst)]
            began = time.monotonic()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(create, names))
            created_in = time.monotonic() - began
            wait_until(lambda: all(finishes.at(n) for n in names), 600, "the burst to finish", interval=0.2)
            burst = max(finishes.at(n) for n in names) - began
            memory = memory_mb(controller.process.popen.pid)
        finally:
            controller.stop()

    report = {
        "overhead_ms": {
            "runs": len(overheads),
            "p50": round(statistics.median(overheads), 1),
            "p99": round(percentile(overheads, 0.99), 1),
            "max": round(max(overheads), 1),
        },
        "burst": {
            "runbooks": args.burst,
            "created_s": round(created_in, 2),
            "all_finished_s": round(burst, 2),
        },
        "controller_peak_rss_mb": round(memory, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
