"""How a run executes: as a local process or as a Kubernetes Job. Both run the runner (``runner/``).

An executor's ``start`` is idempotent: a run it already started (before a controller restart) is
adopted, never started twice. ``wait`` returns the runner's result JSON, calling ``on_logs`` whenever
the run's log lines change (``logs`` gives them). ``release`` is called once the result is recorded:
whatever keeps it (a finished Job, a local run's folder) may then go, after its TTL. How many runs go on
at once is the dispatcher's business (``MDOPS_MAX_PARALLEL``), not the executors'.

The runner gets the request as data (``$MDOPS_REQUEST``, JSON), never as arguments: its arguments are
fixed tokens the controller controls, so a reason such as ``--dry-run`` or ``$(id)`` reaches the script
exactly as written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from runbooks.contract import ExitCode, Reason, now
from runner.request import EXTRA_ENV, KEYS, PASS_ENV, REQUEST_ENV, dumps_for_env

# Not imported at run time: the launcher, which imports this package, keeps to the standard library and
# the runner.
if TYPE_CHECKING:
    from controller.settings import ControllerSettings

LogCallback = Callable[[], None]


@dataclass(frozen=True)
class RunRequest:
    namespace: str
    name: str
    uid: str
    request_id: str
    command: str
    window: str
    spec: dict[str, Any]  # the Runbook's spec, camelCase, defaults applied by the API server
    claim_uid: str = ""  # the uid of its request id's claim, the ledger's Lease (none: not claimed)

    def runner_request(self) -> dict[str, Any]:
        """The request the runner runs (``runner.request``): the spec's fields, with the request id in
        effect and the window resolved."""
        fields = {key: self.spec[key] for key in KEYS if key in self.spec}
        return fields | {"command": self.command, "requestId": self.request_id, "window": self.window}

    def runner_args(self, settings: ControllerSettings) -> list[str]:
        """The runner's options: the health gate's thresholds (numbers from the settings), nothing else."""
        return [
            "--min-coverage", str(settings.gate_min_coverage),
            "--max-backlog", str(settings.gate_max_backlog),
            "--max-failover-latency-ms", str(settings.gate_max_failover_latency_ms),
        ]  # fmt: skip

    def runner_env(self, settings: ControllerSettings) -> dict[str, str]:
        """The runner's environment variables for this run: the request, and what its script gets besides
        the contract (``MDOPS_SCRIPT_ENV``, ``MDOPS_SCRIPT_PASS_ENV``), each as JSON safe from a kubelet's
        ``$(NAME)`` expansion."""
        env = {REQUEST_ENV: dumps_for_env(self.runner_request())}
        if settings.script_env:
            env[EXTRA_ENV] = dumps_for_env(settings.script_env)
        if settings.script_pass_env:
            env[PASS_ENV] = dumps_for_env(settings.script_pass_env)
        return env


def failure(code: int, message: str) -> dict[str, Any]:
    """A result for a run that produced none of its own (could not start, lost, timed out)."""
    stamp = now()
    line = {"time": stamp, "level": "ERROR", "message": message}
    return {"exitCode": code, "result": "failed", "message": message, "finishedAt": stamp, "logs": [line]}


def lost(what: str) -> dict[str, Any]:
    """The result of a run whose Job or folder vanished (``what``: which, and how): it may have run, so
    it is never started again; its status says ``Lost`` (exit code 125: no result of its own)."""
    return {**failure(ExitCode.NOT_EXECUTED, f"lost: {what}; not started again"), "reason": Reason.LOST}


class RunbookGone(Exception):
    """The Runbook went (deleted by force) before its run started, and what was prepared for the run went
    with it: nothing of the run was started, and nothing is started for a Runbook that is gone. Or
    (``stopped``) it is still there, deleted or cancelled, and what was prepared went: nothing is started
    for it either."""

    def __init__(self, runbook: str, *, stopped: bool = False):
        super().__init__(runbook)
        self.stopped = stopped


class Run(Protocol):
    name: str

    async def wait(self, on_logs: LogCallback) -> dict[str, Any]: ...

    def logs(self) -> list[dict[str, Any]]: ...

    async def cancel(self) -> None: ...

    async def release(self) -> None: ...


class Executor(Protocol):
    kind: str

    async def start(self, request: RunRequest) -> Run | dict[str, Any]:
        """Start the run prepared (:meth:`prepare`), or adopt it, if it was started before; or the result
        of a run that cannot be adopted and is provably never started. :class:`RunbookGone` if what was
        prepared went with its Runbook."""
        ...

    async def adopt(self, request: RunRequest) -> Run | dict[str, Any]:
        """The run of a request that started before (its status says so), or, if what it ran in is
        gone, its :func:`lost` result: a started run is never started again."""
        ...

    async def prepare(self, request: RunRequest) -> None:
        """Make what the run will run in, before its claim's mark that it has not started comes off, so
        that a controller killed between that and the start leaves the proof that nothing ran (a local
        run's folder without a runner, a suspended Job). Idempotent; what it made goes with the run's
        :meth:`Run.release`, also if the run never starts."""
        ...

    async def resume(self, request: RunRequest) -> Run | dict[str, Any]:
        """The run of a request that a controller may have started, dying before its status said so (its
        claim no longer says it has not started): adopted if found, started only if the executor can prove
        that it never was, else its :func:`lost` result."""
        ...

    async def find(self, request: RunRequest) -> Run | None:
        """The run of a request whose status does not say it started, if one was (a controller may
        have died between starting it and writing its status); None if provably none was."""
        ...

    def handle(self, request: RunRequest) -> Run:
        """The run of a request that started before, without starting anything."""
        ...

    async def may_run(self, namespace: str, name: str, uid: str) -> bool:
        """Whether a process of the run of the Runbook ``name`` (``uid``), which is gone, may still run:
        deleted by force while no controller ran, nobody stopped its run. Its target's lock, which it
        holds, goes to the next run only once none may."""
        ...
