"""Fixtures for the packaging tests: the chart rendered by a pinned Helm, the kustomize output, CRDs
installed for real, and credentials of the controller's own ServiceAccount (``sa_kubeconfig``)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from pkgtools import (
    BUILD_HELM,
    HELM_VERSION,
    MANIFESTS,
    PROMETHEUSRULE_CRD,
    SERVICEMONITOR_CRD,
    Docs,
    Helm,
    load_all,
)

from devcluster.components import install_rbac
from devcluster.controlplane import ControlPlane, binaries
from runbooks.kube import loopback_kubeconfig


@pytest.fixture(scope="session")
def helm(tmp_path_factory) -> Helm:
    """helm, built from the pinned wrapper module tools/helm/ (cached in ~/.cache/mdops/helm)."""
    out = subprocess.run([BUILD_HELM], check=True, stdout=subprocess.PIPE, text=True).stdout
    binary = Path(out.strip().splitlines()[-1]) / "helm"
    tool = Helm(binary, tmp_path_factory.mktemp("helm-home"))
    version = tool.run("version", "--template", "{{.Version}}").stdout.strip()
    assert version == HELM_VERSION, f"{binary} is helm {version}, not the pinned {HELM_VERSION}"
    return tool


@pytest.fixture(scope="session")
def kubectl_bin() -> Path:
    """The project's kubectl (kustomize is built in); needs no running control plane."""
    return binaries() / "kubectl"


@pytest.fixture(scope="session")
def kustomize_dir(kubectl_bin) -> Callable[[Path], Docs]:
    """``kubectl kustomize`` of any folder."""

    def build(path: Path) -> Docs:
        result = subprocess.run(
            [str(kubectl_bin), "kustomize", str(path)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return load_all(result.stdout)

    return build


@pytest.fixture(scope="session")
def kustomize(kustomize_dir, tmp_path_factory) -> Callable[..., Docs]:
    """``kustomize(namespace=None, components=(), resources=())``: the output of ``kubectl kustomize
    manifests``, or of an overlay of it that adds components and other kustomizations' folders (resources)
    and moves everything to another namespace."""
    overlays = tmp_path_factory.mktemp("overlays")

    def build(
        namespace: str | None = None, components: tuple[Path, ...] = (), resources: tuple[Path, ...] = ()
    ) -> Docs:
        target = MANIFESTS
        if namespace or components or resources:
            target = overlays / f"{namespace or 'mdops'}-{len(list(overlays.iterdir()))}"
            target.mkdir()
            overlay = {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [os.path.relpath(r, target) for r in (MANIFESTS, *resources)],
                "components": [os.path.relpath(c, target) for c in components],
            }
            if namespace:
                overlay["namespace"] = namespace
            (target / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
        return kustomize_dir(target)

    return build


@pytest.fixture(scope="session")
def crds(mdops_crds: ControlPlane) -> ControlPlane:
    """The CRDs the rendered objects need, installed for real: mdops's (as generated), kopf's KopfPeering
    and, for the ServiceMonitors and the PrometheusRules, subsets of prometheus-operator's (see their
    files)."""
    cluster = mdops_crds
    cluster.kubectl(
        "apply", "--server-side", "-f", str(MANIFESTS / "components/peering/kopfpeering-crd.yaml")
    )
    for operators in (SERVICEMONITOR_CRD, PROMETHEUSRULE_CRD):
        cluster.kubectl("apply", "--server-side", "-f", str(operators))
    names = [
        "kopfpeerings.kopf.dev",
        "servicemonitors.monitoring.coreos.com",
        "prometheusrules.monitoring.coreos.com",
    ]
    cluster.kubectl("wait", "--for=condition=Established", *(f"crd/{n}" for n in names), "--timeout=30s")
    return cluster


@pytest.fixture
def controller_rbac(crds, namespace, tmp_path) -> str:
    """The controller's ServiceAccount and RBAC (from manifests/) in this test's namespace; its name."""
    return install_rbac(crds, namespace, tmp_path)


@pytest.fixture
def sa_kubeconfig(cluster: ControlPlane, tmp_path) -> Callable[..., Path]:
    """``sa_kubeconfig(namespace, service_account="mdops")``: a kubeconfig that authenticates as the
    ServiceAccount (see ControlPlane.service_account_kubeconfig), e.g. for ``MDOPS_KUBECONFIG`` of a
    controller that must run with its own credentials, not the admin's."""

    def write(namespace: str, service_account: str = "mdops") -> Path:
        path = tmp_path / f"kubeconfig-{namespace}-{service_account}"
        return loopback_kubeconfig(cluster.service_account_kubeconfig(namespace, service_account, path))

    return write
