"""The soak's requests through the REST API (``python -m bench.soak --via-api``): the API process, the careful
client, and what its answers must agree with.

The API is ``python -m api`` as ``make up`` starts it (the control plane's kubeconfig, the namespace, the
admin token and a tokens file naming the soak's token), on one port for all its lives, with no rate and no
cap per token (the soak asks for 200 runs in a minute; what is tested is the answers, not the quota). The
soak's killer SIGKILLs or freezes it beside the controller's.

The client (:class:`Client`) is a careful one: each request in a thread of its own, asked again with the same
``request_id`` on any lost answer (connection refused or cut, no whole answer), 5xx or timeout, and on a 202
(the run still going after the API's wait), until it gets a final answer: a 200 (the run's end), a 4xx (a
refusal), or the spec's 500 of a script that could not be executed (``detail`` ``script execution error``:
asked again, it says the same). :func:`answer_problems` then holds each final answer against the scripts' own
witness.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devcluster.private import write_private
from devcluster.processes import Process, answers_200, free_port

TOKEN = "soak-token-" + "0123456789abcdef"  # the soak's own: status:read and runbooks:execute
ADMIN_TOKEN = "soak-admin-" + "fedcba9876543210"
EXECUTE_WAIT_SECONDS = 30.0  # MDOPS_API_EXECUTE_WAIT_SECONDS as make up leaves it (its default)
ATTEMPT_SECONDS = EXECUTE_WAIT_SECONDS + 15  # the client's timeout of one request: the API's wait and more
RETRY_SECONDS = 0.5  # between a lost answer (or a 5xx, a timeout) and the next ask
NOT_EXECUTED = "script execution error"  # the spec's final 500 (exit code 125) begins so
CANCEL_UNSEEN_SECONDS = 30  # how long a cancel's 404 is asked again: its run's execute not through yet


@dataclass
class Answer:
    """What the client got for one request: its final answer and every attempt."""

    request_id: str
    again: bool  # asked again once its Runbook was deleted (the planned recreation), not the first ask
    code: int | None = None  # the final answer's status code; None: none before the deadline
    status: str | None = None  # a 200's runbook.status
    exit_code: int | None = None  # a 200's runbook.exit_code
    detail: str = ""  # an error's detail
    attempts: Counter[str] = field(default_factory=Counter)  # by status code, "lost" or "timeout"
    wait_s: float = 0.0  # from the first ask to the final answer


class ApiServer:
    """The REST API's settings for the soak, and its starts (each a new ``python -m api`` on one port)."""

    def __init__(self, kubeconfig: Path, namespace: str, work: Path):
        self.work = work
        self.port = free_port()
        tokens = write_private(work / "tokens.yaml", yaml.safe_dump({"tokens": [
            {"name": "soak", "token": TOKEN, "permissions": ["status:read", "runbooks:execute"]},
        ]}))  # fmt: skip
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "MDOPS_KUBECONFIG": str(kubeconfig),
            "MDOPS_NAMESPACE": namespace,
            "OPS_API_TOKEN": ADMIN_TOKEN,
            "MDOPS_API_TOKENS_FILE": str(tokens),
            "MDOPS_API_PORT": str(self.port),
            "MDOPS_CALENDAR_CACHE": str(work / "sessions.json"),
            "MDOPS_API_EXECUTE_RATE": "",
            "MDOPS_API_MAX_UNFINISHED_PER_TOKEN": "0",
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, generation: int) -> ApiProcess:
        return ApiProcess(self, generation)


class ApiProcess:
    """One life of the API: ``<work>/api-<generation>.log``."""

    def __init__(self, server: ApiServer, generation: int):
        self.server, self.workdir = server, server.work
        self.process = Process(f"api-{generation}", [sys.executable, "-m", "api"], server.work, server.env)

    def ready(self) -> bool:
        return self.process.alive() and answers_200(f"{self.server.url}/readyz")

    def stop(self) -> None:
        self.process.stop()


