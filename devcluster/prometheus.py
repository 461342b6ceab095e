"""A real Prometheus server (Debian's package ``prometheus``) for tests and the local stack.

It listens on a random loopback port, keeps its TSDB and log in a work directory, and scrapes the
targets it is given (job name, ``host:port``, optional bearer token) every ``scrape_interval``::

    with Prometheus(workdir, [ScrapeTarget("sim", "127.0.0.1:9200")], scrape_interval="1s") as prom:
        prom.query("md_throughput_mps")

``tools/install-prometheus.sh`` installs the binary when it is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devcluster.private import write_private
from devcluster.processes import Process, free_port, wait_until

REPO = Path(__file__).resolve().parent.parent
INSTALL_SCRIPT = REPO / "tools" / "install-prometheus.sh"
# mdops's alerts, a PrometheusRule (the kustomize component's, the chart's): its groups are a rules file.
ALERTS = REPO / "manifests" / "components" / "alerts" / "prometheusrule.yaml"
# mdops's Grafana dashboard of the same metrics (the component's, the chart's).
DASHBOARD = REPO / "manifests" / "components" / "dashboard" / "dashboard.json"


@dataclass(frozen=True)
class ScrapeTarget:
    job: str
    address: str  # host:port
    bearer_token: str | None = None
    metrics_path: str = "/metrics"


def binary() -> Path:
    """The ``prometheus`` binary: on PATH, else installed by ``tools/install-prometheus.sh``."""
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if found:
        return Path(found)
    out = subprocess.run([INSTALL_SCRIPT], check=True, stdout=subprocess.PIPE, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def promtool() -> Path:
    """``promtool``, from the same package as :func:`binary`."""
    return binary().parent / "promtool"


def alert_rules() -> dict[str, Any]:
    """mdops's alerts as a Prometheus rules file: the groups of :data:`ALERTS`, their one source."""
    return yaml.safe_load(ALERTS.read_text())["spec"]


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


class Prometheus:
    """One Prometheus process; ``start()`` returns once ``/-/ready`` answers 200."""

    def __init__(
        self,
        workdir: Path,
        targets: Sequence[ScrapeTarget] = (),
        *,
        scrape_interval: str = "1s",
        port: int | None = None,
        bin_path: Path | None = None,
        logs: Path | None = None,
        rules: dict[str, Any] | None = None,
    ):
        """Its configuration and data are in ``workdir``, its log in ``logs`` (``<workdir>/logs``); it
        evaluates ``rules`` (a rules file's ``groups``, e.g. :func:`alert_rules`) if given."""
        self.workdir = Path(workdir)
        self.rules = rules
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.port = port or free_port()
        self.bin = bin_path
        self.config_path = self.workdir / "prometheus.yml"
        self.logs = Path(logs) if logs else self.workdir / "logs"
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        jobs = []
        for target in self.targets:
            job: dict[str, Any] = {
                "job_name": target.job,
                "metrics_path": target.metrics_path,
                "static_configs": [{"targets": [target.address]}],
            }
            if target.bearer_token:
                secret = write_private(self.workdir / f"{target.job}.token", target.bearer_token)
                job["authorization"] = {"type": "Bearer", "credentials_file": str(secret)}
            jobs.append(job)
        interval = self.scrape_interval
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "scrape_configs": jobs,
        }
        if self.rules is not None:
            rules = self.workdir / "rules.yml"
            rules.write_text(yaml.safe_dump(self.rules, sort_keys=False))
            config["rule_files"] = [str(rules)]
        return config

    def start(self, timeout: float = 60.0) -> Prometheus:
        for folder in (self.workdir, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        argv = [
            self.bin or binary(),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=info",
        ]
        self.process = Process("prometheus", argv, self.logs)
        try:
            wait_until(
                lambda: _get(f"{self.url}/-/ready")[0] == 200, timeout, "prometheus /-/ready", [self.process]
            )
        except BaseException:
            self.stop()
            raise
        return self

    def set_targets(self, targets: Sequence[ScrapeTarget]) -> None:
        """Scrape other targets from now on (the configuration is reloaded, the data kept)."""
        self.targets = list(targets)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reading -------------------------------------------------------------------------------

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector (empty when nothing matches)."""
        status, body = _get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        if status != 200:
            raise RuntimeError(f"prometheus query {promql!r} answered {status}: {body[:200]!r}")
        return json.loads(body)["data"]["result"]

    def queries_answered(self) -> float:
        """How many instant queries this Prometheus has answered (its own request counter): what the API's
        clients cost it."""
        status, body = _get(f"{self.url}/metrics")
        if status != 200:
            raise RuntimeError(f"prometheus /metrics answered {status}")
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in body.decode().splitlines()
            if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line
        )

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts pending or firing now (``labels``, ``annotations``, ``state``)."""
        status, body = _get(f"{self.url}/api/v1/alerts")
        if status != 200:
            raise RuntimeError(f"prometheus /api/v1/alerts answered {status}")
        return json.loads(body)["data"]["alerts"]

    def targets_up(self) -> bool:
        """Whether every configured target has been scraped successfully at least once."""
        status, body = _get(f"{self.url}/api/v1/targets?state=active")
        if status != 200:
            return False
        active = json.loads(body)["data"]["activeTargets"]
        return len(active) == len(self.targets) and all(t["health"] == "up" for t in active)
