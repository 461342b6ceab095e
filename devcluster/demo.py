"""``make demo``: a scripted session against a running local stack (``make up DETACH=1``).

health_check, drill, failover, failback, a failed gate with ``enforce`` and a dry run, through the
REST API and kubectl, then a table of what happened and the platform's metrics before and after.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from devcluster.controlplane import REPO
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


class Demo:
    def __init__(self, env: dict[str, str]):
        self.env = env
        self.suffix = uuid.uuid4().hex[:6]
        self.rows: list[tuple[str, ...]] = []
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

    def via_api(self, title: str, **body: Any) -> dict[str, Any]:
        began = time.monotonic()
        code, answer = self.api(
            "POST", "/api/ops/runbooks/execute", {"request_id": f"demo-{title}-{self.suffix}", **body}
        )
        runbook = answer.get("runbook", {}) if isinstance(answer, dict) else {}
        health = (answer or {}).get("health") or {}
        took = f"{time.monotonic() - began:.1f}s"
        result, exit_code = str(runbook.get("status")), str(runbook.get("exit_code"))
        self.rows.append(
            (title, "REST", body["command"], f"HTTP {code}", result, exit_code, took, _health(health))
        )
        return answer

    def via_kubectl(self, title: str, **spec: Any) -> dict[str, Any]:
        name = f"demo-{title}-{self.suffix}"
        began = time.monotonic()
        self.kubectl("apply", "-f", "-", input=json.dumps(models.manifest(name, spec)))
        self.kubectl("wait", f"rb/{name}", "--for=jsonpath={.status.result}", "--timeout=120s")
        status = json.loads(self.kubectl("get", f"rb/{name}", "-o", "json"))["status"]
        took, health = f"{time.monotonic() - began:.1f}s", _health(status.get("health") or {})
        self.rows.append(
            (
                title,
                "kubectl",
                spec["command"],
                "applied",
                status["result"],
                str(status["exitCode"]),
                took,
                health,
            )
        )
        return status

    def run(self) -> None:
        before = self.summary()
        self.via_api("check", command="health_check", reason="demo: morning check")
        self.via_kubectl("drill", command="drill", enforce=True, reason="demo: failover drill")
        self.via_api("failover", command="failover", reason="demo: primary degraded")
        self.via_kubectl("failback", command="failback", reason="demo: primary healthy again")
        sim = self.env["MDOPS_SIM_URL"]
        self.http("POST", f"{sim}/admin/faults", {"lose_instruments": 200})
        try:
            self.via_api("gate", command="health_check", enforce=True, reason="demo: coverage below the gate")
        finally:
            self.http("DELETE", f"{sim}/admin/faults")
        self.via_api("plan", command="failover", dry_run=True, reason="demo: plan only")
        status = self.api("GET", "/api/ops/status")[1]
        # Prometheus scrapes every few seconds: wait (bounded) until it has seen the gate's exit code.
        deadline = time.monotonic() + 20
        while (after := self.summary())["runbook_exit_code"] != 3 and time.monotonic() < deadline:
            time.sleep(1)

        header = ("step", "via", "command", "answer", "result", "exit", "took", "health")
        print(_table(header, self.rows))
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
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    Demo(env).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
