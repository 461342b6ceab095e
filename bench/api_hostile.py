"""Benchmark: the REST API under hostile load, ten times what its tests do, on a real control plane with the
real controller (local executor) and ``python -m api`` as a process.

1. ``--clients`` (200) concurrent ``POST /execute``, each with its own request id, then as many with one
   request id (the same parameters): every answer a 2xx, 4xx or 503 with a JSON body (never a 500 nor a
   dropped connection), one Runbook per request id answered 2xx (none for a 429), each run once (the
   scripts' witness file). Once with no quota (``MDOPS_API_EXECUTE_RATE`` empty, no cap of unfinished
   runs), once with the default quota (30 a minute, 20 unfinished).
2. ``--rounds`` (5) rounds of ``--streams`` (200) event streams opened at once by ``--stream-tokens`` (25)
   tokens, 8 each (the default per-token limit) and as many again refused (429), then all dropped: the
   API's resident memory and file descriptors before, with all open, and once dropped.
3. ``--slow`` (3000) slowloris connections (a request's head a byte at a time) beside one normal client
   reading ``/api/ops/status``: its latencies with and without them, and the descriptors once their time
   (``MDOPS_API_READ_TIMEOUT_SECONDS``, 10 s) is up.
4. Executes one after the other for 20 s, alone and then beside ``--unknown`` (200) clients that ask for
   runs that never existed as fast as they are answered (each a read of the API server, the cache being
   possibly behind): the executes' answers and times, the made-up asks' answers, the API's CPU.

    python -m bench.api_hostile [--clients 200] [--streams 200] [--slow 3000] [--unknown 200]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import secrets
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
from kubernetes import client

from devcluster.components import ControllerProcess
from devcluster.controlplane import ControlPlane
from devcluster.processes import Process, answers_200, free_port, wait_until
from runbooks import keys
from runbooks.kube import api_client

NAMESPACE = "bench-hostile"
STREAMS_PER_TOKEN = 8  # the default MDOPS_API_EVENTS_STREAMS_PER_TOKEN


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def api_process(
    work: Path, kubeconfig: Path, tokens_file: Path, admin: str, **env: str
) -> tuple[Process, str]:
    port = free_port()
    process = Process(f"api-{port}", [sys.executable, "-m", "api"], work, env={
        **os.environ, "MDOPS_KUBECONFIG": str(kubeconfig), "MDOPS_NAMESPACE": NAMESPACE,
        "OPS_API_TOKEN": admin, "MDOPS_API_TOKENS_FILE": str(tokens_file), "MDOPS_API_PORT": str(port),
        "MDOPS_PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}", "MDOPS_API_LOG_LEVEL": "warning",
        "MDOPS_API_EXECUTE_WAIT_SECONDS": "30", **env,
    })  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers_200(f"{url}/readyz"), 120, "the API's /readyz", [process])
    return process, url


def classify(response: httpx.Response | BaseException) -> str:
    """``2xx``, ``4xx`` (each with its status), ``503``: a valid answer with a JSON body; else what it was."""
    if isinstance(response, BaseException):
        return f"error {type(response).__name__}"
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} not JSON"
    valid = response.is_success or 400 <= response.status_code < 500 or response.status_code == 503
    shaped = "runbook" in body if response.is_success else "detail" in body
    return str(response.status_code) if valid and shaped else f"{response.status_code} INVALID"


async def executes(url: str, token: str, bodies: list[dict]) -> tuple[Counter, float, list]:
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as http:
        began = time.monotonic()
        answers = await asyncio.gather(
            *(http.post("/api/ops/runbooks/execute", json=body) for body in bodies), return_exceptions=True
        )
        elapsed = time.monotonic() - began
    return Counter(classify(a) for a in answers), elapsed, answers


def runbooks_by_request(custom, prefix: str) -> Counter:
    listed = custom.list_namespaced_custom_object(keys.GROUP, keys.VERSION, NAMESPACE, keys.PLURAL)["items"]
    found = (rb["spec"].get("requestId") or rb["metadata"]["name"] for rb in listed)
    return Counter(rid for rid in found if rid.startswith(prefix))


def witnessed(witness: Path, prefix: str) -> Counter:
    lines = witness.read_text().split() if witness.exists() else []
    return Counter(rid for rid in lines if rid.startswith(prefix))


def execute_phase(url, token, custom, witness, clients: int, label: str) -> dict:
    """Distinct ids, then one id ``clients`` times; what the answers were and what ran."""
    distinct = [{"command": "health_check", "request_id": f"{label}-d{i}"} for i in range(clients)]
    counts, seconds, answers = asyncio.run(executes(url, token, distinct))
    accepted = {
        body["request_id"]
        for body, a in zip(distinct, answers, strict=True)
        if isinstance(a, httpx.Response) and a.is_success
    }
    same = [{"command": "health_check", "request_id": f"{label}-same"}] * clients
    same_counts, same_seconds, same_answers = asyncio.run(executes(url, token, same))
    same_ok = [a for a in same_answers if isinstance(a, httpx.Response) and a.is_success]
    uids = {a.json()["runbook"]["request_id"] for a in same_ok}

    # One request id, two sets of parameters (half each): one run, one half answered with it, the other 409.
    conflict = [
        {"command": "health_check", "request_id": f"{label}-conflict", "reason": f"reason {i % 2}"}
        for i in range(clients)
    ]
    conflict_counts, conflict_seconds, conflict_answers = asyncio.run(executes(url, token, conflict))
    if any(isinstance(a, httpx.Response) and a.is_success for a in conflict_answers):
        accepted.add(f"{label}-conflict")

    def settled() -> bool:  # every accepted run has run (its script wrote its id), none twice
        seen = witnessed(witness, f"{label}-")
        return all(seen[rid] for rid in accepted) and (not same_ok or seen[f"{label}-same"] >= 1)

    wait_until(settled, 300, f"the {label} runs to end")
    made = runbooks_by_request(custom, f"{label}-")
    seen = witnessed(witness, f"{label}-")
    return {
        "distinct": {"answers": dict(counts), "seconds": round(seconds, 1)},
        "same_id": {
            "answers": dict(same_counts),
            "seconds": round(same_seconds, 1),
            "ids_answered": len(uids),
        },
        "conflicting_parameters": {"answers": dict(conflict_counts), "seconds": round(conflict_seconds, 1)},
        "runbooks_made": sum(made.values()),
        "runbooks_expected": len(accepted) + (1 if same_ok else 0),
        "request_ids_with_two_runbooks": sum(1 for n in made.values() if n > 1),
        "accepted_not_made": len(accepted - set(made)),
        "made_not_accepted": len(set(made) - accepted - {f"{label}-same"}),
        "ran_twice": sum(1 for n in seen.values() if n > 1),
    }


async def streams_round(url: str, pid: int, tokens: list[str], per_token: int) -> dict:
    """Each token opens ``2 * per_token`` streams at once: their statuses, and the API's memory and
    descriptors with those accepted open (the refused ones read); then all are dropped."""
    limits = httpx.Limits(max_connections=len(tokens) * per_token * 2 + 10)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:

        async def one(token: str) -> httpx.Response:
            headers = {"Authorization": f"Bearer {token}"}
            return await http.send(http.build_request("GET", "/api/ops/events", headers=headers), stream=True)

        opened = await asyncio.gather(*(one(t) for t in tokens for _ in range(2 * per_token)))
        for response in opened:
            if response.status_code != 200:
                await response.aread()
        held = {"rss_kib": rss_kib(pid), "fds": descriptors(pid)}
        for response in opened:
            await response.aclose()
    return {"statuses": dict(Counter(r.status_code for r in opened)), "open": held}


def streams_phase(url: str, pid: int, tokens: list[str], rounds: int) -> dict:
    before = {"rss_kib": rss_kib(pid), "fds": descriptors(pid)}
    results = []
    for _ in range(rounds):
        outcome = asyncio.run(streams_round(url, pid, tokens, STREAMS_PER_TOKEN))
        wait_until(lambda: descriptors(pid) <= before["fds"] + 2, 60, "the dropped streams' descriptors back")
        outcome["dropped"] = {"rss_kib": rss_kib(pid), "fds": descriptors(pid)}
        results.append(outcome)
    return {"before": before, "rounds": results}


def burst_phase(url, pid, admin, custom, witness, tokens: list[str], clients: int) -> dict:
    """Per token one stream that reads every event and ``STREAMS_PER_TOKEN - 1`` that read nothing (their
    receive buffers small), while ``clients`` executes run: whether each reader saw every run end, the
    API's peak memory, and its descriptors once the non-readers' time is up."""
    port = int(url.rsplit(":", 1)[1])
    before = {"rss_kib": rss_kib(pid), "fds": descriptors(pid)}
    silent = []
    for token in tokens:
        for _ in range(STREAMS_PER_TOKEN - 1):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            head = f"GET /api/ops/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
            sock.sendall(head.encode())
            silent.append(sock)
    ended: list[set[str]] = [set() for _ in tokens]
    peak = [0]
    stop = threading.Event()

    def read(index: int, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.stream("GET", f"{url}/api/ops/events", headers=headers, timeout=120) as response:
            for line in response.iter_lines():
                if stop.is_set():
                    return
                if line.startswith("data: {"):
                    run = json.loads(line[6:]).get("runbook") or {}
                    if run.get("status") in ("success", "failed"):
                        ended[index].add(run["request_id"])

    def sample() -> None:
        while not stop.wait(0.2):
            peak[0] = max(peak[0], rss_kib(pid))

    threads = [threading.Thread(target=read, args=(i, t), daemon=True) for i, t in enumerate(tokens)]
    threads.append(threading.Thread(target=sample, daemon=True))
    for thread in threads:
        thread.start()
    opened = len(silent) + len(tokens)  # give or take the API's own (a watch's connection made again)
    wait_until(lambda: descriptors(pid) >= before["fds"] + opened - 5, 60, "the streams open")
    held = descriptors(pid)
    executed = execute_phase(url, admin, custom, witness, clients, "burst")
    expected = {f"burst-d{i}" for i in range(clients)} | {"burst-same"}
    wait_until(lambda: all(seen >= expected for seen in ended), 60, "every reader to see every run end")
    after_burst = {"fds": descriptors(pid), "unsent_kib": unsent_bytes(port) // 1024}
    for sock in silent:
        sock.close()
    wait_until(
        lambda: descriptors(pid) <= before["fds"] + len(tokens) + 2, 60, "the non-readers' descriptors"
    )
    stop.set()
    return {
        "readers": len(tokens),
        "non_readers": len(silent),
        "readers_that_saw_every_end": sum(1 for seen in ended if seen >= expected),
        "execute": executed,
        "rss_kib": {"before": before["rss_kib"], "peak": peak[0], "after": rss_kib(pid)},
        "fds": {"before": before["fds"], "held": held, "after_burst": after_burst["fds"]},
        "unsent_in_the_kernel_kib": after_burst["unsent_kib"],
        "fds_once_non_readers_closed": descriptors(pid),
    }


def unsent_bytes(port: int) -> int:
    """What the kernel holds, sent by the API on ``port`` and not yet taken by its clients (tx_queue)."""
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port:
            total += int(fields[4].split(":")[0], 16)
    return total


async def slowloris(port: int, count: int, seconds: float) -> int:
    """``count`` connections, each sending a request's head a byte a second; how many the server closed."""
    head = b"GET /api/ops/status HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200

    async def one() -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        try:
            deadline = time.monotonic() + seconds
            for byte in head:
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    if await asyncio.wait_for(reader.read(1024), 1.0) == b"":
                        return True  # closed by the server
                except TimeoutError:
                    pass
                if time.monotonic() > deadline:
                    return False
            return False
        except (ConnectionError, OSError):
            return True
        finally:
            writer.close()

    return sum(await asyncio.gather(*(one() for _ in range(count))))


