"""A real, local Kubernetes control plane: etcd, kube-apiserver,
kube-controller-manager and a simulated kubelet, on random loopback ports.

Used by the test fixtures, ``make cluster`` and ``make up``::

    with ControlPlane(workdir) as cluster:
        cluster.kubectl("get", "namespaces")

With ``supervise=True`` (``make cluster``) a component that exits is restarted, with the same data folder,
ports and certificates, so the kubeconfig stays valid (:class:`devcluster.supervisor.Supervisor`, after
its ``backoff``); the local stack supervises its control plane with its own components.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from devcluster import pki
from devcluster.kubeconfig import write_kubeconfig
from devcluster.processes import Process, answers_200, free_port, wait_until
from devcluster.supervisor import RECORD, Backoff, Supervisor
from runbooks import crd, keys
from runbooks.kube import loopback_kubeconfig

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "tools" / "build-k8s.sh"

# root-ca-cert-publisher: the ConfigMap kube-root-ca.crt in every namespace (the CA of a Job pod's claim)
CONTROLLERS = ",".join(
    [
        "job",
        "garbagecollector",
        "namespace",
        "serviceaccount",
        "serviceaccount-token",
        "ttl-after-finished",
        "root-ca-cert-publisher",
    ]
)
ADMIN = "mdops-admin"  # the user of the control plane's own kubeconfig (system:masters)


def binaries() -> Path:
    """Build (or find in the cache) the control plane's binaries; return their directory."""
    out = subprocess.run([BUILD_SCRIPT], check=True, stdout=subprocess.PIPE, text=True).stdout
    return Path(out.strip().splitlines()[-1])


class KubectlError(subprocess.CalledProcessError):
    """A kubectl that failed, with what it said (a bare CalledProcessError leaves out its stderr)."""

    def __str__(self) -> str:
        return f"{super().__str__().rstrip('.')}: {self.stderr.strip()}"


