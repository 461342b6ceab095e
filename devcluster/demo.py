"""``make demo``: a scripted session against a running local stack (``make up DETACH=1``).

First a known state, whatever ran before (the README's walkthrough leaves the feed on the backup): no
faults, and through the REST API a ``start`` and a ``failback``, which do nothing when the feed already
runs on the primary. Then health_check, drill, failover, failback, a failed gate with ``enforce`` and a
dry run, through the REST API and kubectl, and a table of what happened, each step against its expected
outcome, and the platform's metrics before and after. The exit status is 1 when a step missed its outcome.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devcluster.controlplane import REPO
from devcluster.supervisor import read_env
from runbooks import models
from runbooks.kube import loopback_kubeconfig

STACK_ENV = REPO / ".mdops" / "stack.env"
METRICS = (
    "coverage_ratio",
    "throughput_mps",
    "failover_latency_ms",
    "consumer_backlog_messages",
    "runbook_exit_code",
)


SUCCESS = ("success", 0)


@dataclass
class Row:
    """One step of the session: its outcome (result, exit code) and the outcome it should have."""

    step: str
    via: str
    command: str
    answer: str
    outcome: tuple[Any, Any]
    took: float
    health: dict[str, Any]
    expected: tuple[str, int]

    @property
    def ok(self) -> bool:
        return self.outcome == self.expected

    def cells(self) -> tuple[str, ...]:
        result, exit_code = self.outcome
        verdict = "yes" if self.ok else f"NO: expected {self.expected[0]}, exit {self.expected[1]}"
        took, health = f"{self.took:.1f}s", _health(self.health)
        return (
            self.step,
            self.via,
            self.command,
            self.answer,
            str(result),
            str(exit_code),
            took,
            health,
            verdict,
        )


class Demo:
    def __init__(self, env: dict[str, str]):
        self.env = env
        self.suffix = uuid.uuid4().hex[:6]
        self.rows: list[Row] = []
        loopback_kubeconfig(env["MDOPS_KUBECONFIG"])

    def http(self, method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            url, method=method, data=None if body is None else json.dumps(body).encode()
        )
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return self.http(method, self.env["MDOPS_API_URL"] + path, body, self.env["MDOPS_API_TOKEN"])

    def kubectl(self, *args: str, input: str | None = None) -> str:
        argv = [
            self.env["MDOPS_KUBECTL"],
            f"--kubeconfig={self.env['MDOPS_KUBECONFIG']}",
            "-n",
            self.env["MDOPS_NAMESPACE"],
        ]
        return subprocess.run([*argv, *args], input=input, capture_output=True, text=True, check=True).stdout

    def summary(self) -> dict[str, Any]:
        return {
            name: metric["value"] for name, metric in self.api("GET", "/api/ops/metrics/summary")[1].items()
        }

    def via_api(self, step: str, expected: tuple[str, int] = SUCCESS, **body: Any) -> None:
        began = time.monotonic()
        code, answer = self.api(
            "POST", "/api/ops/runbooks/execute", {"request_id": f"demo-{step}-{self.suffix}", **body}
        )
        answer = answer if isinstance(answer, dict) else {}
        runbook = answer.get("runbook") or {}
        outcome = (runbook.get("status"), runbook.get("exit_code"))
        took, health = time.monotonic() - began, answer.get("health") or {}
        self.rows.append(Row(step, "REST", body["command"], f"HTTP {code}", outcome, took, health, expected))

    def via_kubectl(self, step: str, expected: tuple[str, int] = SUCCESS, **spec: Any) -> None:
        name = f"demo-{step}-{self.suffix}"
        began = time.monotonic()
        self.kubectl("apply", "-f", "-", input=json.dumps(models.manifest(name, spec)))
        self.kubectl("wait", f"rb/{name}", "--for=jsonpath={.status.result}", "--timeout=120s")
        status = json.loads(self.kubectl("get", f"rb/{name}", "-o", "json"))["status"]
        outcome = (status["result"], status["exitCode"])
        took, health = time.monotonic() - began, status.get("health") or {}
        self.rows.append(Row(step, "kubectl", spec["command"], "applied", outcome, took, health, expected))

    def known_state(self) -> None:
        """The state every step below assumes: the feed running on the primary source, no faults. The
        simulator's faults are the demo's own tool (it injects one below); the feed is set through the
        platform, by runbooks that do nothing when it is there already."""
        sim = self.env["MDOPS_SIM_URL"]
        found = self.http("GET", f"{sim}/admin/status")[1]
        print(
            f"Known state first: the feed running on primary, no faults (found: {found['state']} on "
            f"{found['active_source']}, faults {json.dumps(found['faults'])}).",
            flush=True,
        )
        self.http("DELETE", f"{sim}/admin/faults")
        self.via_api("ready", command="start", reason="demo: known state, the feed running")
        self.via_api("on-primary", command="failback", reason="demo: known state, on the primary source")

    def run(self) -> int:
        self.known_state()
        before = self.summary()
        self.via_api("check", command="health_check", reason="demo: morning check")
        self.via_kubectl("drill", command="drill", enforce=True, reason="demo: failover drill")
        self.via_api("failover", command="failover", reason="demo: primary degraded")
        self.via_kubectl("failback", command="failback", reason="demo: primary healthy again")
        sim = self.env["MDOPS_SIM_URL"]
        self.http("POST", f"{sim}/admin/faults", {"lose_instruments": 200})
        try:
            gate = {"enforce": True, "reason": "demo: coverage below the gate"}
            self.via_api("gate", ("failed", 3), command="health_check", **gate)
        finally:
            self.http("DELETE", f"{sim}/admin/faults")
        self.via_api("plan", command="failover", dry_run=True, reason="demo: plan only")
        status = self.api("GET", "/api/ops/status")[1]
        # Prometheus scrapes every few seconds: wait (bounded) until it has seen the gate's exit code.
        deadline = time.monotonic() + 20
        while (after := self.summary())["runbook_exit_code"] != 3 and time.monotonic() < deadline:
            time.sleep(1)

        header = ("step", "via", "command", "answer", "result", "exit", "took", "health", "as expected")
        print(_table(header, [row.cells() for row in self.rows]))
        print()
        print(
            _table(
                ("metric", "before", "after"), [(m, _num(before.get(m)), _num(after.get(m))) for m in METRICS]
            )
        )
        print()
        mode, profile, window = status["environment_mode"], status["active_profile"], status["active_window"]
        print(f"reported state: mode={mode} profile={profile} window={window} (the dry run changed nothing)")
        print(f"last exit codes: {json.dumps(status['last_exit_codes'])}")
        missed = [row.step for row in self.rows if not row.ok]
        if missed:
            print(
                f"{len(missed)} of {len(self.rows)} steps missed their expected outcome: {', '.join(missed)}."
            )
            return 1
        print(f"every step ({len(self.rows)}) had its expected outcome")
        return 0


def _health(health: dict[str, Any]) -> str:
    if not health:
        return "-"
    gate = health.get("gate") or {}
    verdict = "gate ok" if gate.get("passed", True) else "gate FAILED"
    return f"coverage {_num(health.get('coverage_ratio'))}, {verdict}"


def _num(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in (header, *rows)
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main() -> int:
    env_file = Path(sys.argv[1]) if len(sys.argv) > 1 else STACK_ENV
    if not env_file.exists():
        print(f"no running stack ({env_file} is missing): start one with `make up DETACH=1`", file=sys.stderr)
        return 1
    return Demo(read_env(env_file)).run()


if __name__ == "__main__":
    sys.exit(main())