async def latencies(url: str, token: str, seconds: float) -> list[float]:
    samples = []
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as http:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            began = time.perf_counter()
            (await http.get("/api/ops/status")).raise_for_status()
            samples.append((time.perf_counter() - began) * 1000)
            await asyncio.sleep(0.05)
    return samples


def describe(samples: list[float]) -> dict:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered), 1), "p99_ms": round(p99, 1),
            "max_ms": round(ordered[-1], 1)}  # fmt: skip


def slowloris_process(port: int, count: int, seconds: float) -> int:
    """:func:`slowloris` in a process of its own: the normal client's latencies are the API's, not those of
    a loop shared with thousands of slow connections."""
    return asyncio.run(slowloris(port, count, seconds))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def slow_phase(url: str, port: int, pid: int, token: str, count: int) -> dict:
    used = cpu_seconds(pid)
    baseline = describe(asyncio.run(latencies(url, token, 10)))
    alone_cpu = cpu_seconds(pid) - used
    before = descriptors(pid)
    with ProcessPoolExecutor(1) as pool:
        slow = pool.submit(slowloris_process, port, count, 30)
        wait_until(lambda: descriptors(pid) >= before + count * 0.9, 30, "the slow clients to connect")
        held = descriptors(pid)
        used = cpu_seconds(pid)
        normal = describe(asyncio.run(latencies(url, token, 10)))
        beside_cpu = cpu_seconds(pid) - used
        closed = slow.result()
    wait_until(lambda: descriptors(pid) <= before + 2, 60, "the slow clients' descriptors back")
    return {
        "slow_clients": count,
        "closed_by_the_server": closed,
        "fds": {"before": before, "held": held, "after": descriptors(pid)},
        "status_alone": {**baseline, "api_cpu_s": round(alone_cpu, 2)},
        "status_beside_slow": {**normal, "api_cpu_s": round(beside_cpu, 2)},
    }


