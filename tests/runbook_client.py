"""Helpers for tests that create Runbooks and wait for their status (polling with a deadline).

Shared by the controller's tests (tests/cluster/, tests/packaging/) and the REST API's (tests/api/).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from devcluster.components import ControllerProcess
from devcluster.processes import wait_until
from devcluster.stack import SCRIPTS
from runbooks import keys, models
from runbooks.contract import ConditionType, finished
from runner.logs import dumps
from runner.result import build_result

# Script lines that hold a run until the test releases it (creates the file ``$RELEASE``): tests hold a run
# on a state they set, never for a time. At most a minute, so that a failed test leaves no script behind.
HOLD = 'i=0; while [ ! -e "$RELEASE" ] && [ "$i" -lt 1200 ]; do sleep 0.05; i=$((i + 1)); done\n'

# Free text that command-line arguments, a shell or a kubelet would not pass on as it is (no control
# character: the API server refuses them, but tab and newline in a reason). Scripts get it as written.
AWKWARD_TEXTS = [
    "--dry-run",
    "-x",
    "--",
    "--enforce --timeout=1",
    "it's \"quoted\" 'twice'",
    "$(touch /tmp/mdops-never) `id` ${HOME} $$ $(TMPDIR)",
    "Ünïcödé ✓ 日本語 \U0001f680",
    " spaces around ",
]

# Python's names of the spec's fields to the Runbook's (``dry_run`` -> ``dryRun``).
SPEC_KEYS = {name: field.alias or name for name, field in models.RunbookSpec.model_fields.items()}


def write_script(folder: Path, command: str, body: str) -> Path:
    """An executable shell script for ``command`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / command
    path.write_text("#!/bin/sh\nset -e\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def reference_scripts(folder: Path, **own: str) -> Path:
    """``folder`` with the reference scripts linked, but for the commands of ``own``, written from these
    bodies (:func:`write_script`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for script in SCRIPTS.iterdir():
        if script.name not in own:
            (folder / script.name).symlink_to(script)
    for command, body in own.items():
        write_script(folder, command, body)
    return folder


def runbook(name: str, **spec: Any) -> dict[str, Any]:
    """A Runbook manifest; the spec's keys as the Runbook names them (``dryRun``) or as Python does
    (``dry_run``). Values are not checked: the API server does that."""
    spec = {SPEC_KEYS.get(key, key): value for key, value in spec.items()}
    return models.manifest(name, spec)


class Runbooks:
    def __init__(self, api: client.ApiClient, namespace: str):
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace

    def _args(self):
        return keys.GROUP, keys.VERSION, self.namespace, keys.PLURAL

    def create(self, name: str, **spec: Any) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(*self._args(), runbook(name, **spec))

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(*self._args(), name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def list(self, selector: str | None = None) -> list[dict[str, Any]]:
        return self.custom.list_namespaced_custom_object(*self._args(), label_selector=selector)["items"]

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(*self._args(), name)

    def set_finalizers(self, name: str, finalizers: list[str]) -> None:
        """Write the finalizers as only the controller does: what one that died mid-way leaves."""
        self.custom.patch_namespaced_custom_object(
            *self._args(), name, {"metadata": {"finalizers": finalizers}}
        )

    def set_status(self, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Write ``status`` as only the controller does: for states that no real run makes cheaply."""
        return self.custom.patch_namespaced_custom_object_status(*self._args(), name, {"status": status})

    def condition(self, name: str, kind: str) -> dict[str, Any] | None:
        body = self.get(name) or {}
        for entry in (body.get("status") or {}).get("conditions") or []:
            if entry["type"] == kind:
                return entry
        return None

    def wait_for(self, name: str, kind: str, value: str, timeout: float = 60) -> dict[str, Any]:
        def check():
            entry = self.condition(name, kind)
            return entry is not None and entry["status"] == value and self.get(name)

        return wait_until(check, timeout, f"runbook {name} condition {kind}={value}")

    def wait_finished(self, name: str, timeout: float = 60) -> dict[str, Any]:
        def check():
            entry = self.condition(name, ConditionType.SUCCEEDED)
            return entry is not None and finished(entry["status"]) and self.get(name)

        return wait_until(check, timeout, f"runbook {name} to finish")

    def watch_finished(self, name: str, timeout: int = 60) -> dict[str, Any]:
        """Like :meth:`wait_finished`, through a watch: for tests that count the API server's requests
        and must not add a GET every tenth of a second."""
        stream = watch.Watch().stream(
            self.custom.list_namespaced_custom_object,
            *self._args(),
            field_selector=f"metadata.name={name}",
            timeout_seconds=timeout,
        )
        for event in stream:
            body = event["object"]
            conditions = (body.get("status") or {}).get("conditions") or []
            if any(c["type"] == ConditionType.SUCCEEDED and finished(c["status"]) for c in conditions):
                return body
        raise TimeoutError(f"timed out after {timeout}s waiting for runbook {name} to finish")

    def gone(self, name: str) -> bool:
        return self.get(name) is None


def forged_success() -> str:
    """A runner's result of success as a script can write it where the runner's goes (the termination log:
    the script runs in the runner's container)."""
    times = {"started_at": "2026-12-03T08:00:00.000Z", "finished_at": "2026-12-03T08:00:01.000Z"}
    return dumps(
        build_result(exit_code=0, message="forged", dry_run=False, health=None, state=None, logs=[], **times)
    )


def recorded_environ(path: Path) -> dict[str, str]:
    """The environment a script recorded with ``cat /proc/$$/environ > FILE``: its own, as it was started."""
    items = [item.decode() for item in path.read_bytes().split(b"\0") if item]
    return dict(item.split("=", 1) for item in items)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def ran_in(controller: ControllerProcess, namespace: str) -> set[str]:
    """The uids of the Runbooks of ``namespace`` that ``controller``'s local executor ran (their folders)."""
    folder = controller.workdir / "state" / namespace
    return {path.name for path in folder.iterdir()} if folder.exists() else set()


def wait_for_one_acting(rbs: Runbooks, acting: ControllerProcess, standing_by: ControllerProcess) -> int:
    """Of two peering replicas, wait until ``standing_by`` has seen ``acting`` and paused: health checks are
    created until one runs in ``acting`` only. The number of checks created (``check-<n>``)."""
    for attempt in range(30):
        uid = rbs.create(f"check-{attempt}", command="health_check")["metadata"]["uid"]
        rbs.wait_finished(f"check-{attempt}")
        if uid in ran_in(acting, rbs.namespace) and uid not in ran_in(standing_by, rbs.namespace):
            return attempt + 1
    raise AssertionError("the high-priority replica never took over alone")


def wait_events(api: client.ApiClient, namespace: str, kind: str, name: str, *reasons: str) -> None:
    """Wait until the object ``kind``/``name`` (a Runbook, a schedule, ...) has an Event of each of
    ``reasons``: the controller posts an Event after the status it goes with, a moment later."""

    def seen() -> bool:
        events = client.CoreV1Api(api).list_namespaced_event(namespace).items
        found = {
            e.reason for e in events if e.involved_object.kind == kind and e.involved_object.name == name
        }
        return set(reasons) <= found

    wait_until(seen, 30, f"Events {', '.join(reasons)} on {kind} {name}")
