"""Benchmark: the controller at scale. Memory through a burst, a restart over finished Runbooks, throughput,
and the API-server calls per run, for the local executor and the Job executor.

Each executor gets its own local control plane (etcd, kube-apiserver, kube-controller-manager, podsim) and
the real controller process; every Runbook is a trivial health_check:

- local: the runner runs ``health_check`` (``exit 0``) from a scripts folder, as the controller's child;
- job: the controller creates a Job per run (ttlSecondsAfterFinished ``--ttl``, 60 s, so that the TTL
  controller deletes them; with 5 s it deleted Jobs and pods before the controller had read their result,
  and runs failed; ``--keep-jobs``: the controller's default, an hour, as installed, so that the figures
  leave out the clean-up, which comes after the benchmark); podsim runs its pod in its default mode:
  the pod exits 0 at once, and its termination message, which the controller reads as the runner's
  result, is the pod annotation ``podsim.mdops.io/termination-message`` that the controller puts on every
  Job pod (``MDOPS_JOB_POD_ANNOTATIONS``): a valid runner result (success, one log line), built here.
  The Job, its pod, the termination message and the clean-up are real; the runner itself does not run.

Phases, for each executor (each in its own namespace, with its own controller):

1. throughput: ``--throughput`` Runbooks (2,000) created at once by ``--workers`` threads; the time from
   the first create to the last Runbook seen finished (a watch), and the API-server calls per run;
2. burst: ``--count`` Runbooks (10,000) created at once; the controller's resident memory (VmRSS from
   /proc, every 0.5 s) before, throughout, when all have finished and after ``--settle`` seconds (Jobs
   cleaned up first), VmHWM at the end, its CPU time per run and that of each process of the control
   plane, and the API-server calls per run;
3. bare Jobs (Job executor, ``--bare-jobs``, 2,000): Kubernetes alone, the floor under the Job executor's
   throughput on this machine: Jobs as the controller builds them, created at once with no controller;
   the time until all have ended, and the CPU per Job of each process until they are cleaned up;
4. restart, over each namespace whose Runbooks all finished: a fresh controller, one Runbook created
   right after its process started; the time from the start to that Runbook finished, and the API calls
   made until the controller is quiet (per finished Runbook, after taking off what one run costs);
5. with ``--restart-history N``: the same over N finished Runbooks written directly (created, then
   their status written as a finished run's; ``bench.api_latency.create_history``), at a size the burst
   may not reach: first a start with nothing kept (a new pod: no session table kept, see
   ``MDOPS_CALENDAR_CACHE``), then a restart (the container restarted: the table kept by that start);
5b. with ``--restart-held N`` (local executor): a restart over a freeze: a RunbookPolicy blacks out every
   failover of profile primary, N of them are created and held, the controller is restarted, and a failover
   of profile backup (another target, which the blackout does not hold) is created right after the start:
   the time from the start to that run finished,
   to the controller holding all N again (its ``md_runbook_held`` gauge), and its API calls per held run;
6. live logs (local executor, ``--log-runs``, 4): dry-run drills whose script prints a line with its own
   clock (``tick <ns>``) every 0.25 s, twenty times, then 2,000 lines at once; a watch notes when each
   tick first shows in the Runbook's status: the script-write to status latency, and the status patches
   a run costs (the burst of lines must not cost one patch each).

A burst stops early (and the report says where and why) past ``--timeout`` seconds or ``--max-rss-mb``,
a restart past ``--restart-timeout``.

API calls are counted by a witness outside the controller: the kube-apiserver's own
``apiserver_request_total`` (:meth:`devcluster.controlplane.ControlPlane.request_counts`), by verb, resource
and subresource, before and after. Only the controller writes Runbook status, Runbook patches, Leases and Jobs
here (the benchmark's own creates are taken off; the API server renews its own identity Lease every 10 s,
which counts as noise); Events are counted as the Event objects whose source is the controller
(``mdops-controller``), as the controller-manager posts Events about Jobs too.

Every figure is printed next to the goal of the scale issue and next to the figure measured before its
fix (``bench/controller_scale_baseline.json``, written by ``--record-baseline``: date, commit, command).
``--heapdump DIR`` runs the controllers under ``bench.heapdump`` and writes heap reports at each
measuring point (slower: for finding where memory goes, not for the tables). ``--profile DIR`` writes the
kube-apiserver's own CPU profile of each burst (``--profile-seconds``, 30, from when a tenth has finished):
``go tool pprof -top -cum <kube-apiserver binary> DIR/job-burst-kube-apiserver.pprof``.

    python -m bench.controller_scale [--executors local,job] [--count 10000] [--throughput 2000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, watch

from bench.api_latency import create_history
from bench.controller_overhead import Finishes, create_runbook, memory_mb, trivial_scripts
from bench.cpu_by_process import stat
from controller.events import COMPONENT
from controller.executors import RunRequest
from controller.executors.job import build_job
from controller.settings import ControllerSettings
from devcluster.components import SESSIONS, ControllerProcess
from devcluster.controlplane import REPO, ControlPlane
from devcluster.processes import wait_until
from runbooks import keys, kube, models, policy
from runner.logs import dumps
from runner.result import build_result

BASELINE = Path(__file__).with_name("controller_scale_baseline.json")
TICKS = 20
# The live-log drill: a line with the script's own clock every 0.25 s, then a burst of 2,000 lines.
LOG_SCRIPT = f"""#!/bin/sh
for i in $(seq {TICKS}); do echo "tick $(date +%s%N)"; sleep 0.25; done
seq 2000
sleep 1
"""
TICK = re.compile(r"tick (\d+)")
SAMPLE_SECONDS = 0.5
HOUR = datetime.timedelta(hours=1)
PROGRESS_SECONDS = 30  # a line on stderr this often during a burst
# The controller's writes, as "VERB resource[/subresource]" (the start of a ControlPlane.request_counts key).
STATUS_PATCHES, RUNBOOK_PATCHES, JOBS_CREATED = "PATCH runbooks/status", "PATCH runbooks", "POST jobs"
LEASE_WRITES = ("POST leases", "PUT leases", "PATCH leases", "DELETE leases")
# Calls that only the controller makes here (the start-up count): Runbooks, Leases, the gate's policies and
# approvals, Job creates, pod lists.
# Not its Job reads (on adoption) or its Job patch (the TTL, one per run): the controller-manager reads and
# patches Jobs too (about 5 reads a Job), and the API server's count does not say who called.
CONTROLLER_RESOURCES = ("runbooks", "runbooks/status", "leases", "runbookpolicies", "runbookapprovals")
CONTROLLER_OTHERS = ("POST jobs", "LIST pods")


def job_result_message() -> str:
    """The runner's result for a successful health_check, as a Job pod's termination message."""
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return dumps(
        build_result(exit_code=0, message="health_check succeeded (podsim)", started_at=stamp,
                     finished_at=stamp, dry_run=False, health=None, state=None,
                     logs=[{"time": stamp, "level": "INFO", "message": "podsim ran the pod"}])
    )  # fmt: skip


ENDED = ("Complete", "Failed")  # a Job's conditions once it has ended


class JobFinishes(Finishes):
    """When each Job of a namespace was first seen ended (Complete or Failed)."""

    def __init__(self, api: client.ApiClient, namespace: str):
        self.batch = client.BatchV1Api(api)
        super().__init__(api, namespace)

    @staticmethod
    def finished(body: dict) -> str | None:
        conditions = (body.get("status") or {}).get("conditions") or []
        return next((c["type"] for c in conditions if c["type"] in ENDED and c["status"] == "True"), None)

    def list(self, **options: object) -> dict:
        options.setdefault("_preload_content", False)  # dicts, as for Runbooks; a watch reads the stream
        response = self.batch.list_namespaced_job(self.namespace, **options)
        return response if options.get("watch") else json.loads(response.data)


class Sampler(threading.Thread):
    """The controller's resident memory (VmRSS), every SAMPLE_SECONDS, until stopped or it exits."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self.stopped = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.samples.append((time.monotonic(), memory_mb(self.pid, "VmRSS")))
            except FileNotFoundError:
                return
            self.stopped.wait(SAMPLE_SECONDS)

    def peak(self, since: float = 0.0) -> float:
        return max((rss for at, rss in self.samples if at >= since), default=float("nan"))

    def last(self) -> float:
        return self.samples[-1][1] if self.samples else float("nan")


