"""The audit trail: every transition of a Runbook as one JSON line on the logger ``mdops.audit``.

Events expire within the hour and retention deletes finished Runbooks (:mod:`controller.retention`); a
log pipeline keeps what happened. Each line says who asked (``requestedBy``), what (command, namespace,
name, request id, mode, profile, dry run), who cancelled it, when, which transition, and its outcome
(result, exit code, reason). The logger has its own handler (:func:`configure`), so that a line is the JSON
object alone and a pipeline picks the lines whose ``logger`` is ``mdops.audit``.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from runbooks.contract import now, requester
from runbooks.models import RunbookStatus

LOGGER = "mdops.audit"
log = logging.getLogger(LOGGER)


def configure() -> None:
    """The audit lines to stderr, each as it is (the controller's other lines carry a time and a level)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def line(
    transition: str,
    namespace: str,
    name: str,
    spec: dict[str, Any],
    status: RunbookStatus | None,
    message: str,
    when: str = "",
) -> dict[str, Any]:
    """One audit line's fields: ``transition`` is the reason the Runbook's condition or Event shows
    (``Queued``, ``Started``, ``Succeeded``, ``Failed``..., ``Duplicate``, ``QuotaExceeded``) or
    ``Deleted`` (by retention); ``when``: now, unless given. ``cancelledBy``: who set ``spec.cancel``
    (None while it is not set)."""
    finished = status is not None and status.finished
    succeeded = status.succeeded if status is not None else None
    return {
        "logger": LOGGER,
        "when": when or now(),
        "transition": transition,
        "who": requester(spec),
        "command": spec.get("command", ""),
        "namespace": namespace,
        "name": name,
        "requestId": spec.get("requestId") or name,
        "mode": spec.get("mode", ""),
        "profile": spec.get("profile", ""),
        "dryRun": bool(spec.get("dryRun", False)),
        "cancelledBy": None if spec.get("cancel") is None else requester(spec["cancel"]),
        "result": status.result if finished else None,
        "exitCode": status.exit_code if finished else None,
        "reason": succeeded.reason if succeeded is not None else None,
        "message": message,
    }


def write(fields: dict[str, Any]) -> None:
    """Write one :func:`line`."""
    log.info(json.dumps(fields, ensure_ascii=False))