def ask(url: str, body: dict[str, Any] | None, timeout: float) -> tuple[str, dict[str, Any]]:
    """POST ``body`` to ``url`` with the soak's token: the status code (as text), or ``lost`` (no whole
    answer: refused, cut, unreadable) or ``timeout``, and the answer's JSON."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body or {}).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return str(response.status), json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            return str(error.code), json.loads(error.read())
        except (ValueError, OSError, http.client.HTTPException):
            return "lost", {}
    except (TimeoutError, urllib.error.URLError) as error:
        timed_out = isinstance(error, TimeoutError) or isinstance(
            getattr(error, "reason", None), TimeoutError
        )
        return "timeout" if timed_out else "lost", {}
    except (ValueError, OSError, http.client.HTTPException):
        return "lost", {}


def final(code: str, body: Mapping[str, Any]) -> bool:
    """Whether a careful client stops asking on this answer (see the module's docstring)."""
    if code in ("lost", "timeout", "202"):
        return False
    if code == "500":
        return str(body.get("detail", "")).startswith(NOT_EXECUTED)
    return not code.startswith("5")


class Client:
    """Asks the API for the soak's runs, each request in its own thread, until a final answer or
    ``deadline_s`` after its first ask; :attr:`answers` holds them (one still asking has no ``code``)."""

    def __init__(self, url: str, deadline_s: float):
        self.url, self.deadline_s = url, deadline_s
        self.answers: list[Answer] = []
        self.cancels: Counter[str] = Counter()  # the cancels' attempts, by status code
        self.cancel_finals: Counter[str] = Counter()  # their final answers (409: the run had finished)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def execute(self, request_id: str, body: dict[str, Any], again: bool = False) -> None:
        answer = Answer(request_id, again)
        self.answers.append(answer)
        thread = threading.Thread(target=self._execute, args=(answer, body), daemon=True)
        self._threads.append(thread)
        thread.start()

    def _execute(self, answer: Answer, body: dict[str, Any]) -> None:
        began = time.monotonic()
        while time.monotonic() - began < self.deadline_s:
            code, got = ask(f"{self.url}/api/ops/runbooks/execute", body, ATTEMPT_SECONDS)
            answer.attempts[code] += 1
            if final(code, got):
                runbook = got.get("runbook") or {}
                answer.code, answer.status, answer.exit_code = (
                    int(code),
                    runbook.get("status"),
                    runbook.get("exit_code"),
                )
                answer.detail = str(got.get("detail", ""))
                break
            if code != "202":
                time.sleep(RETRY_SECONDS)
        answer.wait_s = time.monotonic() - began

    def cancel(self, request_id: str) -> None:
        """Cancel ``request_id``'s run through the API, in a thread, asked again as an execute is (and on a
        404 for :data:`CANCEL_UNSEEN_SECONDS`: its execute may not have made its Runbook yet)."""
        thread = threading.Thread(target=self._cancel, args=(request_id,), daemon=True)
        self._threads.append(thread)
        thread.start()

    def _cancel(self, request_id: str) -> None:
        began = time.monotonic()
        while True:
            code, got = ask(f"{self.url}/api/ops/runbooks/{request_id}/cancel", {"reason": "soak"}, 15)
            with self._lock:
                self.cancels[code] += 1
            unseen = code == "404" and time.monotonic() - began < CANCEL_UNSEEN_SECONDS
            done = code == "202" or final(code, got)  # a cancel's 202: cancelled
            if (done and not unseen) or time.monotonic() - began > self.deadline_s:
                with self._lock:
                    self.cancel_finals[code] += 1
                return
            time.sleep(RETRY_SECONDS)

    def wait(self, timeout: float) -> None:
        """Wait for every request's final answer (or its deadline), at most ``timeout`` s."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def report(self) -> dict[str, Any]:
        """What the client saw: answers by status code (every attempt), retries, the longest wait."""
        attempts: Counter[str] = Counter()
        for answer in self.answers:
            attempts.update(answer.attempts)
        return {
            "api_requests": len(self.answers),
            "api_answers": dict(sorted(attempts.items())),
            "api_final_answers": dict(sorted(Counter(str(a.code) for a in self.answers).items())),
            "api_asked_again": sum(sum(a.attempts.values()) - 1 for a in self.answers),
            "api_longest_wait_s": round(max((a.wait_s for a in self.answers), default=0.0), 1),
            "api_cancel_answers": dict(sorted(self.cancels.items())),
            "api_cancel_final_answers": dict(sorted(self.cancel_finals.items())),
        }


def script_result(code: int) -> tuple[str, int]:
    """The result and exit code a run must record for a script that exited ``code``."""
    return ("success", 0) if code == 0 else ("failed", 1)


def answer_problems(
    answers: list[Answer],
    starts: Mapping[str, int],
    ends: Mapping[str, int],
    stopped: set[str],
    deleted: set[str],
) -> list[str]:
    """Each final answer held against the witness (``starts``: a request id's script starts, ``ends``: its
    exit code): a 200 ``success`` whose script did not run once and end 0, a 200 whose result is not its
    script's end (``failed`` with exit code 1 for a script that ended non-zero; cancelled, 130, for one
    stopped before its end: its request id in ``stopped``, those cancelled or deleted), a 500 (could not be
    executed) of a script that started, a 409 but for a run deleted (those of ``deleted``: their Runbook
    deleted mid-run), any other refusal, and no final answer at all."""
    problems = []
    for answer in answers:
        rid, said = answer.request_id, f"{answer.code} {answer.status} ({answer.exit_code}) {answer.detail}"
        if answer.code is None:
            problems.append(f"{rid}: no final answer ({dict(answer.attempts)})")
        elif answer.code == 200:
            if rid in ends:
                right = script_result(ends[rid])
            elif starts.get(rid):  # started, no end: only a stop may have ended it
                right = ("failed", 130) if rid in stopped else None
            else:  # never started: not run (failed, any code but a script's), or cancelled before it started
                right = ("failed", answer.exit_code) if answer.exit_code not in (0, 1) else None
            if (answer.status, answer.exit_code) != right:
                ran = f"its script started {starts.get(rid, 0)} times, ended {ends.get(rid)}"
                problems.append(f"{rid}: answered {said}; {ran}")
        elif answer.code == 500:
            if starts.get(rid):
                problems.append(f"{rid}: answered {said}, but its script started")
        elif answer.code == 409 and rid in deleted and "was deleted" in answer.detail:
            continue
        else:
            problems.append(f"{rid}: refused, {said}")
    return problems