def call(key: str) -> str:
    """ "VERB resource[/sub]" of a ControlPlane.request_counts key, whatever its outcome."""
    return " ".join(key.split(" ")[:2])


def controller_calls(calls: Counter[str]) -> Counter[str]:
    return Counter(
        {key: n for key, n in calls.items()
         if call(key).split(" ")[1] in CONTROLLER_RESOURCES or call(key) in CONTROLLER_OTHERS}
    )  # fmt: skip


def total(calls: Counter[str], *kinds: str) -> int:
    """Calls of these kinds ("VERB resource[/sub]"), whatever their outcome."""
    return sum(n for key, n in calls.items() if call(key) in kinds)


def per_run(calls: Counter[str], runs: int) -> dict[str, float]:
    return {key: round(n / runs, 3) for key, n in sorted(calls.items()) if n}


class Bench:
    def __init__(self, args: argparse.Namespace, executor: str, cluster: ControlPlane, work: Path):
        self.args = args
        self.executor = executor
        self.cluster = cluster
        self.work = work
        config = kube.configuration(cluster.kubeconfig)
        config.connection_pool_maxsize = args.workers
        self.api = client.ApiClient(config)
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        scripts = trivial_scripts(work)
        (scripts / "drill").write_text(LOG_SCRIPT)
        (scripts / "drill").chmod(0o755)
        # Bursts beyond the namespace's cap of unfinished Runbooks, and finished Runbooks counted as they
        # were written: no cap, no retention.
        self.env = {
            "MDOPS_SCRIPTS_DIR": str(scripts),
            "MDOPS_EXECUTOR": executor,
            "MDOPS_MAX_UNFINISHED_PER_NAMESPACE": "0",
            "MDOPS_RETENTION_INTERVAL_SECONDS": "0",
        }
        if args.max_parallel:
            self.env["MDOPS_MAX_PARALLEL"] = str(args.max_parallel)
        self.job_pod_annotations = {"podsim.mdops.io/termination-message": job_result_message()}
        if executor == "job":
            self.env["MDOPS_JOB_POD_ANNOTATIONS"] = json.dumps(self.job_pod_annotations)
            if not args.keep_jobs:
                self.env["MDOPS_JOB_TTL_SECONDS"] = str(args.ttl)
        self.namespace = ""
        self.dumps: dict[str, int] = {}

    # -- the controller ---------------------------------------------------
    def start_controller(self, name: str, **env: str) -> ControllerProcess:
        env, module = self.env | env, "controller"
        if self.args.heapdump:
            module = "bench.heapdump"
            env |= {"MDOPS_HEAPDUMP_DIR": str(self.args.heapdump / f"{self.executor}-{name}"),
                    "MDOPS_HEAPDUMP_FRAMES": str(self.args.heapdump_frames)}  # fmt: skip
        return ControllerProcess(self.cluster.kubeconfig, self.namespace, self.work, env, name, module=module)

    def profile(self, namespace: str, finishes: Finishes, count: int) -> threading.Thread | None:
        """With --profile: the kube-apiserver's CPU profile over --profile-seconds from when a tenth of the
        burst has finished, written as ``<executor>-<namespace>-kube-apiserver.pprof``."""
        if not self.args.profile:
            return None
        path = self.args.profile / f"{self.executor}-{namespace}-kube-apiserver.pprof"

        def take() -> None:
            wait_until(lambda: finishes.count() > count // 10, self.args.timeout, "a tenth of the burst")
            path.write_bytes(self.cluster.cpu_profile(self.args.profile_seconds))
            print(f"wrote {path}", file=sys.stderr, flush=True)

        thread = threading.Thread(target=take, daemon=True)
        thread.start()
        return thread

    def heapdump(self, controller: ControllerProcess, label: str) -> None:
        """With --heapdump: have the controller write a heap report, named after ``label``."""
        if not self.args.heapdump:
            return
        folder = Path(controller.env["MDOPS_HEAPDUMP_DIR"])
        self.dumps[controller.process.name] = seq = self.dumps.get(controller.process.name, 0) + 1
        controller.process.popen.send_signal(signal.SIGUSR1)
        report = folder / f"heap-{seq}.json"
        wait_until(report.exists, 600, f"heap report {report}", [controller.process], interval=0.5)
        report.replace(folder / f"{seq}-{label}.json")

    # -- helpers ------------------------------------------------------------
    def create_all(self, names: list[str]) -> float:
        """Create the Runbooks concurrently; return when the first create began."""
        with ThreadPoolExecutor(self.args.workers) as pool:
            starts = list(pool.map(lambda name: create_runbook(self.custom, self.namespace, name), names))
        return min(starts)

    def machine_cpu(self, controller: ControllerProcess | None = None) -> dict[str, float]:
        """CPU seconds so far of each process of the control plane and of the controller: where a burst's
        work goes on this machine."""
        processes = [*self.cluster.processes, *([controller.process] if controller else [])]
        return {process.name: stat(process.popen.pid)[1] for process in processes}

    def cleaned_up(self, what: str, timeout: float, processes: list) -> None:
        """Wait until the namespace's Jobs are gone by their TTL; with ``--keep-jobs`` nothing waits (their
        TTL is the controller's default, an hour: they go after the benchmark)."""
        if not self.args.keep_jobs:
            no_jobs = lambda: not self.batch.list_namespaced_job(self.namespace, limit=1).items  # noqa: E731
            wait_until(no_jobs, timeout, what, processes, interval=1)

    def controller_events(self) -> int:
        """Events in the namespace posted by the controller, counted from the objects."""
        total, token = 0, None
        while True:
            response = self.core.list_namespaced_event(
                self.namespace, field_selector=f"source={COMPONENT}", limit=5000, _continue=token,
                _preload_content=False,
            )  # fmt: skip
            page = json.loads(response.data)
            total += len(page["items"])
            token = page["metadata"].get("continue")
            if not token:
                return total

    def use_namespace(self, namespace: str, create: bool) -> Finishes:
        self.namespace = namespace
        if create:
            self.cluster.kubectl("create", "namespace", namespace)
        finishes = Finishes(self.api, namespace)
        wait_until(finishes.ready.is_set, 120, f"the list of Runbooks in {namespace}")
        return finishes

    # -- phases ---------------------------------------------------------------
    def bare_jobs(self, namespace: str, count: int) -> dict[str, Any]:
        """Kubernetes alone, the floor under the Job executor's throughput: ``count`` Jobs as the controller
        builds them (:func:`build_job`, without the owner reference to a Runbook that does not exist, the
        TTL set at creation instead of once a result is recorded) created at once with no controller.
        The time until all have ended, and the CPU per Job of each process until they are cleaned up."""
        self.namespace = namespace
        self.cluster.kubectl("create", "namespace", namespace)
        ended = JobFinishes(self.api, namespace)
        wait_until(ended.ready.is_set, 120, f"the list of Jobs in {namespace}")
        settings = ControllerSettings(
            executor="job", kubeconfig=self.cluster.kubeconfig, job_pod_annotations=self.job_pod_annotations
        )
        spec = models.RunbookSpec(command="health_check", window="day").model_dump(mode="json", by_alias=True)

        def create(name: str) -> None:
            request = RunRequest(namespace, name, uuid.uuid4().hex, name, "health_check", "day", spec)
            job = build_job(request, settings)
            del job["metadata"]["ownerReferences"]
            job["metadata"]["name"] = name  # not the run's (name-uid), to be found by the name it was given
            ttl = settings.job_ttl_seconds if self.args.keep_jobs else self.args.ttl
            job["spec"]["ttlSecondsAfterFinished"] = ttl
            self.batch.create_namespaced_job(namespace, job, _preload_content=False)

        processes = self.cluster.processes
        create("warmup")
        wait_until(lambda: ended.at("warmup"), 120, "the warm-up Job", processes)
        self.cleaned_up("the warm-up Job's clean-up", 120, processes)
        cpu_before = self.machine_cpu()
        names = [f"job-{index:05d}" for index in range(count)]
        began = time.monotonic()
        with ThreadPoolExecutor(self.args.workers) as pool:
            list(pool.map(create, names))
        result: dict[str, Any] = {"count": count, "created_s": round(time.monotonic() - began, 1)}
        wait_until(lambda: all(map(ended.at, names)), self.args.timeout, "the Jobs", processes, interval=0.5)
        last = max(map(ended.at, names))
        result |= {
            "all_finished_s": round(last - began, 1),
            "runs_per_s": round(count / (last - began), 2),
            "failed": sum(ended.reasons[name] != "Complete" for name in names),
        }
        self.cleaned_up("the Jobs' clean-up", 1800, processes)
        result["cpu_ms_per_run_by_process"] = {
            name: round((seconds - cpu_before[name]) * 1000 / count, 1)
            for name, seconds in self.machine_cpu().items()
        }
        return result

    def burst(self, namespace: str, count: int) -> dict[str, Any]:
        finishes = self.use_namespace(namespace, create=True)
        controller = self.start_controller(f"controller-{namespace}")
        pid = controller.process.popen.pid
        sampler = Sampler(pid)
        try:
            create_runbook(self.custom, namespace, "warmup")
            wait_until(lambda: finishes.at("warmup"), 600, "the warm-up run", [controller.process])
            if self.executor == "job":
                self.cleaned_up("the warm-up Job's clean-up", 120, [controller.process])
            time.sleep(5)  # a few samples of the idle controller
            result: dict[str, Any] = {
                "count": count,
                "rss_before_mb": sampler.last(),
                "load": os.getloadavg(),
            }
            self.heapdump(controller, "before")
            calls_before, cpu_before = self.cluster.request_counts(), self.machine_cpu(controller)
            events_before = self.controller_events()

            names = [f"rb-{index:05d}" for index in range(count)]
            began = self.create_all(names)
            result["created_s"] = round(time.monotonic() - began, 1)
            self.heapdump(controller, "created")
            profiler = self.profile(namespace, finishes, count)
            stopped = self._wait_for_finishes(finishes, names, began, sampler, controller)
            if profiler is not None and not stopped:
                profiler.join()
            done = [at for at in map(finishes.at, names) if at]
            reasons = Counter(finishes.reasons.get(name) for name in names if finishes.at(name))
            result |= {
                "finished": len(done),
                "failed": len(done) - reasons["Succeeded"],
                "outcomes": dict(reasons),
                "all_finished_s": round(max(done) - began, 1) if not stopped else None,
                "runs_per_s": round(len(done) / (max(done) - began), 2) if done else 0.0,
                "peak_rss_mb": sampler.peak(since=began),
            }
            result["rss_stopped_mb" if stopped else "rss_finished_mb"] = sampler.last()
            if stopped:
                result["stopped"] = stopped
                return result
            if self.executor == "job" and not self.args.keep_jobs:
                self.cleaned_up("the Jobs' clean-up", 1800, [controller.process])
                result["jobs_cleaned_s"] = round(time.monotonic() - began, 1)
            settle_from = time.monotonic()
            time.sleep(self.args.settle)  # the interval after which memory should be back (sampled meanwhile)
            result |= {
                "rss_settled_mb": sampler.last(),
                "settled_growth_mb": round(sampler.last() - result["rss_before_mb"], 1),
                "vmhwm_mb": memory_mb(pid, "VmHWM"),
                "cpu_ms_per_run_by_process": {
                    name: round((seconds - cpu_before[name]) * 1000 / count, 1)
                    for name, seconds in self.machine_cpu(controller).items()
                },
                "settle_s": round(time.monotonic() - settle_from, 1),
            }
            result["cpu_s_per_run"] = round(
                result["cpu_ms_per_run_by_process"][controller.process.name] / 1000, 4
            )
            self.heapdump(controller, "settled")
            calls = self.cluster.request_counts() - calls_before
            calls["POST runbooks"] -= count  # the benchmark's own creates
            events = self.controller_events() - events_before
            result |= self._writes(controller_calls(calls), events, count)
            result["calls_per_run_all_clients"] = per_run(  # the controller-manager's watches aside
                Counter({key: n for key, n in calls.items() if not key.startswith("WATCH ")}), count
            )
            return result
        finally:
            sampler.stopped.set()
            controller.stop()

    def restart(
        self, namespace: str, finished: int, run_cost: float, probe: str = "after-restart"
    ) -> dict[str, Any]:
        finishes = self.use_namespace(namespace, create=False)
        wait_until(lambda: finishes.count() >= finished, 120, f"the finished Runbooks of {namespace}")
        calls_before = self.cluster.request_counts()
        began = time.monotonic()
        controller = self.start_controller(f"controller-{namespace}-{probe}")
        try:
            create_runbook(self.custom, namespace, probe)
            result: dict[str, Any] = {"finished_present": finished}
            try:
                done = wait_until(lambda: finishes.at(probe), self.args.restart_timeout,
                                  "the Runbook created after the restart", [controller.process])  # fmt: skip
            except (TimeoutError, RuntimeError) as error:
                return result | {"stopped": str(error), "load": os.getloadavg()}
            result |= {"probe_finished_s": round(done - began, 2), "load": os.getloadavg()}
            result["quiet_after_s"] = round(self._until_quiet(controller) - began, 1)
            calls = controller_calls(self.cluster.request_counts() - calls_before)
            calls["POST runbooks"] -= 1  # the benchmark's create
            calls = +calls
            # The list and the watch are the Runbooks' place in the watch; the rest, less what the new
            # Runbook's run costs, is what the finished ones cost.
            per_object = sum(n for key, n in calls.items() if not key.startswith(("LIST ", "WATCH ")))
            result |= {
                "startup_calls": dict(sorted(calls.items())),
                "startup_calls_per_finished": round(max(0.0, per_object - run_cost) / finished, 4),
                "rss_mb": memory_mb(controller.process.popen.pid, "VmRSS"),
                "vmhwm_mb": memory_mb(controller.process.popen.pid, "VmHWM"),
            }
            self.heapdump(controller, "restarted")
            return result
        finally:
            controller.stop()

    def restart_held(self, count: int) -> dict[str, Any]:
        """A restart over ``count`` runs that a blackout holds (see the module's phase 5b)."""
        finishes = self.use_namespace("held", create=True)
        now = datetime.datetime.now(datetime.UTC)
        freeze = {"start": (now - HOUR).isoformat(), "end": (now + 24 * HOUR).isoformat(), "reason": "bench"}
        match = {"commands": ["failover"], "profiles": ["primary"]}
        rule = {"name": "freeze", "match": match, "outside": "Wait", "blackouts": [freeze]}
        policy_body = {"apiVersion": keys.API_VERSION, "kind": policy.KIND, "metadata": {"name": "freeze"},
                       "spec": {"rules": [rule]}}  # fmt: skip
        self.custom.create_namespaced_custom_object(
            keys.GROUP, keys.VERSION, "held", policy.PLURAL, policy_body
        )
        (self.work / "scripts" / "failover").write_text("#!/bin/sh\nexit 0\n")
        (self.work / "scripts" / "failover").chmod(0o755)
        targets = {"MDOPS_LOCK_GROUPS": json.dumps({"backup": "backup"})}  # the probe's own lock
        controller = self.start_controller("controller-held", **targets)
        try:
            began = time.monotonic()

            def create(name: str) -> None:
                body = models.manifest(name, {"command": "failover", "window": "day"})
                self.custom.create_namespaced_custom_object(
                    keys.GROUP, keys.VERSION, "held", keys.PLURAL, body, _preload_content=False
                )

            with ThreadPoolExecutor(self.args.workers) as pool:
                list(pool.map(create, [f"held-{index:05d}" for index in range(count)]))
            wait_until(lambda: self._held(controller) >= count, self.args.timeout, "the held runs",
                       [controller.process], interval=1)  # fmt: skip
            result: dict[str, Any] = {"count": count, "held_s": round(time.monotonic() - began, 1)}
        finally:
            controller.stop()
        calls_before = self.cluster.request_counts()
        began = time.monotonic()
        controller = self.start_controller("controller-held-restarted", **targets)
        try:
            probe = models.manifest(
                "after-restart", {"command": "failover", "window": "day", "profile": "backup"}
            )
            self.custom.create_namespaced_custom_object(keys.GROUP, keys.VERSION, "held", keys.PLURAL, probe)
            watched = [controller.process]
            done = wait_until(lambda: finishes.at("after-restart"), self.args.restart_timeout,
                              "the Runbook created after the restart", watched)  # fmt: skip
            result["probe_finished_s"] = round(done - began, 2)
            wait_until(lambda: self._held(controller) >= count, self.args.restart_timeout,
                       "the held runs again", watched, interval=0.5)  # fmt: skip
            result |= {"all_held_s": round(time.monotonic() - began, 1), "load": os.getloadavg()}
            calls = self.cluster.request_counts() - calls_before
            calls = controller_calls(
                Counter({key: n for key, n in calls.items() if not key.startswith("WATCH ")})
            )
            calls["POST runbooks"] -= 1  # the benchmark's create
            calls = +calls
            result |= {
                "startup_calls": dict(sorted(calls.items())),
                "startup_calls_per_held": round(calls.total() / count, 2),
                "rss_mb": memory_mb(controller.process.popen.pid, "VmRSS"),
            }
            return result
        finally:
            controller.stop()

    @staticmethod
    def _held(controller: ControllerProcess) -> float:
        """The controller's own count of the runs it holds (``md_runbook_held``; 0 until it serves it)."""
        try:
            text = controller.metrics()
        except OSError:
            return 0
        return next(
            (float(line.split()[1]) for line in text.splitlines() if line.startswith("md_runbook_held ")), 0
        )

    def log_latency(self, runs: int) -> dict[str, Any]:
        """How soon a script's log line shows in its Runbook's status (the script's clock is the witness)."""
        self.use_namespace("logs", create=True)
        controller = self.start_controller("controller-logs")
        seen: dict[int, float] = {}
        names = [f"logs-{index}" for index in range(runs)]
        stop = threading.Event()
        args = (keys.GROUP, keys.VERSION, "logs", keys.PLURAL)

        def follow() -> None:
            for event in watch.Watch().stream(self.custom.list_namespaced_custom_object, *args):
                now = time.time()
                for line in (event["object"].get("status") or {}).get("logs") or []:
                    tick = TICK.fullmatch(line["message"])
                    if tick:
                        seen.setdefault(int(tick.group(1)), now)
                if stop.is_set():
                    return

        threading.Thread(target=follow, daemon=True).start()
        try:
            calls_before = self.cluster.request_counts()
            for name in names:
                body = models.manifest(name, {"command": "drill", "dryRun": True, "window": "day"})
                self.custom.create_namespaced_custom_object(*args, body)
            finishes = Finishes(self.api, "logs")
            watched = [controller.process]
            wait_until(lambda: all(map(finishes.at, names)), 300, "the drills", watched, interval=0.5)
            calls = self.cluster.request_counts() - calls_before
        finally:
            stop.set()
            controller.stop()
        latencies = sorted(1000 * (at - ns / 1e9) for ns, at in seen.items())

        def at(fraction: float) -> float | None:
            return (
                round(latencies[min(len(latencies) - 1, int(len(latencies) * fraction))], 1)
                if latencies
                else None
            )

        return {
            "count": runs,
            "ticks_seen": len(latencies),
            "ticks_written": runs * TICKS,
            "log_latency_p50_ms": at(0.5),
            "log_latency_p95_ms": at(0.95),
            "log_latency_max_ms": at(1.0),
            "status_patches_per_run": round(total(calls, STATUS_PATCHES) / runs, 1),
        }

    def _wait_for_finishes(self, finishes: Finishes, names: list[str], began: float, sampler: Sampler,
                           controller: ControllerProcess) -> str | None:  # fmt: skip
        """Wait until every Runbook finished; or say why the burst stopped early."""
        halfway = False
        shown = began
        while True:
            finished = finishes.count() - 1  # the warm-up
            if time.monotonic() - shown >= PROGRESS_SECONDS:  # a long burst shows it is moving
                shown = time.monotonic()
                print(
                    f"{self.executor}: {finished} of {len(names)} finished after {shown - began:.0f}s, "
                    f"resident {sampler.last():.1f} MB (peak {sampler.peak():.1f})",
                    file=sys.stderr,
                    flush=True,
                )
            if finished >= len(names) and all(map(finishes.at, names)):
                return None
            if not halfway and finished >= len(names) // 2:
                halfway = True
                self.heapdump(controller, "half-finished")
            elapsed = time.monotonic() - began
            where = f"after {elapsed:.0f}s with {finished} of {len(names)} finished"
            if not controller.process.alive():
                return f"the controller exited ({controller.process.popen.returncode}) {where}"
            if sampler.peak() > self.args.max_rss_mb:
                return f"resident memory {sampler.peak():.0f} MB > --max-rss-mb {where}"
            if elapsed > self.args.timeout:
                return f"--timeout {self.args.timeout:.0f}s reached {where}"
            time.sleep(SAMPLE_SECONDS)

    def _writes(self, calls: Counter[str], events: int, runs: int) -> dict[str, Any]:
        return {
            "status_patches_per_run": round(total(calls, STATUS_PATCHES) / runs, 2),
            "runbook_patches_per_run": round(total(calls, RUNBOOK_PATCHES) / runs, 2),
            "events_per_run": round(events / runs, 2),
            "lease_writes_per_run": round(total(calls, *LEASE_WRITES) / runs, 2),
            "jobs_created_per_run": round(total(calls, JOBS_CREATED) / runs, 2),
            "failed_calls_per_run": round(sum(n for key, n in calls.items() if key != call(key)) / runs, 2),
            "controller_calls_per_run": round((calls.total() + events) / runs, 2),
            "controller_calls_by_kind_per_run": per_run(calls, runs),
        }

    def _until_quiet(self, controller: ControllerProcess, quiet: int = 3, limit: float = 300) -> float:
        """Poll the calls on Runbooks each second until there are none for ``quiet`` polls; return when
        they stopped (the end of the controller's start-up work)."""

        def runbook_calls() -> Counter[str]:
            return Counter({k: n for k, n in self.cluster.request_counts().items() if " runbooks" in k})

        last, same, since = runbook_calls(), 0, time.monotonic()
        deadline = since + limit
        while same < quiet and time.monotonic() < deadline and controller.process.alive():
            time.sleep(1)
            now = runbook_calls()
            same, since = (same + 1, since) if now == last else (0, time.monotonic())
            last = now
        return since


# -- the report ---------------------------------------------------------------------------
# (phase, key, label, goal text, check, the count the goal is stated for)
ROWS: list[tuple[str, str, str, str, Callable[[float], bool] | None, int | None]] = [
    ("logs", "log_latency_p50_ms", "script writes a line -> in the status, p50 (ms)", "≤ 300",
     lambda v: v <= 300, None),
    ("logs", "log_latency_p95_ms", "script writes a line -> in the status, p95 (ms)", "", None, None),
    ("logs", "log_latency_max_ms", "script writes a line -> in the status, max (ms)", "", None, None),
    ("logs", "ticks_seen", "ticks seen in the status (20 a run)", "all", None, None),
    ("logs", "status_patches_per_run", "status patches per run (20 lines, then 2,000 at once)", "few",
     None, None),
    ("throughput", "created_s", "created in (s)", "", None, None),
    ("throughput", "all_finished_s", "all finished after (s)", "≤ 100", lambda v: v <= 100, 2000),
    ("throughput", "runs_per_s", "runs per second", "≥ 20", lambda v: v >= 20, 2000),
    ("throughput", "failed", "runs that failed (all succeed when run alone)", "0", lambda v: v == 0, None),
    ("throughput", "peak_rss_mb", "controller peak RSS (MB)", "< 200", lambda v: v < 200, None),
    ("throughput", "status_patches_per_run", "status patches per run", "few", None, None),
    ("throughput", "runbook_patches_per_run", "Runbook patches per run (finalizer)", "few", None, None),
    ("throughput", "events_per_run", "Events per run", "few", None, None),
    ("throughput", "lease_writes_per_run", "Lease writes per run", "few", None, None),
    ("throughput", "jobs_created_per_run", "Jobs created per run", "", None, None),
    ("throughput", "failed_calls_per_run", "failed controller calls per run (404, 409)", "0", None, None),
    ("throughput", "controller_calls_per_run", "all controller API calls per run", "few", None, None),
    ("bare-jobs", "all_finished_s", "Kubernetes alone: all Jobs ended after (s)", "", None, None),
    ("bare-jobs", "runs_per_s", "Kubernetes alone: Jobs per second", "", None, None),
    ("bare-jobs", "failed", "Kubernetes alone: Jobs that failed", "0", lambda v: v == 0, None),
    ("burst", "created_s", "created in (s)", "", None, None),
    ("burst", "all_finished_s", "all finished after (s)", "", None, None),
    ("burst", "failed", "runs that failed", "0", lambda v: v == 0, None),
    ("burst", "rss_before_mb", "RSS before the burst (MB)", "", None, None),
    ("burst", "peak_rss_mb", "peak RSS, sampled (MB)", "< 200", lambda v: v < 200, 10000),
    ("burst", "vmhwm_mb", "VmHWM at the end (MB)", "< 200", lambda v: v < 200, 10000),
    ("burst", "rss_finished_mb", "RSS when all finished (MB)", "", None, None),
    ("burst", "rss_stopped_mb", "RSS when stopped early (MB)", "", None, None),
    ("burst", "settled_growth_mb", "RSS after settling - before (MB)", "≤ 50", lambda v: v <= 50, 10000),
    ("burst", "cpu_s_per_run", "controller CPU per run (s)", "", None, None),
    ("burst", "status_patches_per_run", "status patches per run", "few", None, None),
    ("burst", "events_per_run", "Events per run", "few", None, None),
    ("burst", "controller_calls_per_run", "all controller API calls per run", "few", None, None),
    ("restart-burst", "probe_finished_s", "new Runbook finished after start (s)", "≤ 3",
     lambda v: v <= 3, 10000),
    ("restart-burst", "startup_calls_per_finished", "start-up API calls per finished Runbook", "0",
     lambda v: v < 0.01, None),
    ("restart-burst", "rss_mb", "RSS after start-up (MB)", "< 200", lambda v: v < 200, 10000),
    ("start-history", "probe_finished_s", "new Runbook finished after a first start (s)", "", None, None),
    ("restart-history", "probe_finished_s", "new Runbook finished after start (s)", "≤ 3",
     lambda v: v <= 3, 10000),
    ("restart-history", "startup_calls_per_finished", "start-up API calls per finished Runbook", "0",
     lambda v: v < 0.01, None),
    ("restart-history", "rss_mb", "RSS after start-up (MB)", "< 200", lambda v: v < 200, 10000),
    ("restart-held", "held_s", "held at first (s)", "", None, None),
    ("restart-held", "probe_finished_s", "new Runbook finished after start (s)", "≤ 3",
     lambda v: v <= 3, None),
    ("restart-held", "all_held_s", "all held again after start (s)", "", None, None),
    ("restart-held", "startup_calls_per_held", "start-up API calls per held run", "", None, None),
    ("restart-held", "rss_mb", "RSS after start-up (MB)", "< 200", lambda v: v < 200, None),
    ("restart-throughput", "probe_finished_s", "new Runbook finished after start (s)", "≤ 3",
     lambda v: v <= 3, None),
    ("restart-throughput", "startup_calls_per_finished", "start-up API calls per finished Runbook", "0",
     lambda v: v < 0.01, None),
    ("restart-throughput", "rss_mb", "RSS after start-up (MB)", "< 200", lambda v: v < 200, None),
]  # fmt: skip


def phase_count(phase: dict[str, Any]) -> int | None:
    return phase.get("count", phase.get("finished_present"))


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def report(results: dict[str, Any], baseline: dict[str, Any]) -> str:
    lines = []
    for executor, phases in results.items():
        lines.append(f"\n{executor} executor")
        lines.append(f"{'figure':<66} {'now':>10} {'before':>14}  goal")
        for phase, key, label, goal, check, goal_count in ROWS:
            now = phases.get(phase)
            if now is None:
                continue
            count = phase_count(now)
            before_phase = baseline.get(executor, {}).get(phase, {})
            before = before_phase.get("figures", {}).get(key)
            before_text = fmt(before)
            if before is not None and before_phase.get("count") != count:
                before_text += f" (n={before_phase.get('count'):,})"
            value = now.get(key)
            if value is None and before is None:
                continue
            verdict = ""
            at_size = goal_count is None or (count or 0) >= goal_count
            if check and value is not None and at_size:
                verdict = "  met" if check(value) else "  MISSED"
            elif check and not at_size:
                verdict = f"  (goal at n={goal_count:,})"
            title = f"{phase} (n={count:,}): {label}"
            lines.append(f"{title:<66} {fmt(value):>10} {before_text:>14}  {goal}{verdict}")
            if key in ("all_finished_s", "probe_finished_s") and now.get("stopped"):
                lines.append(f"{'':<4}stopped early: {now['stopped']}")
        for phase in ("throughput", "bare-jobs", "burst"):
            by_process = phases.get(phase, {}).get("cpu_ms_per_run_by_process")
            if by_process:
                shares = ", ".join(f"{name} {ms:g}" for name, ms in by_process.items())
                lines.append(f"{phase}: CPU ms per run by process: {shares}")
    return "\n".join(lines)


def git_commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


def record_baseline(results: dict[str, Any], command: str) -> None:
    data = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    measured = datetime.date.today().isoformat()
    for executor, phases in results.items():
        for phase, figures in phases.items():
            data.setdefault(executor, {})[phase] = {
                "count": phase_count(figures), "measured": measured, "commit": git_commit(),
                "machine": f"{os.cpu_count()} cores", "command": command, "figures": figures,
            }  # fmt: skip
    BASELINE.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def run(args: argparse.Namespace, executor: str, work: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with ControlPlane(work / "cluster") as cluster:
        cluster.install_crds()
        bench = Bench(args, executor, cluster, work)
        if executor == "local" and args.log_runs:
            results["logs"] = bench.log_latency(args.log_runs)
            print(json.dumps({executor: {"logs": results["logs"]}}), flush=True)
        for phase, count in (("throughput", args.throughput), ("burst", args.count)):
            if not count:
                continue
            results[phase] = bench.burst(phase, count)
            print(json.dumps({executor: {phase: results[phase]}}), flush=True)
            if results[phase].get("stopped"):
                continue
            run_cost = sum(results[phase]["controller_calls_by_kind_per_run"].values())
            results[f"restart-{phase}"] = bench.restart(phase, count + 1, run_cost)  # + the warm-up
            print(json.dumps({executor: {f"restart-{phase}": results[f"restart-{phase}"]}}), flush=True)
        if executor == "job" and args.bare_jobs:
            results["bare-jobs"] = bench.bare_jobs("bare-jobs", args.bare_jobs)
            print(json.dumps({executor: {"bare-jobs": results["bare-jobs"]}}), flush=True)
        if args.restart_history:
            cluster.kubectl("create", "namespace", "history")
            began = time.monotonic()
            create_history(bench.custom, args.restart_history, "history")
            print(
                f"wrote {args.restart_history} finished Runbooks in {time.monotonic() - began:.0f}s",
                flush=True,
            )
            run_cost = sum(results.get("throughput", {}).get("controller_calls_by_kind_per_run", {}).values())
            (work / SESSIONS).unlink(missing_ok=True)  # kept by an earlier phase's controller
            results["start-history"] = bench.restart("history", args.restart_history, run_cost, "after-start")
            print(json.dumps({executor: {"start-history": results["start-history"]}}), flush=True)
            results["restart-history"] = bench.restart("history", args.restart_history + 1, run_cost)
            print(json.dumps({executor: {"restart-history": results["restart-history"]}}), flush=True)
        if executor == "local" and args.restart_held:
            results["restart-held"] = bench.restart_held(args.restart_held)
            print(json.dumps({executor: {"restart-held": results["restart-held"]}}), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executors", default="local,job", help="comma-separated: local, job")
    parser.add_argument("--count", type=int, default=10000, help="Runbooks of the burst (0: none)")
    parser.add_argument("--throughput", type=int, default=2000, help="Runbooks of the throughput burst")
    parser.add_argument(
        "--bare-jobs", type=int, default=2000, help="Job executor: Jobs created with no controller (0: none)"
    )
    parser.add_argument("--workers", type=int, default=32, help="threads creating the Runbooks")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds a burst may take")
    parser.add_argument("--restart-timeout", type=float, default=600, help="seconds a restart may take")
    parser.add_argument(
        "--restart-history",
        type=int,
        default=0,
        help="also restart over this many finished Runbooks written directly (no runs)",
    )
    parser.add_argument(
        "--restart-held", type=int, default=0, help="local executor: also restart over this many held runs"
    )
    parser.add_argument("--max-rss-mb", type=float, default=4096, help="stop a burst past this memory")
    parser.add_argument("--settle", type=float, default=30, help="seconds after a burst before measuring")
    parser.add_argument("--ttl", type=int, default=60, help="the Job executor's ttlSecondsAfterFinished")
    parser.add_argument(
        "--keep-jobs",
        action="store_true",
        help="the Jobs keep the controller's default TTL (an hour) and are not waited for: the figures "
        "without their clean-up (for --count 0)",
    )
    parser.add_argument("--max-parallel", type=int, help="MDOPS_MAX_PARALLEL (default: the controller's)")
    parser.add_argument("--log-runs", type=int, default=4, help="runs of the live-log phase (0: none)")
    parser.add_argument("--heapdump", type=Path, help="write heap reports (bench.heapdump) here")
    parser.add_argument("--heapdump-frames", type=int, default=1, help="tracemalloc frames (0: off)")
    parser.add_argument(
        "--profile",
        type=Path,
        help="write the kube-apiserver's CPU profile of each burst here (go tool pprof)",
    )
    parser.add_argument("--profile-seconds", type=int, default=30, help="how long each profile lasts")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument(
        "--record-baseline", action="store_true", help=f"store the figures in {BASELINE.name}"
    )
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    results = {}
    for executor in args.executors.split(","):
        work = Path(tempfile.mkdtemp(prefix=f"mdops-bench-scale-{executor}-"))
        results[executor] = run(args, executor, work)
    baseline = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    print(report(results, baseline))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    if args.record_baseline:
        record_baseline(results, "python -m bench.controller_scale " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
