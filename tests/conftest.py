"""Fixtures shared by every test: one real control plane per session, one namespace per test."""

from __future__ import annotations

import re
import uuid

import pytest
from kubernetes import client

from devcluster.controlplane import ControlPlane
from runbooks.kube import api_client as new_api_client


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager and podsim, started once per test session."""
    with ControlPlane(tmp_path_factory.mktemp("cluster")) as control_plane:
        yield control_plane


@pytest.fixture(scope="session")
def api_client(cluster) -> client.ApiClient:
    api = new_api_client(cluster.kubeconfig)
    yield api
    api.close()


@pytest.fixture
def namespace(cluster, request) -> str:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{slug}-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
