"""What the runner runs, as data: the request (one JSON object) and the script's environment.

The controller hands the request over as JSON (``$MDOPS_REQUEST`` or a file), never on the command line:
free text such as a reason of ``--dry-run`` or ``$(id)`` is data to the runner and reaches the script
exactly as written, where command-line arguments would be options to argparse and, in a Job, variable
references to the kubelet.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runbooks.contract import Command

# The JSON request's keys: the Runbook spec's names, with the request id in effect and the window resolved.
TEXT_KEYS = ("requestId", "mode", "profile", "config", "reason", "requestedBy")
FLAG_KEYS = ("enforce", "dryRun")
KEYS = ("command", "window", *TEXT_KEYS, *FLAG_KEYS, "timeoutSeconds")
REQUIRED_KEYS = ("command", "requestId", "window")
WINDOWS = ("day", "night")

# What a script's environment holds besides the contract's MDOPS_* variables: these names from the runner's
# own environment, the names listed in $MDOPS_SCRIPT_PASS_ENV (a JSON list), and the variables of
# $MDOPS_SCRIPT_ENV (a JSON object). Nothing else of the runner's environment reaches the script.
BASE_ENV = ("PATH", "HOME", "LANG", "TZ", "TMPDIR")
PASS_ENV = "MDOPS_SCRIPT_PASS_ENV"
EXTRA_ENV = "MDOPS_SCRIPT_ENV"
REQUEST_ENV = "MDOPS_REQUEST"


class RequestError(ValueError):
    """The request, or the environment the runner was given for the script, is invalid."""


@dataclass(frozen=True)
class Request:
    command: str
    request_id: str
    window: str
    mode: str = "live"
    profile: str = "primary"
    config: str = ""
    reason: str = ""
    requested_by: str = ""
    enforce: bool = False
    dry_run: bool = False
    timeout: int = 300

    def __post_init__(self) -> None:
        if self.command not in {command.value for command in Command}:
            raise RequestError(f"command: unknown command {self.command!r}")
        if self.window not in WINDOWS:
            raise RequestError(f"window: must be day or night, got {self.window!r}")
        if not self.request_id:
            raise RequestError("requestId: must not be empty")
        for key, value in zip(TEXT_KEYS, self.texts(), strict=True):
            _no_nul(key, value)
        if self.timeout <= 0:
            raise RequestError(f"timeoutSeconds: must be greater than 0, got {self.timeout}")

    def texts(self) -> tuple[str, ...]:
        """The text fields, in the order of ``TEXT_KEYS``."""
        return (self.request_id, self.mode, self.profile, self.config, self.reason, self.requested_by)


def parse_request(text: str) -> Request:
    """A JSON request; ``RequestError`` naming the key when it is not one."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise RequestError(f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise RequestError(f"expected a JSON object, got {type(document).__name__}")
    unknown = sorted(set(document) - set(KEYS))
    if unknown:
        raise RequestError(f"unknown keys {unknown} (expected some of {list(KEYS)})")
    missing = [key for key in REQUIRED_KEYS if key not in document]
    if missing:
        raise RequestError(f"missing keys {missing}")
    for key in ("command", "window", *TEXT_KEYS):
        if key in document and not isinstance(document[key], str):
            raise RequestError(f"{key}: must be a string")
    for key in FLAG_KEYS:
        if key in document and not isinstance(document[key], bool):
            raise RequestError(f"{key}: must be true or false")
    timeout = document.get("timeoutSeconds", 300)
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        raise RequestError("timeoutSeconds: must be an integer")
    values = {
        "command": document["command"],
        "request_id": document["requestId"],
        "window": document["window"],
        "timeout": timeout,
        **{_field(key): document[key] for key in (*TEXT_KEYS[1:], *FLAG_KEYS) if key in document},
    }
    return Request(**values)


def read_request(source: str) -> str:
    """The text of ``--request``: a file, or standard input for ``-``."""
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise RequestError(f"cannot read {source}: {error}") from None


def inherited_env(environ: Mapping[str, str]) -> dict[str, str]:
    """What the script gets of the runner's environment ``environ``: ``BASE_ENV`` and the names listed in
    ``$MDOPS_SCRIPT_PASS_ENV`` (those set), then the variables of ``$MDOPS_SCRIPT_ENV``."""
    names = [*BASE_ENV, *_pass_names(environ.get(PASS_ENV))]
    env = {name: environ[name] for name in names if name in environ}
    return env | _extra_env(environ.get(EXTRA_ENV))


def contract_env(request: Request, report_file: Path) -> dict[str, str]:
    """The contract's ``MDOPS_*`` variables (they win over anything inherited)."""
    return {
        "MDOPS_COMMAND": request.command,
        "MDOPS_REQUEST_ID": request.request_id,
        "MDOPS_MODE": request.mode,
        "MDOPS_WINDOW": request.window,
        "MDOPS_PROFILE": request.profile,
        "MDOPS_CONFIG": request.config,
        "MDOPS_REASON": request.reason,
        "MDOPS_REQUESTED_BY": request.requested_by,
        "MDOPS_ENFORCE": "1" if request.enforce else "0",
        "MDOPS_DRY_RUN": "1" if request.dry_run else "0",
        "MDOPS_TIMEOUT_SECONDS": str(request.timeout),
        "MDOPS_REPORT_FILE": str(report_file),
    }


def dumps_for_env(value: Any) -> str:
    """JSON for an environment variable that a kubelet may read: ASCII, and no ``$`` at all (written
    ``\\u0024``), so that no ``$(NAME)`` reference is expanded and no ``$$`` is halved on its way."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).replace("$", "\\u0024")


def _pass_names(text: str | None) -> list[str]:
    names = _json(PASS_ENV, text, [])
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise RequestError(f"{PASS_ENV}: expected a JSON list of variable names")
    return names


def _extra_env(text: str | None) -> dict[str, str]:
    env = _json(EXTRA_ENV, text, {})
    if not isinstance(env, dict) or not all(isinstance(value, str) for value in env.values()):
        raise RequestError(f"{EXTRA_ENV}: expected a JSON object of strings")
    for name, value in env.items():
        _no_nul(f"{EXTRA_ENV}.{name}", name + value)
        if not name or "=" in name:
            raise RequestError(f"{EXTRA_ENV}: {name!r} is not a variable name")
    return env


def _json(name: str, text: str | None, empty: Any) -> Any:
    if not text:
        return empty
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise RequestError(f"{name}: not JSON: {error}") from None


def _no_nul(key: str, value: str) -> None:
    if "\x00" in value:
        raise RequestError(f"{key}: contains a NUL character, which no environment variable can hold")


def _field(key: str) -> str:
    """``dryRun`` -> ``dry_run``."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)
