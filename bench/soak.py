"""Benchmark: the controller's guarantees under repeated SIGKILLs (issue 10's soak), for both executors.

A real control plane and the real controller, SIGKILLed after a random 0.5-5 s of life (seeded) and started
again each time, while ``--count`` request ids (100) go through it:

- mutating runs (failover, failback, drill, restart) on ``--targets`` targets (profiles ``p0``, ``p1``, …,
  each its own lock group), health checks and dry-run drills (no lock); each script beats for 0.2-1 s and
  exits 0, or 7 (a failed run) for about one in eight;
- about one in twelve, long (3 s), deleted as soon as its script has started (deleted mid-run);
- about one in ten, once finished, deleted and created again with its name and request id, and once more
  under a new name with the same request id (both must be duplicates: the script does not run again);
- with ``--cancel F``, a fraction F of the others cancelled (``spec.cancel``): half as soon as the next run
  is created (most of them not started yet: pending, queued), half, long (3 s), once their script started;
- with ``--force-delete F``, a fraction F of the runs deleted mid-run deleted by force: their finalizer
  taken off first (as a person's ``kubectl patch`` would), so that they go at once, their run stopped by
  the controller that sees them go, or by none if none runs then.

The local executor runs the scripts from a folder, the Job executor from a ConfigMap in Jobs whose pods
podsim runs (``podsim.mdops.io/run: exec``: the runner really runs, on this machine).

The witness is the scripts' own file (``$WITNESS``): every script appends ``<target> <request id> start
<ns>``, a ``beat`` every 0.1 s and ``end <ns> <exit code>``, from its own clock. From it, and from what the
Runbooks (or, for the deleted ones, the request-id ledger) recorded, the report gives:

- runs per request id: the most starts of one request id (must be ≤ 1), and the finished successes whose
  request id did not start exactly once (must be 0);
- overlaps: pairs of mutating runs on one target whose records interleave (must be 0; a run's span is its
  first to its last record, so an overlap shorter than a beat can go unseen);
- results lost: a Runbook whose result disagrees with its script's exit code, a started run with no
  result (never finished, or no ``end`` record while its Runbook says it ended), a deleted run that the
  ledger does not remember as cancelled or as what its script did (must be 0; one deleted by force while
  no controller ran has a result only once a controller has started since and found its claim: waited
  for up to ``RECORD_SECONDS`` at the end, then counted, ``forced_unrecorded``, expected 0);
- pods kept (the Job executor): pods still holding the finalizer ``ops.mdops.io/result`` once every run has
  finished, their end never recorded (must be none);
- not run: request ids that never started and ended failed (``never started``, ``Lost``): allowed (at most
  once), counted;
- cancelled: a run recorded "cancelled before it started" whose script started, or one whose script
  started and did not end recorded other than cancelled (130), is a result lost; how many ended before
  their start, stopped, or had ended as the cancel came (refused then by the API server: 422), counted;
- the time from the first create to the last result, and the number of SIGKILLs;
- what a status showed and a later one took back before the run ended, from a listing every 0.5 s: a run
  named (``status.execution``) then none (``status_unnamed_run``: a Running status overwritten from an
  older view), a ``startedAt`` moved while it ran (``status_moved_start``: its start recorded again,
  later), each with the longest time it lasted (until a status showed it again, or the run ended), and the
  Runbooks that showed them (``status_taken_back``). Not guarantees (the finished status is final, and
  checked above): how long a person watching saw it wrong.

With ``--replicas N`` (2; the Job executor only) N controllers run at once with kopf's peering (a
``KopfPeering`` object, a 4 s lifetime, priorities 10, 20, …), each SIGKILLed and started again by its own
killer, after a random 0-8 s down: a higher replica down for over 4 s lets a lower one resume, and its return
pauses it again, while runs go on (the replicas' logs, in ``replica-<index>/`` of the soak's folder, say
when).

With ``--kill-control-plane`` the kube-apiserver is SIGKILLed too, a random 2-10 s after it serves again
(and etcd with it one time in three), and restarted by the control plane's supervisor: the controller's
writes then meet a server that is gone, or that dies between applying a write and answering it. The
soak's own calls are made again through it (a create that then meets its own Runbook was made).

With ``--kill-controller-manager`` the kube-controller-manager is SIGKILLed too, a random 5-20 s after the
last kill, and restarted by the supervisor: its Job controller, garbage collector and TTL controller start
over (:class:`ManagerKiller`).

With ``--freeze F`` a fraction F of those turns (seeded; 1: all of them) freezes the process instead of
killing it: SIGSTOP, then SIGCONT, as a VM paused, a long GC or swap stall, a container's cgroup frozen.
Its connections stay open and it answers nothing, then it wakes with what it knew before. A controller
stays frozen 0.2-3 s (two in five), 4-15 s (two in five: over the peering lifetime, so that with
``--replicas`` the other replica takes over and the frozen one, if it was the active one, wakes believing
it still is), or 30-40 s (one in five: over the controller's 30 s request timeout, which a call under way
meets as it wakes); with ``--kill-control-plane`` the kube-apiserver (etcd one time in three) stays frozen
1-20 s, which its supervisor does not notice. The report counts the freezes and the seconds the
controllers stayed frozen; its zeros keep their meaning.

With ``--via-api`` the requests go through the REST API (:mod:`bench.soak_api`), as the Ops Console's and
scripts' do: ``python -m api`` as ``make up`` starts it (the admin token, a tokens file), SIGKILLed by a
killer of its own a random 2-10 s after it serves again, and started again at once on its port (with
``--freeze``, frozen as a controller is instead). Each request is a careful client's ``POST
/api/ops/runbooks/execute``, in a thread of its own, asked again with its ``request_id`` on a lost answer
(refused, cut, unreadable), a 5xx, a timeout (45 s: the API's 30 s wait and more) or a 202, until a final
answer: a 200, a 4xx, or the spec's 500 of a script that could not be executed. The cancels go through the
API's cancel; the deletions, as a person's kubectl, through the API server; the Runbooks are named as the API
names them (after the request id), and a recreated request id is asked again through the API (answered
before its ``-again`` Runbook is made). Each final answer is held against the witness
(:func:`bench.soak_api.answer_problems`): a 200 ``success`` whose script did not run once and end 0, a 200
whose result is not what its script's end makes it (cancelled, 130, only for a run cancelled or deleted),
a 500 of a script that started, a 409 but for a Runbook deleted mid-run, any other refusal, or no final
answer within the round's time is an answer wrong (``answers_wrong``: must be 0; in ``problems``). The
report adds the API's kills and freezes, the client's answers by status code (every attempt; ``lost``,
``timeout``), its final answers, how often it asked again, its longest wait for a final answer, and the
cancels' answers.

    python -m bench.soak [--executors local,job] [--count 100] [--seed 10] [--kill-control-plane]
        [--replicas 1] [--cancel 0.2] [--freeze 0.5] [--via-api]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import os
import random
import signal
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from api.submission import object_name
from bench.soak_api import ApiProcess, ApiServer, Client, answer_problems, script_result
from controller.ledger import lease_name
from devcluster.components import ControllerProcess
from devcluster.controlplane import ControlPlane
from devcluster.processes import answers_200, wait_until
from devcluster.supervisor import Backoff
from runbooks import keys, models
from runbooks.kube import api_client, persistently

NAMESPACE = "soak"
FAILED_EXIT = 7
# $MDOPS_REASON is "<beats> <exit code>": the plan of the run, which the script follows.
SCRIPT = """#!/bin/sh
set -- $MDOPS_REASON
record() { echo "$MDOPS_PROFILE $MDOPS_REQUEST_ID $* $(date +%s%N)" >> "$WITNESS"; }
record start
i=0
while [ "$i" -lt "$1" ]; do sleep 0.1; record beat; i=$((i + 1)); done
echo "$MDOPS_PROFILE $MDOPS_REQUEST_ID end $(date +%s%N) $2" >> "$WITNESS"
exit "$2"
"""
COMMANDS = ("failover", "failback", "drill", "restart", "health_check")
PEERING_LIFETIME = 4  # s, with --replicas: a replica killed is taken for gone after it
# With --freeze, how long a process stays stopped (SIGSTOP): a short stall (a GC, a page-in), one over the
# peering lifetime and the lock's retry (a VM paused, a cgroup frozen), one over the controller's request
# timeout (30 s: a call under way meets its timeout as the process wakes, its answer perhaps unread).
FREEZE_SECONDS = ((0.4, (0.2, 3.0)), (0.4, (4.0, 15.0)), (0.2, (30.0, 40.0)))
SAMPLE_SECONDS = 0.5  # between two listings of the Runbooks' statuses (:class:`Sampler`)
OUTAGE_SECONDS = 120  # how long the soak's own calls are tried again while the kube-apiserver is away
RECORD_SECONDS = 30  # how long the ends of runs deleted by force may take to be recorded, at the end
KEPT_PODS_SECONDS = 30  # how long the Job executor's kept pods may take to go once every run has finished


@dataclass
class Planned:
    name: str
    request_id: str
    command: str
    target: str
    dry_run: bool
    beats: int
    exit_code: int
    delete_mid_run: bool = False
    force: bool = False  # deleted mid-run by force: its finalizer taken off first
    recreate: bool = False
    cancel: str = ""  # "early": as the next run is created; "running": once its script has started

    @property
    def mutating(self) -> bool:
        return self.command != "health_check" and not self.dry_run

    def manifest(self, name: str | None = None) -> dict[str, Any]:
        return models.manifest(name or self.name, {
            "command": self.command, "window": "day", "profile": self.target, "requestId": self.request_id,
            "dryRun": self.dry_run, "reason": f"{self.beats} {self.exit_code}", "timeoutSeconds": 60,
        })  # fmt: skip


def plan(
    rng: random.Random, count: int, targets: int, cancel: float = 0.0, force_delete: float = 0.0
) -> list[Planned]:
    runs = []
    for index in range(count):
        command = rng.choice(COMMANDS)
        dry_run = command == "drill" and rng.random() < 0.3
        delete = command != "health_check" and not dry_run and rng.random() < 0.08
        run = Planned(
            name=f"soak-{index:03d}", request_id=f"req-{index:03d}", command=command,
            target=f"p{rng.randrange(targets)}", dry_run=dry_run, beats=30 if delete else rng.randint(2, 10),
            exit_code=FAILED_EXIT if rng.random() < 0.12 else 0, delete_mid_run=delete,
            recreate=not delete and rng.random() < 0.1,
        )  # fmt: skip
        # Drawn only with --cancel: the plans of a seed without it stay as they were.
        if cancel and not (run.delete_mid_run or run.recreate) and rng.random() < cancel:
            run.cancel = rng.choice(("early", "running"))
            run.beats = 30 if run.cancel == "running" else run.beats
        # Drawn only with --force-delete, likewise.
        run.force = bool(force_delete and run.delete_mid_run and rng.random() < force_delete)
        runs.append(run)
    return runs


def freeze_seconds(rng: random.Random) -> float:
    """How long a freeze lasts (:data:`FREEZE_SECONDS`)."""
    ((low, high),) = rng.choices(
        [span for _, span in FREEZE_SECONDS], [weight for weight, _ in FREEZE_SECONDS]
    )
    return rng.uniform(low, high)


def freeze(pid: int, seconds: float, stopped: threading.Event) -> None:
    """Stop ``pid`` (SIGSTOP: its connections stay open, it answers nothing) for ``seconds``, or
    until ``stopped``; continued (SIGCONT) whatever happens."""
    os.kill(pid, signal.SIGSTOP)
    try:
        stopped.wait(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


class Killer(threading.Thread):
    """Starts a process (the controller; with ``--via-api`` the REST API too), SIGKILLs it after a random
    ``life`` (0.5-5 s) and starts it again (after a random 0 to ``down`` s), until stopped; the process it
    leaves running then goes on alone. With ``ready``, a life counts from when ``ready(process)`` first says
    so (a slow start on a busy machine would otherwise leave it no time to serve). A fraction ``frozen`` of
    the turns freezes it instead (:func:`freeze`), for :func:`freeze_seconds`. ``start(generation)`` returns
    what has the process (``.process``, ``.workdir``, ``.stop()``)."""

    def __init__(self, rng: random.Random, start: Any, down: float = 0, frozen: float = 0,
                 life: tuple[float, float] = (0.5, 5.0), ready: Any = None):  # fmt: skip
        super().__init__(daemon=True)
        self.rng, self.start_process, self.down, self.frozen = rng, start, down, frozen
        self.life, self.ready = life, ready
        self.stopped = threading.Event()
        self.kills = self.freezes = 0
        self.frozen_s = 0.0
        self.current = start(0)
        self.start()

    def run(self) -> None:
        while not self._served() and not self.stopped.wait(self.rng.uniform(*self.life)):
            # Drawn only with --freeze: the turns of a seed without it stay as they were.
            if self.frozen and self.rng.random() < self.frozen:
                seconds, began = freeze_seconds(self.rng), time.monotonic()
                current = self.current
                log(f"{current.workdir.name}/{current.process.name} frozen for {seconds:.1f} s")
                freeze(current.process.popen.pid, seconds, self.stopped)
                self.freezes += 1
                self.frozen_s += time.monotonic() - began
                continue
            os.kill(self.current.process.popen.pid, signal.SIGKILL)
            self.current.process.popen.wait()
            self.kills += 1
            if self.down:
                self.stopped.wait(self.rng.uniform(0, self.down))
            self.current = self.start_process(self.kills)

    def _served(self) -> bool:
        """Wait until ``ready`` says the process serves (at once without it); whether stopped meanwhile."""
        while self.ready is not None and not self.ready(self.current) and not self.stopped.wait(0.2):
            pass
        return self.stopped.is_set()

    def stop(self) -> Any:
        self.stopped.set()
        self.join()
        return self.current


class ControlPlaneKiller(threading.Thread):
    """SIGKILLs the kube-apiserver a random 2-10 s after it serves again, and etcd first one time in
    three; the control plane's supervisor starts them again. Counted from its return, not from the kill:
    on a busy machine the kube-apiserver may take longer to start than the longest interval, and would
    then never serve, which tests nothing but the soak's patience. A fraction ``frozen`` of the turns
    freezes the kube-apiserver (etcd one time in three) instead, for 1-20 s: a frozen server is not a dead
    one (its connections stay open, nothing answers, and the supervisor sees nothing wrong)."""

    def __init__(self, rng: random.Random, cluster: ControlPlane, frozen: float = 0):
        super().__init__(daemon=True)
        self.rng, self.frozen = rng, frozen
        self.components = {process.name: process for process in cluster.processes}
        self.readyz = f"{cluster.server}/readyz"
        self.context = ssl.create_default_context(cafile=cluster.ca.cert_path)
        self.stopped = threading.Event()
        self.kills = self.freezes = 0
        self.start()

    def run(self) -> None:
        while not self.stopped.wait(self.rng.uniform(2.0, 10.0)):
            names = ["etcd", "kube-apiserver"] if self.rng.random() < 1 / 3 else ["kube-apiserver"]
            if self.frozen and self.rng.random() < self.frozen:  # drawn only with --freeze
                component = self.components[names[0]]
                if component.alive():
                    seconds = self.rng.uniform(1.0, 20.0)
                    log(f"{names[0]} frozen for {seconds:.1f} s")
                    freeze(component.popen.pid, seconds, self.stopped)
                    self.freezes += 1
                continue
            for name in names:
                if self.components[name].alive():  # else still down from the last time
                    os.kill(self.components[name].popen.pid, signal.SIGKILL)
                    self.kills += 1
            while not answers_200(self.readyz, self.context) and not self.stopped.wait(0.2):
                pass

    def stop(self) -> None:
        self.stopped.set()
        self.join()


class ManagerKiller(threading.Thread):
    """SIGKILLs the kube-controller-manager a random 5-20 s after the last kill; the control plane's
    supervisor starts it again. Its Job controller, garbage collector and TTL controller start over: Jobs,
    their pods and their clean-up wait meanwhile, and a Job's pod may be made again before the restarted
    Job controller's watch shows the first (the runner's start claim lets one of them run the script)."""

    def __init__(self, rng: random.Random, cluster: ControlPlane):
        super().__init__(daemon=True)
        self.rng = rng
        self.manager = {process.name: process for process in cluster.processes}["kube-controller-manager"]
        self.stopped = threading.Event()
        self.kills = 0
        self.start()

    def run(self) -> None:
        while not self.stopped.wait(self.rng.uniform(5.0, 20.0)):
            if self.manager.alive():  # else still down from the last time
                os.kill(self.manager.popen.pid, signal.SIGKILL)
                self.kills += 1

    def stop(self) -> None:
        self.stopped.set()
        self.join()


class Sampler(threading.Thread):
    """Lists the Runbooks every ``SAMPLE_SECONDS`` while the soak runs, as a person watching them would, and
    counts what a status showed that a later one took back before the run ended: a run named (``execution``)
    then none (a Running status overwritten by an older view: Queued, Pending), and a ``startedAt`` moved
    while it ran (its start recorded again, later). Each with how long it lasted until a status showed it
    again, or the run ended. Seen only at the samples: a shorter one goes unseen."""

    def __init__(self, custom: client.CustomObjectsApi):
        super().__init__(daemon=True)
        self.custom = custom
        self.stopped = threading.Event()
        self.named: dict[str, str] = {}  # uid: the run its status named
        self.started: dict[str, str] = {}  # uid: the startedAt its Running status first showed
        self.unnamed: dict[str, float] = {}  # uid: since when its status names no run any more
        self.unnamed_s: list[float] = []
        self.moved: dict[str, float] = {}  # uid: since when its startedAt is another than first shown
        self.moved_s: list[float] = []
        self.seen: set[str] = set()  # the Runbooks that showed either, and which
        self.start()

    def run(self) -> None:
        while not self.stopped.wait(SAMPLE_SECONDS):
            try:
                listed = self.custom.list_namespaced_custom_object(
                    keys.GROUP, keys.VERSION, NAMESPACE, keys.PLURAL, _request_timeout=5
                )
            except Exception:  # the API server away, or frozen: the next sample
                continue
            self.sample(listed["items"], time.monotonic())
        now = time.monotonic()
        self.unnamed_s += [now - since for since in self.unnamed.values()]
        self.moved_s += [now - since for since in self.moved.values()]

    def sample(self, items: list[dict[str, Any]], now: float) -> None:
        listed = {runbook["metadata"]["uid"] for runbook in items}
        for spans, durations in ((self.unnamed, self.unnamed_s), (self.moved, self.moved_s)):
            for uid in spans.keys() - listed:  # deleted
                durations.append(now - spans.pop(uid))
        for runbook in items:
            uid, status = runbook["metadata"]["uid"], runbook.get("status") or {}
            execution = (status.get("execution") or {}).get("name")
            if status.get("result"):  # ended: what it showed last counts until now
                if uid in self.unnamed:
                    self.unnamed_s.append(now - self.unnamed.pop(uid))
                if uid in self.moved:
                    self.moved_s.append(now - self.moved.pop(uid))
                continue
            if execution:
                self.named.setdefault(uid, execution)
                if uid in self.unnamed:
                    self.unnamed_s.append(now - self.unnamed.pop(uid))
            elif uid in self.named:
                self.unnamed.setdefault(uid, now)
                self.seen.add(f"{runbook['metadata']['name']}: unnamed")
            started = status.get("startedAt")
            if execution and started:
                first = self.started.setdefault(uid, started)
                if started != first:
                    self.moved.setdefault(uid, now)
                    self.seen.add(f"{runbook['metadata']['name']}: moved")

    def stop(self) -> dict[str, Any]:
        self.stopped.set()
        self.join()
        return {
            "status_seen_running": len(self.named),  # the runs a sample saw running
            "status_unnamed_run": len(self.unnamed_s),
            "status_unnamed_run_max_s": round(max(self.unnamed_s, default=0.0), 1),
            "status_moved_start": len(self.moved_s),
            "status_moved_start_max_s": round(max(self.moved_s, default=0.0), 1),
            "status_taken_back": sorted(self.seen),
        }


def log(line: str) -> None:
    """A line of the soak's progress, on stderr (stdout is the report), with the time the logs use."""
    print(f"{time.strftime('%H:%M:%S')} soak: {line}", file=sys.stderr, flush=True)