class ControlPlane:
    def __init__(
        self,
        workdir: Path,
        bin_dir: Path | None = None,
        supervise: bool = False,
        backoff: Backoff | None = None,
    ):
        self.workdir = Path(workdir)
        self.supervise = supervise
        self.backoff = backoff
        self.supervisor: Supervisor | None = None
        self.bin = bin_dir or binaries()
        self.logs = self.workdir / "logs"
        self.pki = self.workdir / "pki"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.kubectl_path = self.bin / "kubectl"
        self.processes: list[Process] = []
        self.server = ""
        self.started_in = 0.0

    # -- lifecycle -------------------------------------------------------
    def start(self, timeout: float = 90.0) -> ControlPlane:
        began = time.monotonic()
        for directory in (self.logs, self.pki, self.workdir / "etcd"):
            directory.mkdir(parents=True, exist_ok=True)
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        if self.supervise:
            self.supervisor = Supervisor(self.processes, self.workdir / RECORD, self.backoff).start()
        return self

    def _start(self, timeout: float) -> None:
        self.ca = ca = pki.Authority(self.pki)
        serving = ca.issue("apiserver", "kube-apiserver", server=True)
        admin = ca.issue("admin", "mdops-admin", organization="system:masters")
        sa = pki.service_account_keys(self.pki)

        etcd_port, etcd_peer, api_port, kcm_port = (free_port() for _ in range(4))
        etcd = self._run(
            "etcd",
            [
                self.bin / "etcd",
                "--data-dir",
                self.workdir / "etcd",
                "--unsafe-no-fsync",
                "--log-level=warn",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
            ],
        )
        wait_until(lambda: answers_200(f"http://127.0.0.1:{etcd_port}/health"), timeout, "etcd", [etcd])

        self.server = f"https://127.0.0.1:{api_port}"
        apiserver = self._run(
            "kube-apiserver",
            [
                self.bin / "kube-apiserver",
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={self.pki}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={ca.cert_path}",
                f"--service-account-key-file={sa.cert}",
                f"--service-account-signing-key-file={sa.key}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--authorization-mode=RBAC",
                "--disable-admission-plugins=ServiceAccount",
                "--service-cluster-ip-range=10.96.0.0/24",
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
            ],
            # Go's collector took a fifth of the API server's CPU in a burst of Jobs (its own profile): it
            # runs half as often, for a larger heap (2,000 Jobs at once: 2.9 GB at the peak, 1.5 GB
            # before). Any kube-apiserver takes GOGC (Go's runtime reads it).
            env={**os.environ, "GOGC": "200"},
        )
        # Checked once, here: every client of this control plane uses this file.
        write_kubeconfig(self.kubeconfig, self.server, ca.cert_path, admin, ADMIN)
        loopback_kubeconfig(self.kubeconfig)
        context = self._admin_tls()
        wait_until(
            lambda: answers_200(f"{self.server}/readyz", context),
            timeout,
            "kube-apiserver /readyz",
            [etcd, apiserver],
        )

        self._run(
            "kube-controller-manager",
            [
                self.bin / "kube-controller-manager",
                f"--kubeconfig={self.kubeconfig}",
                f"--controllers={CONTROLLERS}",
                "--leader-elect=false",
                f"--service-account-private-key-file={sa.key}",
                f"--root-ca-file={ca.cert_path}",
                "--use-service-account-credentials=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--cert-dir={self.pki / 'kcm'}",
                "--concurrent-job-syncs=10",
                # Its client's default rate (20 requests/s, bursts of 30) caps Jobs at about 4 a second
                # (each costs the job controller some 5 writes): a real cluster's nodes run more.
                "--kube-api-qps=200",
                "--kube-api-burst=400",
            ],
        )
        self._run(
            "podsim",
            [
                sys.executable,
                "-m",
                "devcluster.podsim",
                "--kubeconfig",
                self.kubeconfig,
            ],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        insecure = ssl._create_unverified_context()  # the controller-manager's self-signed health port
        wait_until(
            lambda: answers_200(f"https://127.0.0.1:{kcm_port}/healthz", insecure),
            timeout,
            "kube-controller-manager /healthz",
            self.processes,
        )
        wait_until(self._node_ready, timeout, "the simulated node to be Ready", self.processes)

    def _run(self, name: str, argv: list, env: dict[str, str] | None = None) -> Process:
        process = Process(name, argv, self.logs, env=env)
        self.processes.append(process)
        return process

    def install_crds(self, force: bool = False) -> None:
        """mdops's CRDs (every kind of :mod:`runbooks.crd`) from their generated manifests, as manifests/
        and the chart install them; once the API server serves them. ``force`` takes over the fields that
        another manager (a Helm release) owns."""
        for kind in crd.KINDS:
            forced = ["--force-conflicts"] if force else []
            self.kubectl("apply", "--server-side", *forced, "-f", str(REPO / "manifests" / kind.file))
        names = [f"crd/{kind.plural}.{keys.GROUP}" for kind in crd.KINDS]
        self.kubectl("wait", "--for=condition=Established", *names, "--timeout=60s")

    def install_runner(self, namespace: str) -> None:
        """What a Job executor's pods need in ``namespace``: their ServiceAccount, mdops-runner, and its
        right to claim a run's start (manifests/runner.yaml); and the policy that keeps it to that
        (manifests/identities.yaml, cluster-wide)."""
        self.kubectl("apply", "-f", str(REPO / "manifests" / "identities.yaml"))
        self.kubectl("apply", "-n", namespace, "-f", str(REPO / "manifests" / "runner.yaml"))

    def install_peering(self, namespace: str) -> None:
        """kopf's peering for the controllers in ``namespace``: the KopfPeering CRD (cluster-wide) and its
        object, ``mdops`` (manifests/components/peering), as the chart's peering.enabled installs them."""
        peering = REPO / "manifests" / "components" / "peering"
        self.kubectl("apply", "-f", str(peering / "kopfpeering-crd.yaml"))
        self.kubectl("wait", "--for=condition=Established", "crd/kopfpeerings.kopf.dev", "--timeout=30s")
        self.kubectl("apply", "-n", namespace, "-f", str(peering / "kopfpeering.yaml"))

    def _node_ready(self) -> bool:
        result = self.kubectl(
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}",
            check=False,
        )
        return result.returncode == 0 and "True" in result.stdout

    def stop(self) -> None:
        """Stop every process, newest first (no orphans)."""
        if self.supervisor is not None:
            self.supervisor.stop()  # it stops them: it started some
        while self.processes:
            self.processes.pop().stop()

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- clients ---------------------------------------------------------
    def user_kubeconfig(self, user: str, group: str | None = None) -> Path:
        """A kubeconfig that logs in as ``user`` (in ``group``) with a client certificate of this control
        plane's CA: a real user, whom RBAC knows by name and nothing else."""
        folder = self.workdir / "users"
        folder.mkdir(exist_ok=True)
        pair = self.ca.issue(user, user, organization=group)
        return write_kubeconfig(folder / f"{user}.kubeconfig", self.server, self.ca.cert_path, pair, user)

    def service_account_token(
        self, namespace: str, service_account: str, duration: str = "1h", pod: tuple[str, str] | None = None
    ) -> str:
        """A token of the ServiceAccount from the TokenRequest API (``kubectl create token``), as a kubelet
        gets one for a pod's token volume; with ``pod`` (its name and uid), bound to that pod, as a
        kubelet's is (the API server then names the pod in the requests the token makes)."""
        bound = []
        if pod is not None:
            bound = [
                "--bound-object-kind=Pod",
                f"--bound-object-name={pod[0]}",
                f"--bound-object-uid={pod[1]}",
            ]
        return self.kubectl(
            "create", "token", service_account, "-n", namespace, f"--duration={duration}", *bound
        ).stdout.strip()

    def service_account_kubeconfig(
        self,
        namespace: str,
        service_account: str,
        path: Path,
        duration: str = "1h",
        pod: tuple[str, str] | None = None,
    ) -> Path:
        """A kubeconfig at ``path`` that logs in as the ServiceAccount with a token from the TokenRequest
        API (bound to ``pod``, if named), for this (loopback) API server only: for a process that must run
        with its own credentials, not the admin's."""
        token = self.service_account_token(namespace, service_account, duration, pod)
        user = f"system:serviceaccount:{namespace}:{service_account}"
        return write_kubeconfig(path, self.server, self.ca.cert_path, token, user)

    def request_counts(self) -> Counter[str]:
        """The kube-apiserver's own count of the requests it has answered (``apiserver_request_total``),
        by "VERB resource[/subresource]", with " <code>" after it for those that failed ("DELETE leases
        404"): what clients did, witnessed outside them."""
        text = self.kubectl("get", "--raw", "/metrics").stdout
        lines = [line for line in text.splitlines() if line.startswith("apiserver_request_total{")]
        counts: Counter[str] = Counter()
        for family in text_string_to_metric_families("\n".join(lines) + "\n"):
            for sample in family.samples:
                labels = sample.labels
                if labels.get("resource"):
                    sub = f"/{labels['subresource']}" if labels.get("subresource") else ""
                    failed = "" if labels["code"].startswith("2") else f" {labels['code']}"
                    counts[f"{labels['verb']} {labels['resource']}{sub}{failed}"] += int(sample.value)
        return counts

    def cpu_profile(self, seconds: int) -> bytes:
        """The kube-apiserver's own CPU profile over the next ``seconds`` (``/debug/pprof/profile``, read
        with the admin's certificate), in Go's pprof format: ``go tool pprof -top <kube-apiserver> FILE``."""
        url = f"{self.server}/debug/pprof/profile?seconds={seconds}"
        with urllib.request.urlopen(url, context=self._admin_tls(), timeout=seconds + 60) as response:
            return response.read()

    def _admin_tls(self) -> ssl.SSLContext:
        """TLS to the kube-apiserver as the admin (its client certificate), trusting this control plane's CA
        only."""
        context = ssl.create_default_context(cafile=self.ca.cert_path)
        context.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
        return context

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess:
        """Run the project's kubectl against this control plane only: its loopback kubeconfig, or another
        user's (checked to name loopback API servers only)."""
        login = self.kubeconfig if kubeconfig is None else loopback_kubeconfig(kubeconfig)
        result = subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={login}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(self.workdir)},
        )
        if check and result.returncode:
            raise KubectlError(result.returncode, result.args, result.stdout, result.stderr)
        return result
