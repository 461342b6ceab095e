"""The local stack: control plane, market-data simulator, controller, Prometheus and the REST API.

``make up`` runs it (``python -m devcluster up``); the end-to-end tests start the same thing::

    with Stack(workdir) as stack:
        stack.api_url, stack.admin_token, stack.prometheus.url, ...

Once it is up, its supervisor (:class:`devcluster.supervisor.Supervisor`) restarts every component that
exits, the control plane's included, with the same ports, environment, state folder and log (appended):
``<workdir>/components.json`` records each one's pid, restarts and last exits.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

import yaml

from devcluster.components import SESSIONS, ControllerProcess
from devcluster.controlplane import REPO, ControlPlane
from devcluster.private import write_private
from devcluster.processes import Process, answers_200, free_port, wait_until
from devcluster.prometheus import Prometheus, ScrapeTarget, alert_rules
from devcluster.supervisor import RECORD, Backoff, Supervisor

NAMESPACE = "mdops"
SCRIPTS = REPO / "examples" / "scripts"
# Ports a newcomer can remember; a busy one is replaced by a free one.
PREFERRED_PORTS = {"api": 8080, "prometheus": 9090, "sim": 9200}


class Stack:
    def __init__(self, workdir: Path, bin_dir: Path | None = None, fixed_ports: bool = True,
                 sim_args: tuple[str, ...] = (), scripts: Path = SCRIPTS,
                 script_env: dict[str, str] | None = None, backoff: Backoff | None = None,
                 api_env: dict[str, str] | None = None):  # fmt: skip
        """``scripts`` (the runbook scripts), ``script_env`` (more of their environment), ``backoff``
        (the supervisor's) and ``api_env`` (more of the API's environment: its settings) are for tests;
        ``make up`` keeps the defaults."""
        self.workdir = Path(workdir)
        self.logs = self.workdir / "logs"
        self.cluster = ControlPlane(self.workdir / "cluster", bin_dir)
        self.ports = {name: free_port(p if fixed_ports else 0) for name, p in PREFERRED_PORTS.items()}
        self.sim_args = sim_args
        self.scripts = scripts
        self.script_env = script_env or {}
        self.backoff = backoff
        self.api_env = api_env or {}
        self.admin_token = secrets.token_urlsafe(24)
        self.viewer_token = secrets.token_urlsafe(24)
        self.processes: list[Process] = []
        self.controller: ControllerProcess | None = None
        self.prometheus: Prometheus | None = None
        self.supervisor: Supervisor | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    @property
    def console_url(self) -> str:
        return f"{self.api_url}/console/"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['sim']}"

    def start(self) -> Stack:
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.supervisor = Supervisor(
            [*self.cluster.processes, *self.processes], self.workdir / RECORD, self.backoff
        ).start()
        return self

    def _step(self, message: str) -> None:
        print(f"[mdops] {message}", flush=True)

    def _start(self) -> None:
        self._step("starting the control plane (etcd, kube-apiserver, kube-controller-manager, podsim)")
        self.cluster.start()
        self.cluster.install_crds()
        self.cluster.kubectl("create", "namespace", NAMESPACE)
        # Who a Runbook or an approval may name. The stack's controller and API use the admin's kubeconfig,
        # which may name anyone (a cluster's ServiceAccount may through its Role's "impersonate").
        self.cluster.kubectl("apply", "-f", str(REPO / "manifests" / "identities.yaml"))

        self._step(f"starting the market-data simulator on {self.sim_url}")
        sim = self._run(
            "sim", [sys.executable, "-m", "sim", "--port", str(self.ports["sim"]), *self.sim_args]
        )
        wait_until(lambda: answers_200(f"{self.sim_url}/healthz"), 30, "the simulator", [sim])

        self._step("starting the controller (local executor, reference scripts)")
        self.controller = ControllerProcess(
            self.cluster.kubeconfig,
            NAMESPACE,
            self.workdir,
            {
                "MDOPS_SCRIPTS_DIR": str(self.scripts),
                "MDOPS_SCRIPT_ENV": json.dumps({"MDOPS_SIM_URL": self.sim_url, **self.script_env}),
            },
            logs=self.logs,
        )
        self.processes.append(self.controller.process)
        wait_until(
            lambda: answers_200(self.controller.metrics_url), 30, "the controller", [self.controller.process]
        )

        self._step(f"starting Prometheus on 127.0.0.1:{self.ports['prometheus']}")
        self.prometheus = Prometheus(
            self.workdir / "prometheus",
            [
                ScrapeTarget("sim", f"127.0.0.1:{self.ports['sim']}"),
                ScrapeTarget("controller", f"127.0.0.1:{self.controller.metrics_port}"),
                ScrapeTarget("api", f"127.0.0.1:{self.ports['api']}", bearer_token=self.admin_token),
            ],
            scrape_interval="2s",
            port=self.ports["prometheus"],
            logs=self.logs,
            rules=alert_rules(),
        ).start()
        self.processes.append(self.prometheus.process)

        self._step(f"starting the REST API on {self.api_url}")
        tokens = self.workdir / "tokens.yaml"
        write_private(tokens, yaml.safe_dump({"tokens": [
            {"name": "viewer", "token": self.viewer_token, "permissions": ["status:read", "metrics:read"]},
        ]}))  # fmt: skip
        api = self._run("api", [sys.executable, "-m", "api"], {
            "MDOPS_KUBECONFIG": str(self.cluster.kubeconfig),
            "MDOPS_NAMESPACE": NAMESPACE,
            "OPS_API_TOKEN": self.admin_token,
            "MDOPS_API_TOKENS_FILE": str(tokens),
            "MDOPS_PROMETHEUS_URL": self.prometheus.url,
            "MDOPS_API_PORT": str(self.ports["api"]),
            "MDOPS_CALENDAR_CACHE": str(self.workdir / SESSIONS),
            **self.api_env,
        })  # fmt: skip
        wait_until(lambda: answers_200(f"{self.api_url}/readyz"), 60, "the API", [api])

    def _run(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        process = Process(name, argv, self.logs, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.processes.append(process)
        return process

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()  # it stops them all: it started some
        while self.processes:
            self.processes.pop().stop()
        self.cluster.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def settings(self) -> dict[str, str]:
        """What ``.mdops/stack.env`` holds."""
        return {
            "MDOPS_KUBECONFIG": str(self.cluster.kubeconfig),
            "MDOPS_KUBECTL": str(self.cluster.kubectl_path),
            "MDOPS_NAMESPACE": NAMESPACE,
            "MDOPS_API_URL": self.api_url,
            "MDOPS_CONSOLE_URL": self.console_url,
            "MDOPS_API_TOKEN": self.admin_token,
            "MDOPS_API_VIEWER_TOKEN": self.viewer_token,
            "MDOPS_PROMETHEUS_URL": self.prometheus.url if self.prometheus else "",
            "MDOPS_SIM_URL": self.sim_url,
        }