class Witness:
    """The scripts' own records: ``target request-id edge ns [exit code]``."""

    def __init__(self, path: Path):
        self.path = path

    def records(self) -> list[list[str]]:
        return [line.split() for line in self.path.read_text().splitlines()] if self.path.exists() else []

    def started(self) -> set[str]:
        return {fields[1] for fields in self.records() if fields[2] == "start"}

    @staticmethod
    def tally(records: list[list[str]]) -> tuple[Counter[str], dict[str, int]]:
        """Of each request id in ``records``: how many times its script started, and its exit code."""
        starts = Counter(fields[1] for fields in records if fields[2] == "start")
        return starts, {fields[1]: int(fields[4]) for fields in records if fields[2] == "end"}


class Soak:
    def __init__(self, args: argparse.Namespace, executor: str, cluster: ControlPlane, work: Path):
        self.args, self.executor, self.cluster, self.work = args, executor, cluster, work
        self.custom = client.CustomObjectsApi(api_client(cluster.kubeconfig))
        self.leases = client.CoordinationV1Api(self.custom.api_client)
        self.witness = Witness(work / "witness.log")
        self.cancels_refused = 0  # cancels the API server refused: the run had finished
        # With --via-api, the REST API the requests go through, and its careful client.
        self.api = ApiServer(cluster.kubeconfig, NAMESPACE, work) if args.via_api else None
        self.client = Client(self.api.url, args.timeout) if self.api else None
        scripts = work / "scripts"
        scripts.mkdir()
        for command in COMMANDS:
            (scripts / command).write_text(SCRIPT)
            (scripts / command).chmod(0o755)
        cluster.kubectl("create", "namespace", NAMESPACE)
        groups = {f"p{index}": f"t{index}" for index in range(args.targets)}
        self.env = {
            "MDOPS_SCRIPT_ENV": json.dumps({"WITNESS": str(self.witness.path)}),
            "MDOPS_LOCK_GROUPS": json.dumps(groups),
            "MDOPS_SCRIPTS_DIR": str(scripts),
        }
        if executor == "job":
            cluster.install_runner(NAMESPACE)
            cluster.kubectl("create", "configmap", "soak-scripts", "-n", NAMESPACE, f"--from-file={scripts}")
            self.env |= {
                "MDOPS_EXECUTOR": "job",
                "MDOPS_SCRIPTS_CONFIGMAP": "soak-scripts",
                "MDOPS_RUNNER_COMMAND": json.dumps([sys.executable, "-m", "runner"]),
                "MDOPS_JOB_POD_ANNOTATIONS": json.dumps({"podsim.mdops.io/run": "exec"}),
            }
        if args.replicas > 1:
            cluster.install_peering(NAMESPACE)
            self.env |= {"MDOPS_PEERING": "mdops", "MDOPS_PEERING_LIFETIME": str(PEERING_LIFETIME)}

    def controller(self, generation: int, replica: int = 0) -> ControllerProcess:
        """Replica ``replica``'s ``generation``-th start: with one replica in the soak's folder, else in its
        own (its state, as a pod's, is its own) with its own priority."""
        if self.args.replicas == 1:
            workdir, env = self.work, self.env
        else:
            workdir, env = (
                self.work / f"replica-{replica}",
                self.env | {"MDOPS_PRIORITY": str(10 * (replica + 1))},
            )
            workdir.mkdir(exist_ok=True)
        return ControllerProcess(
            self.cluster.kubeconfig, NAMESPACE, workdir, env, name=f"controller-{generation}"
        )

    def _args(self) -> tuple[str, str, str, str]:
        return keys.GROUP, keys.VERSION, NAMESPACE, keys.PLURAL

    def runbooks(self) -> dict[str, dict[str, Any]]:
        listed = persistently(self.custom.list_namespaced_custom_object, *self._args(), within=OUTAGE_SECONDS)
        return {rb["metadata"]["name"]: rb for rb in listed["items"]}

    def create(self, body: dict[str, Any]) -> None:
        try:
            persistently(
                self.custom.create_namespaced_custom_object, *self._args(), body, within=OUTAGE_SECONDS
            )
        except ApiException as error:
            # Made by an attempt whose answer was lost (only then does the soak meet its own name): the
            # spec it sent, with the schema's defaults.
            stored = (self.runbooks().get(body["metadata"]["name"]) or {}).get("spec") or {}
            if error.status != 409 or any(stored.get(key) != value for key, value in body["spec"].items()):
                raise

    def delete(self, name: str, force: bool = False) -> None:
        """Delete the Runbook ``name``; ``force``: its finalizers taken off first, so that it goes at once."""
        try:
            if force:
                persistently(
                    self.custom.patch_namespaced_custom_object,
                    *self._args(),
                    name,
                    {"metadata": {"finalizers": None}},
                    within=OUTAGE_SECONDS,
                )
            persistently(
                self.custom.delete_namespaced_custom_object, *self._args(), name, within=OUTAGE_SECONDS
            )
        except ApiException as error:
            if error.status != 404:
                raise

    def settled(self, present: set[str], gone: set[str]) -> bool:
        """Whether every Runbook of ``present`` has a result and every one of ``gone`` is gone; with
        ``--via-api``, or made again and finished: a client whose answer was lost as its Runbook was deleted
        asks again, and the API makes the Runbook again (the ledger's duplicate: nothing runs again)."""
        listed = self.runbooks()

        def finished(name: str) -> bool:
            return bool((listed.get(name, {}).get("status") or {}).get("result"))

        again = {name for name in gone & listed.keys() if self.api is not None and finished(name)}
        return not (gone & listed.keys()) - again and all(finished(name) for name in present)

    def submit(self, run: Planned, again: bool = False) -> None:
        """Ask for ``run``: its Runbook created in the API server, or with ``--via-api`` through the REST
        API's execute (in a thread of the client, asked again until a final answer)."""
        if self.client is None:
            self.create(run.manifest())
            return
        self.client.execute(run.request_id, {
            "command": run.command, "window": "day", "profile": run.target, "request_id": run.request_id,
            "dry_run": run.dry_run, "reason": f"{run.beats} {run.exit_code}", "timeout_seconds": 60,
        }, again)  # fmt: skip

    def _answered(self) -> None:
        """With ``--via-api``, wait for the client's final answers (each within its deadline)."""
        if self.client is not None:
            self.client.wait(self.args.timeout)
            log(f"the client's answers so far: {json.dumps(self.client.report())}")

    def answers_wrong(self, runs: list[Planned]) -> list[str]:
        """The client's final answers that the witness contradicts (:func:`answer_problems`)."""
        starts, ends = Witness.tally(self.witness.records())
        stopped = {run.request_id for run in runs if run.cancel or run.delete_mid_run}
        deleted = {run.request_id for run in runs if run.delete_mid_run}
        return answer_problems(self.client.answers, starts, ends, stopped, deleted)

    def ledger(self, request_id: str) -> dict[str, Any] | None:
        try:
            lease = persistently(
                self.leases.read_namespaced_lease, lease_name(request_id), NAMESPACE, within=OUTAGE_SECONDS
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        recorded = (lease.metadata.annotations or {}).get(keys.RESULT)
        return json.loads(recorded) if recorded else None

    def run(self) -> dict[str, Any]:
        rng = random.Random(self.args.seed)
        runs = plan(rng, self.args.count, self.args.targets, self.args.cancel, self.args.force_delete)
        if self.api is not None:  # the API names a Runbook after its request id
            for run in runs:
                run.name = object_name(run.request_id)
        killers = [
            Killer(
                random.Random(self.args.seed + 1 + 1000 * replica),
                functools.partial(self.controller, replica=replica),
                down=0 if self.args.replicas == 1 else 2 * PEERING_LIFETIME,
                frozen=self.args.freeze,
            )
            for replica in range(self.args.replicas)
        ]
        if self.api is not None:  # its life counted from when it serves, as the kube-apiserver's
            killers.append(
                Killer(random.Random(self.args.seed + 3), self.api.start, frozen=self.args.freeze,
                       life=(2.0, 10.0), ready=ApiProcess.ready)
            )  # fmt: skip
        outages = (
            ControlPlaneKiller(random.Random(self.args.seed + 2), self.cluster, self.args.freeze)
            if self.args.kill_control_plane
            else None
        )
        managers = (
            ManagerKiller(random.Random(self.args.seed + 4), self.cluster)
            if self.args.kill_controller_manager
            else None
        )
        sampler = Sampler(client.CustomObjectsApi(api_client(self.cluster.kubeconfig)))
        began = time.monotonic()
        to_delete = [run for run in runs if run.delete_mid_run]
        to_cancel = [run for run in runs if run.cancel == "running"]
        deleted_before_start = 0
        for run, earlier in zip(runs, [None, *runs], strict=False):
            self.submit(run)
            if earlier is not None and earlier.cancel == "early":
                self.cancel(earlier)
            time.sleep(rng.uniform(0, 0.3))
            deleted_before_start += self._delete_started(to_delete, force=False)
            self._cancel_started(to_cancel, force=False)
        if runs and runs[-1].cancel == "early":
            self.cancel(runs[-1])
        deadline = time.monotonic() + 180
        while to_delete or to_cancel:
            deleted_before_start += self._delete_started(to_delete, force=time.monotonic() > deadline)
            self._cancel_started(to_cancel, force=time.monotonic() > deadline)
            time.sleep(0.2)
        kept = {run.name for run in runs if not run.delete_mid_run}
        gone = {run.name for run in runs if run.delete_mid_run}
        wait_until(lambda: self.settled(kept, gone), self.args.timeout, "the first round", interval=1)
        self._answered()
        again = [run for run in runs if run.recreate]
        for run in again:
            self.delete(run.name)
        self._wait_gone({run.name for run in again})
        for run in again:
            self.submit(run, again=True)
        # With --via-api, answered first: asked while its "-again" Runbook is there, the API finds that one
        # (the request id's duplicate) and makes none; made again or not, its answer is what is checked.
        self._answered()
        for run in again:
            self.create(run.manifest(f"{run.name}-again"))
        kept |= {f"{run.name}-again" for run in again}
        if self.api is not None:  # an API whose cache was behind the deletion answers from what it held
            kept, gone = kept - {run.name for run in again}, gone | {run.name for run in again}
        wait_until(lambda: self.settled(kept, gone), self.args.timeout, "the second round", interval=1)
        self._answered()
        took = time.monotonic() - began
        seen = sampler.stop()
        finals = [killer.stop() for killer in killers]
        for outage in (outages, managers):
            if outage is not None:
                outage.stop()
        controllers = killers[: self.args.replicas]
        try:
            checked = self.check(runs, self.runbooks())
            if self.client is not None:
                wrong = self.answers_wrong(runs)
                checked |= {"answers_wrong": len(wrong), "problems": checked["problems"] + wrong}
                checked |= {"api_kills": killers[-1].kills, "api_freezes": killers[-1].freezes}
                checked |= self.client.report()
            return {
                "kills": sum(killer.kills for killer in controllers),
                "freezes": sum(killer.freezes for killer in controllers),
                "frozen_s": round(sum(killer.frozen_s for killer in controllers), 1),
                "control_plane_kills": outages.kills if outages else 0,
                "control_plane_freezes": outages.freezes if outages else 0,
                "controller_manager_kills": managers.kills if managers else 0,
                "duration_s": round(took, 1),
                "deleted_before_start": deleted_before_start,
                "cancels_refused_finished": self.cancels_refused, **checked, **seen,
            }  # fmt: skip
        finally:
            for final in finals:
                final.stop()

    def _wait_gone(self, names: set[str]) -> None:
        """Wait for the deleted finished Runbooks ``names`` to go (no finalizer of a finished run holds one);
        those still there when the round's time is up are said, with what holds them."""
        began = time.monotonic()
        try:
            wait_until(lambda: not names & self.runbooks().keys(), self.args.timeout, "the deletions")
            log(f"the {len(names)} finished Runbooks deleted went after {time.monotonic() - began:.1f} s")
        except TimeoutError as error:
            left = {
                name: {
                    "finalizers": rb["metadata"].get("finalizers"),
                    "deletionTimestamp": rb["metadata"].get("deletionTimestamp"),
                    "result": (rb.get("status") or {}).get("result"),
                    "reason": (rb.get("status") or {}).get("reason"),
                }
                for name, rb in self.runbooks().items()
                if name in names
            }
            raise TimeoutError(f"{error}: still there: {json.dumps(left)}") from error

    def _delete_started(self, pending: list[Planned], force: bool) -> int:
        """Delete the pending Runbooks whose script has started (all of them when ``force``); return how
        many were deleted before their start."""
        started = self.witness.started()
        before = 0
        for run in list(pending):
            if run.request_id in started or force:
                before += run.request_id not in started
                self.delete(run.name, force=run.force)
                pending.remove(run)
        return before

    def cancel(self, run: Planned) -> None:
        """Cancel ``run`` as a person on shift does; one that has finished meanwhile is refused (422; with
        ``--via-api``, through the REST API's cancel, in a thread of the client: 409)."""
        if self.client is not None:
            self.client.cancel(run.request_id)
            return
        name = run.name
        body = {"spec": {"cancel": {"requestedBy": "soak", "reason": "soak"}}}
        try:
            persistently(
                self.custom.patch_namespaced_custom_object, *self._args(), name, body, within=OUTAGE_SECONDS
            )
        except ApiException as error:
            stored = ((self.runbooks().get(name) or {}).get("spec") or {}).get("cancel")
            if error.status == 422 and stored is None:
                self.cancels_refused += 1
            elif stored is None:  # else set by an attempt whose answer was lost
                raise

    def _cancel_started(self, pending: list[Planned], force: bool) -> None:
        """Cancel the pending Runbooks whose script has started (all of them when ``force``)."""
        started = self.witness.started()
        for run in list(pending):
            if run.request_id in started or force:
                self.cancel(run)
                pending.remove(run)

    def kept_pods(self) -> list[str]:
        """The Job executor's pods still kept for their end to be read (the finalizer ``ops.mdops.io/result``)
        once every run has finished, after up to ``KEPT_PODS_SECONDS`` for a recording in progress: each is a
        run whose end no controller recorded, its pod and Job held for ever (must be none)."""
        pods = client.CoreV1Api(self.custom.api_client)

        def kept() -> list[str]:
            listed = persistently(pods.list_namespaced_pod, NAMESPACE, within=OUTAGE_SECONDS).items
            return sorted(
                pod.metadata.name
                for pod in listed
                if keys.RESULT_FINALIZER in (pod.metadata.finalizers or [])
            )

        try:
            wait_until(lambda: not kept(), KEPT_PODS_SECONDS, "the kept pods to go", interval=1)
        except TimeoutError:
            return kept()
        return []

    def _wait_recorded(self, runs: list[Planned]) -> None:
        """Wait up to ``RECORD_SECONDS`` for the end of every started run deleted by force to be in the
        ledger: a controller may be stopping one as the last round settles (its runner reports the stop a
        moment later), and the soak then stops the controllers before it can record it."""
        started = self.witness.started()
        pending = [run.request_id for run in runs if run.force and run.request_id in started]
        with contextlib.suppress(TimeoutError):  # those left are counted (forced_unrecorded)
            wait_until(
                lambda: not [rid for rid in pending if not self.ledger(rid)],
                RECORD_SECONDS,
                "the forced deletions' ends to be recorded",
                interval=1,
            )

    def check(self, runs: list[Planned], listed: dict[str, dict[str, Any]]) -> dict[str, Any]:
        self._wait_recorded(runs)
        records = self.witness.records()
        starts, ends = Witness.tally(records)
        spans: dict[str, list[int]] = {}
        for fields in records:
            span = spans.setdefault(fields[1], [int(fields[3]), int(fields[3])])
            span[1] = max(span[1], int(fields[3]))
        problems: list[str] = []
        lost = not_run = duplicates = forced_unrecorded = 0
        not_run_why: Counter[str] = Counter()
        cancelled: Counter[str] = Counter()

        for run in runs:
            names = [run.name, f"{run.name}-again"] if run.recreate else [run.name]
            if self.api is not None and run.recreate and run.name not in listed:  # not made again: see run
                names.remove(run.name)
            if run.delete_mid_run:
                result = self.ledger(run.request_id)
                if run.force and starts[run.request_id] and not result:
                    forced_unrecorded += 1  # gone while no controller ran, no controller started since
                elif starts[run.request_id] and run.request_id not in ends:
                    if not result or result.get("exitCode") != 130:
                        lost += 1
                        problems.append(f"{run.name}: deleted mid-run, ledger says {result}")
                elif (
                    run.request_id in ends
                    and result
                    and result.get("exitCode") != script_result(ends[run.request_id])[1]
                ):
                    lost += 1
                    problems.append(f"{run.name}: ended {ends[run.request_id]}, ledger says {result}")
                continue
            if run.cancel:
                status = (listed.get(run.name) or {}).get("status") or {}
                before = status.get("exitCode") is None and "before it started" in status.get("message", "")
                if not status.get("result"):
                    problem = "no result"
                elif before:
                    problem = "ran" if starts[run.request_id] else ""
                    cancelled["before_start"] += 1
                elif starts[run.request_id] and run.request_id not in ends:
                    problem = "" if status.get("exitCode") == 130 else "stopped, not recorded cancelled"
                    cancelled["stopped"] += 1
                elif run.request_id in ends:
                    same = (status["result"], status.get("exitCode")) == script_result(ends[run.request_id])
                    problem = "" if same else f"ended {ends[run.request_id]}"
                    cancelled["ended_first"] += 1
                else:  # its runner stopped before its script started
                    problem = "" if status.get("exitCode") == 130 else "never started"
                    cancelled["stopped_before_its_script"] += 1
                if problem:
                    lost += 1
                    problems.append(f"{run.name}: cancelled, {problem}; the Runbook says {status}")
                continue
            for name in names:
                status = (listed.get(name) or {}).get("status") or {}
                duplicates += bool(status.get("duplicateOf"))
                if not status.get("result"):
                    lost += 1
                    problems.append(f"{name}: no result")
                elif starts[run.request_id] == 0:
                    not_run += name == run.name
                    not_run_why[status.get("message", "")[:60]] += name == run.name
                    if status["result"] != "failed":
                        lost += 1
                        problems.append(f"{name}: never ran, yet {status['result']}")
                elif run.request_id not in ends:
                    lost += 1
                    problems.append(f"{name}: its script has no end, the Runbook says {status['result']}")
                elif (status["result"], status.get("exitCode")) != script_result(ends[run.request_id]):
                    lost += 1
                    said = f"{status['result']} ({status.get('exitCode')}): {status.get('message')}"
                    problems.append(f"{name}: script exited {ends[run.request_id]}, the Runbook says {said}")
                if status.get("result") == "success" and starts[run.request_id] != 1:
                    problems.append(f"{name}: success with {starts[run.request_id]} runs")
        by_target: dict[str, list[list[int]]] = {}
        mutating = {run.request_id for run in runs if run.mutating}
        targets = {fields[1]: fields[0] for fields in records}
        for request_id, span in spans.items():
            if request_id in mutating:
                by_target.setdefault(targets[request_id], []).append(span)
        overlaps, overlap_ms = 0, 0.0
        for target_spans in by_target.values():
            target_spans.sort()
            for (_, earlier_end), (later_start, _) in itertools.pairwise(target_spans):
                if later_start < earlier_end:
                    overlaps += 1
                    overlap_ms += (earlier_end - later_start) / 1e6
        successes = [
            run
            for run in runs
            if ((listed.get(run.name) or {}).get("status") or {}).get("result") == "success"
        ]
        return {
            "request_ids": len(runs),
            "runbooks": len(runs) + sum(run.recreate for run in runs),
            "runs": sum(starts.values()),
            "max_runs_per_request_id": max(starts.values(), default=0),
            "successes_not_run_exactly_once": sum(starts[run.request_id] != 1 for run in successes),
            "mutating_runs": sum(starts[rid] for rid in mutating),
            "overlaps": overlaps,
            "overlap_ms": round(overlap_ms, 1),
            "lost": lost,
            "not_run": not_run,
            "not_run_why": dict(not_run_why),
            "duplicates": duplicates,
            "deleted_mid_run": sum(run.delete_mid_run for run in runs),
            "deleted_by_force": sum(run.force for run in runs),
            "forced_unrecorded": forced_unrecorded,
            "pods_kept": self.kept_pods() if self.executor == "job" else [],
            "cancelled": sum(bool(run.cancel) for run in runs),
            "cancelled_as": dict(cancelled),
            "problems": problems,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executors", default="local,job", help="comma-separated: local, job")
    parser.add_argument("--count", type=int, default=100, help="request ids")
    parser.add_argument("--targets", type=int, default=3, help="targets (lock groups)")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="controllers at once, with kopf's peering (each killed on its own)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800,
        help="seconds a round may take (the Job executor with --kill-control-plane needs over 900)",
    )
    parser.add_argument(
        "--kill-control-plane", action="store_true", help="SIGKILL the kube-apiserver (at times etcd) too"
    )
    parser.add_argument(
        "--kill-controller-manager",
        action="store_true",
        help="SIGKILL the kube-controller-manager (the Job controller, its garbage collector) too",
    )
    parser.add_argument("--cancel", type=float, default=0.0, help="the fraction of the runs cancelled")
    parser.add_argument(
        "--force-delete",
        type=float,
        default=0.0,
        help="the fraction of the runs deleted mid-run whose finalizer is taken off first",
    )
    parser.add_argument(
        "--freeze",
        type=float,
        default=0.0,
        help="the fraction of the kills that freeze (SIGSTOP, then SIGCONT) instead; 1: freezes only",
    )
    parser.add_argument(
        "--via-api",
        action="store_true",
        help="send the requests through the REST API's execute (python -m api, killed and frozen too)",
    )
    args = parser.parse_args()
    if args.replicas > 1 and "local" in args.executors.split(","):
        # Each replica would run scripts in its own folder and could not adopt another's runs.
        parser.error("--replicas above 1 needs --executors job, as peering does in the chart")
    results = {}
    for executor in args.executors.split(","):
        work = Path(tempfile.mkdtemp(prefix=f"mdops-soak-{executor}-"))
        log(f"{executor}: the witness, the controllers' logs and the control plane's in {work}")
        supervised = (
            {"supervise": True, "backoff": Backoff(initial=0.25, cap=1.0)}
            if args.kill_control_plane or args.kill_controller_manager
            else {}
        )
        # The supervisor says what it restarts on stdout: here, on stderr beside the progress, so that
        # stdout is the JSON report alone.
        with contextlib.redirect_stdout(sys.stderr), ControlPlane(work / "cluster", **supervised) as cluster:
            cluster.install_crds()
            results[executor] = Soak(args, executor, cluster, work).run()
        print(json.dumps({executor: results[executor]}, indent=1), flush=True)
    failed = [e for e, r in results.items() if r["max_runs_per_request_id"] > 1 or r["overlaps"] or r["lost"]
              or r["successes_not_run_exactly_once"] or r.get("answers_wrong")]  # fmt: skip
    sys.exit(f"guarantees broken under {', '.join(failed)}" if failed else 0)


if __name__ == "__main__":
    main()