async def made_up(url: str, token: str, clients: int, seconds: float) -> dict:
    """``clients`` loops, each asking for runs that never existed (a new request id each time) for
    ``seconds``: the count of each answer."""
    limits = httpx.Limits(max_connections=clients)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as http:
        deadline = time.monotonic() + seconds

        async def ask() -> Counter:
            counts: Counter = Counter()
            while time.monotonic() < deadline:
                try:
                    counts[classify(await http.get(f"/api/ops/runbooks/made-up-{secrets.token_hex(8)}"))] += 1
                except httpx.HTTPError as error:
                    counts[classify(error)] += 1
            return counts

        answers = sum(await asyncio.gather(*(ask() for _ in range(clients))), Counter())
    return dict(answers)


def made_up_process(url: str, token: str, clients: int, seconds: float) -> dict:
    """:func:`made_up` in a process of its own, so that the executes beside it are timed by a loop of
    their own."""
    return asyncio.run(made_up(url, token, clients, seconds))


async def one_by_one(url: str, token: str, label: str, seconds: float) -> tuple[Counter, list[float]]:
    """Executes of a health check one after the other for ``seconds``, each answered with its result: the
    answers, and how long each took (ms)."""
    headers = {"Authorization": f"Bearer {token}"}
    answers: Counter = Counter()
    took = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as http:
        deadline = time.monotonic() + seconds
        for n in itertools.count():
            if time.monotonic() >= deadline:
                break
            began = time.perf_counter()
            body = {"command": "health_check", "request_id": f"{label}-{n}"}
            try:
                answer: httpx.Response | BaseException = await http.post(
                    "/api/ops/runbooks/execute", json=body
                )
            except httpx.HTTPError as error:
                answer = error
            took.append((time.perf_counter() - began) * 1000)
            answers[classify(answer)] += 1
    return answers, took


