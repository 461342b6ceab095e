"""Fixtures shared by every test: one real control plane per session, one namespace per test, the local
stack per module that asks for it; and the test tiers, marked by folder (``make test-fast`` runs the unit
tier, ``make test`` everything, in parallel workers, each with its own control plane)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import re
import shutil
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from kubernetes import client

from devcluster.components import SESSIONS, ControllerProcess
from devcluster.controlplane import REPO, ControlPlane
from devcluster.processes import wait_until
from devcluster.stack import Stack
from runbooks import crd
from runbooks.calendar import VenueCalendar, build_table
from runbooks.kube import api_client as new_api_client
from runbooks.settings import CommonSettings

TESTS = Path(__file__).parent
# The tier of each folder. Every test that uses the control plane (the ``cluster`` fixture, directly or
# through another fixture) is also marked ``cluster``, so ``-m "not cluster"`` never starts one. The
# folders run in this order, the longest first, so that make test's workers (one file at a time, below)
# end together, the unit tier's many short files filling the end.
TIERS = {
    "image": "image",  # the image built and run with podman
    "api": "cluster",  # the REST API with the real controller, Prometheus and simulator
    "cluster": "cluster",  # the controller on the real control plane
    "e2e": "e2e",  # the local stack, as `make up` runs it
    "browser": "e2e",  # the Ops Console in Debian's chromium, on the local stack
    "cli": "e2e",  # the installed mdops command against the local stack
    "packaging": "packaging",  # the chart, the manifests and the Dockerfile
    "unit": "unit",  # pure functions and local processes (runner, simulator): no control plane
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(item.fspath).relative_to(TESTS).parts[0]
        if folder not in TIERS:
            raise pytest.UsageError(
                f"{item.nodeid}: tests/{folder}/ has no tier: add it to TIERS in {__file__}"
            )
        item.add_marker(TIERS[folder])
        if "cluster" in getattr(item, "fixturenames", ()):
            if TIERS[folder] == "unit":
                raise pytest.UsageError(f"{item.nodeid}: a unit test must not need the control plane")
            item.add_marker("cluster")
    folders = list(TIERS)
    items.sort(key=lambda item: folders.index(Path(item.fspath).relative_to(TESTS).parts[0]))


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """With ``-n N`` (make test), each of N workers with its own control plane: a file's tests go to one
    worker, so that its module fixtures (a stack, a controller) start once, and tests/image/ to one, so that
    the image is built once."""
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # in the order of the collection (not by their numbers of tests)

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            image = (config.invocation_params.dir / path).resolve().is_relative_to(TESTS / "image")
            return "the image" if image else path

    return ByFile(config, log)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> ControlPlane:
    """etcd, kube-apiserver, kube-controller-manager and podsim, started once per test session."""
    with ControlPlane(tmp_path_factory.mktemp("cluster")) as control_plane:
        yield control_plane


def scripted(files: Path, **api_env: str) -> dict:
    """A module's :func:`stack_options` for a stack that runs the scripts of ``files/scripts``, with that
    folder as their ``$FILES`` (where they write their witness files), and these settings of its API."""
    return {"scripts": files / "scripts", "script_env": {"FILES": str(files)}, "api_env": api_env}


@pytest.fixture(scope="module")
def stack_options() -> dict:
    """More arguments of the module's :class:`Stack` (its scripts, the supervisor's backoff): a module
    overrides this fixture to change them."""
    return {}


@pytest.fixture(scope="session")
def kept_calendar(tmp_path_factory) -> Callable[[Path], Path]:
    """``kept_calendar(path)`` writes at ``path`` the default venue's session table, as a process keeps it
    (``MDOPS_CALENDAR_CACHE``): what a restarted controller or API finds there. The table is built once per
    test session, by the library in a child process as every process builds it, then copied; building it
    in each controller and API the tests start took a quarter of make test's CPU. Tests of the building
    itself give their processes a cache of their own."""
    table = tmp_path_factory.mktemp("calendar") / SESSIONS
    VenueCalendar(CommonSettings.model_fields["venue"].default, cache=table).at(
        datetime.datetime.now(datetime.UTC)
    )

    def keep(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(table, path)
        return path

    return keep


@pytest.fixture(scope="module")
def stack(tmp_path_factory, cluster, stack_options, kept_calendar) -> Stack:
    """The local stack as ``make up`` starts it (its own control plane, the simulator, the controller,
    Prometheus and the API, under its supervisor), a fresh one for each module of tests/e2e, tests/cli and
    tests/browser; the binaries are the session's. A shorter failover: the simulator's switches take 0.4 s
    instead of 1.5 s."""
    workdir = tmp_path_factory.mktemp("stack")
    kept_calendar(workdir / SESSIONS)
    with Stack(
        workdir,
        cluster.bin,
        fixed_ports=False,
        sim_args=("--failover-ms", "400"),
        **stack_options,
    ) as started:
        yield started


@pytest.fixture(scope="session")
def api_client(cluster) -> client.ApiClient:
    api = new_api_client(cluster.kubeconfig)
    yield api
    api.close()


@pytest.fixture
def namespace(api_client, request) -> str:
    """A fresh namespace for one test, deleted (without waiting) afterwards. Made with the session's
    client: a kubectl process for each would cost more CPU than most tests."""
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{slug}-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    with contextlib.suppress(client.ApiException):
        core.delete_namespace(name)


@pytest.fixture(scope="session")
def mdops_crds(cluster) -> ControlPlane:
    """The CRDs of mdops (Runbook, RunbookPolicy, RunbookApproval, RunbookSchedule), installed from their
    generated manifests, as manifests/ and the chart install them."""
    cluster.install_crds(force=True)  # forced: the packaging tests' Helm release may have owned them last
    return cluster


@pytest.fixture(scope="session")
def identities(mdops_crds) -> ControlPlane:
    """The identity policies (manifests/identities.yaml), as manifests/ installs them: for every namespace.
    The admin, who runs the other tests' controllers and APIs, may name anyone, as a cluster admin may do
    anything; so they change nothing for tests that do not ask for them."""
    mdops_crds.kubectl("apply", "-f", str(REPO / "manifests" / "identities.yaml"))
    # The API server loads a policy applied a moment ago within a second or so: until it refuses what the
    # newest rule refuses (an approval by the requester under another case), the policies are not in effect.
    probe = crd.APPROVAL.manifest(
        "probe", {"requestId": "probe", "decision": "Approve", "approver": "Probe", "requester": "probe"}
    )

    def refused() -> bool:
        create = ("create", "-n", "default", "--dry-run=server", "-f", "-")
        made = mdops_crds.kubectl(*create, input=json.dumps(probe), check=False)
        return made.returncode != 0 and "nobody approves their own request" in made.stderr

    wait_until(refused, 30, "the identity policies to take effect")
    return mdops_crds


@pytest.fixture
def peering(cluster, namespace) -> dict[str, str]:
    """kopf peering in this test's namespace (the KopfPeering CRD and object of manifests/components/peering);
    the controller settings that use it, with a short lifetime (4 s) for quick take-overs."""
    cluster.install_peering(namespace)
    return {"MDOPS_PEERING": "mdops", "MDOPS_PEERING_LIFETIME": "4"}


@pytest.fixture
def unloadable_calendar(tmp_path) -> dict[str, str]:
    """A controller's environment in which its venue's calendar cannot be loaded: the child process that
    builds it (``python -m runbooks.calendar``) finds an exchange_calendars that fails to import, as a
    broken install would. The venue is one no kept table holds (XSHG). (A venue the library does not know
    is refused as the process starts.)"""
    library = tmp_path / "broken-library" / "exchange_calendars"
    library.mkdir(parents=True)
    (library / "__init__.py").write_text('raise ImportError("exchange_calendars is broken here")\n')
    return {"PYTHONPATH": str(library.parent), "MDOPS_VENUE": "XSHG"}


@pytest.fixture(scope="session")
def stopping_controllers():
    """Controllers that tests are done with, stopping in the background (SIGTERM, then kopf's shutdown,
    about two seconds) while the next tests run; the session waits for them at its end."""
    threads: list[threading.Thread] = []
    yield threads
    for thread in threads:
        thread.join()


@pytest.fixture
def start_controller(mdops_crds, namespace, tmp_path, stopping_controllers, kept_calendar):
    """Start controllers for this test's namespace; each is stopped (SIGTERM) after the test, in the
    background (its namespace is never reused)."""
    started: list[ControllerProcess] = []

    def start(name: str = "controller", **env: str) -> ControllerProcess:
        workdir = tmp_path / name
        workdir.mkdir(exist_ok=True)
        if not (workdir / SESSIONS).exists():  # a controller started again keeps what it kept
            kept_calendar(workdir / SESSIONS)
        if env.get("MDOPS_EXECUTOR") == "job" and not started:  # its pods claim their runs' starts
            mdops_crds.install_runner(namespace)
        controller = ControllerProcess(mdops_crds.kubeconfig, namespace, workdir, env)
        started.append(controller)
        return controller

    yield start
    for controller in started:
        stopping = threading.Thread(target=controller.stop, name=f"stop controller of {namespace}")
        stopping.start()
        stopping_controllers.append(stopping)


def keep_an_ended_calendar(cache: Path, venue: str = "XSHG") -> datetime.date:
    """Write, as the session table a process keeps (``MDOPS_CALENDAR_CACHE``), the venue's real sessions up
    to yesterday, marked as the end of what the library knows of it (as XSHG's will be in 2027 with
    exchange_calendars 4.13.2). The last day it knows."""
    yesterday = datetime.datetime.now(datetime.UTC).date() - datetime.timedelta(days=1)
    known = build_table(venue, yesterday - datetime.timedelta(days=60), yesterday)
    sessions = tuple(session for session in known.sessions if session.day <= yesterday)
    cache.write_text(dataclasses.replace(known, last=yesterday, bounded=True, sessions=sessions).to_json())
    return yesterday