def unknown_phase(url: str, pid: int, token: str, clients: int, seconds: float = 20) -> dict:
    """Executes one after the other, alone and then beside ``clients`` loops asking for runs that do not
    exist (each such ask is a read of the API server: the API's cache may be behind): whether the executes
    are still answered, and how fast; what the made-up asks were answered; the API's CPU."""
    used = cpu_seconds(pid)
    alone, alone_ms = asyncio.run(one_by_one(url, token, "alone", seconds))
    alone_cpu = cpu_seconds(pid) - used
    with ProcessPoolExecutor(1) as pool:
        flood = pool.submit(made_up_process, url, token, clients, seconds + 2)
        used = cpu_seconds(pid)
        beside, beside_ms = asyncio.run(one_by_one(url, token, "beside", seconds))
        beside_cpu = cpu_seconds(pid) - used
        asked = flood.result()
    return {
        "clients": clients,
        "made_up_answers": asked,
        "made_up_per_s": round(sum(asked.values()) / (seconds + 2), 1),
        "executes_alone": {"answers": dict(alone), **describe(alone_ms), "api_cpu_s": round(alone_cpu, 2)},
        "executes_beside": {
            "answers": dict(beside),
            **describe(beside_ms),
            "api_cpu_s": round(beside_cpu, 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slow", type=int, default=3000)
    parser.add_argument("--unknown", type=int, default=200)
    parser.add_argument(
        "--only",
        choices=["execute", "streams", "burst", "slow", "unknown"],
        action="append",
        help="these phases",
    )
    args = parser.parse_args()
    phases = set(args.only or ["execute", "streams", "burst", "slow", "unknown"])

    work = Path(tempfile.mkdtemp(prefix="mdops-bench-hostile-"))
    admin = secrets.token_urlsafe(16)
    stream_tokens = [secrets.token_urlsafe(16) for _ in range(args.streams // STREAMS_PER_TOKEN)]
    entries = [
        {"name": f"s{i}", "token": t, "permissions": ["status:read"]} for i, t in enumerate(stream_tokens)
    ]
    tokens_file = work / "tokens.yaml"
    tokens_file.touch(0o600)
    tokens_file.write_text(json.dumps({"tokens": entries}))
    scripts, witness = work / "scripts", work / "witness"
    scripts.mkdir()
    script = scripts / "health_check"
    script.write_text('#!/bin/sh\necho "$MDOPS_REQUEST_ID" >> "$WITNESS"\n')
    script.chmod(0o755)
    report: dict = {}
    with ControlPlane(work / "cluster") as cluster:
        cluster.install_crds()
        cluster.kubectl("create", "namespace", NAMESPACE)
        custom = client.CustomObjectsApi(api_client(cluster.kubeconfig))
        (work / "controller").mkdir()
        controller = ControllerProcess(cluster.kubeconfig, NAMESPACE, work / "controller", {
            "MDOPS_SCRIPTS_DIR": str(scripts), "MDOPS_SCRIPT_ENV": json.dumps({"WITNESS": str(witness)}),
        })  # fmt: skip
        open_api, open_url = api_process(
            work, cluster.kubeconfig, tokens_file, admin,
            MDOPS_API_EXECUTE_RATE="", MDOPS_API_MAX_UNFINISHED_PER_TOKEN="0",
        )  # fmt: skip
        quota_api, quota_url = api_process(work, cluster.kubeconfig, tokens_file, admin)
        try:
            wait_until(lambda: controller.metrics(), 60, "the controller to start", [controller.process])
            if "execute" in phases:
                report["execute_no_quota"] = execute_phase(
                    open_url, admin, custom, witness, args.clients, "open"
                )
                report["execute_default_quota"] = execute_phase(
                    quota_url, admin, custom, witness, args.clients, "quota"
                )
            if "streams" in phases:
                report["streams"] = streams_phase(open_url, open_api.popen.pid, stream_tokens, args.rounds)
            if "burst" in phases:
                report["burst"] = burst_phase(
                    open_url, open_api.popen.pid, admin, custom, witness, stream_tokens, args.clients
                )
            if "slow" in phases:
                port = int(open_url.rsplit(":", 1)[1])
                report["slowloris"] = slow_phase(open_url, port, open_api.popen.pid, admin, args.slow)
            if "unknown" in phases:
                report["unknown"] = unknown_phase(open_url, open_api.popen.pid, admin, args.unknown)
        finally:
            for process in (quota_api, open_api):
                process.stop()
            controller.stop()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
