"""Helpers shared by the reference runbook scripts: the contract's environment, HTTP calls to the
simulator's admin API, log lines and the report file. Standard library only.

The scripts import this module by name: Python puts a script's own directory first on ``sys.path``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
COMMANDS = ("start", "stop", "restart", "failover", "failback", "drill", "health_check")
WINDOWS = ("day", "night")
# The simulator's two switch actions and the source each one makes active.
SWITCHES = {"failover": "backup", "failback": "primary"}
WAIT_HTTP_TIMEOUT = 40.0  # the simulator bounds a ?wait=true call to 30 s
HTTP_TIMEOUT = 10.0
DEFAULT_TIMEZONE = "Asia/Shanghai"
HEALTH_KEYS = (
    "coverage_ratio",
    "expected_total",
    "active_total",
    "matched_total",
    "ignored_total",
    "consumer_backlog_messages",
    "failover_latency_ms",
)


class ScriptError(Exception):
    exit_code = EXIT_FAILED


class ConfigError(ScriptError):
    """Invalid arguments or configuration (exit code 2)."""

    exit_code = EXIT_INVALID


class SimError(ScriptError):
    """The simulator refused a call or could not be reached (exit code 1)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# Control characters (C0, DEL, C1): a newline or a carriage return in a message (a reason may hold newlines)
# would start a line of its own, one that could pass for another log line; an escape sequence would act on
# a terminal that shows the log.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def log(level: str, message: str) -> None:
    """One log line in the runner's format: ``LEVEL: message``, its control characters escaped (``\\n``)."""
    print(f"{level}: {CONTROL.sub(lambda m: repr(m[0])[1:-1], message)}", flush=True)


def info(message: str) -> None:
    log("INFO", message)


def warning(message: str) -> None:
    log("WARNING", message)


def error(message: str) -> None:
    log("ERROR", message)


def debug(message: str) -> None:
    log("DEBUG", message)


def _flag(env: dict[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("", "0", "false", "no"):
        return False
    raise ConfigError(f"{name} must be 1 or 0, got {env[name]!r}")


def _timezone(name: str) -> dt.tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        if name == DEFAULT_TIMEZONE:  # no tz database on this machine: the exchange's fixed offset
            return dt.timezone(dt.timedelta(hours=8), name)
        raise ConfigError(f"MDOPS_TIMEZONE={name!r} is not a known time zone") from None


@dataclass
class Context:
    """The run's parameters (from the environment) and a client of the simulator's admin API."""

    command: str
    sim_url: str
    request_id: str = ""
    mode: str | None = None
    window: str = ""
    profile: str = ""
    config: str = ""
    reason: str = ""
    requested_by: str = ""
    enforce: bool = False
    dry_run: bool = False
    timeout_seconds: float | None = None
    report_file: str | None = None
    tz: dt.tzinfo = dt.timezone(dt.timedelta(hours=8))
    report_written: bool = field(default=False, init=False)

    # -- the simulator ------------------------------------------------------------------------------------

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, wait: bool = False) -> Any:
        """Call the admin API; answers other than 2xx raise :class:`SimError` with the simulator's detail."""
        url = self.sim_url + path + ("?wait=true" if wait else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers={"Accept": "application/json"})
        if data is not None:
            req.add_header("Content-Type", "application/json")
        timeout = WAIT_HTTP_TIMEOUT if wait else HTTP_TIMEOUT
        if self.timeout_seconds is not None:
            timeout = min(timeout, self.timeout_seconds)
        debug(f"{method} {url}" + ("" if body is None else f" {json.dumps(body)}"))
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise SimError(f"{method} {path} failed ({exc.code}): {_detail(exc)}", exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SimError(f"cannot reach the simulator at {self.sim_url}: {reason}") from None
        except ValueError as exc:
            raise SimError(f"{method} {path}: the simulator answered invalid JSON: {exc}") from None

    def status(self) -> dict[str, Any]:
        return self.call("GET", "/admin/status")

    def switch(self, action: str) -> dict[str, Any]:
        """Fail over (``action="failover"``) or back (``"failback"``) and wait until the switch is done."""
        status = self.call("POST", f"/admin/{action}", wait=True)
        if status.get("transition") is not None:
            raise SimError(
                f"{action} did not finish within the simulator's wait bound ({status['transition']})"
            )
        return status

    # -- the report -----------------------------------------------------------------------------------------

    def now(self) -> str:
        return dt.datetime.now(self.tz).isoformat(timespec="seconds")

    def health(self, status: dict[str, Any], **overrides: Any) -> dict[str, Any]:
        health = {key: status.get(key) for key in HEALTH_KEYS}
        health.update(overrides)
        health["generated_at"] = self.now()
        return health

    def state(self, status: dict[str, Any]) -> dict[str, Any]:
        return {
            "environment_mode": self.mode,
            "active_profile": status.get("active_source"),
            "active_window": status.get("window"),
        }

    def write_report(self, health: dict[str, Any] | None, state: dict[str, Any]) -> None:
        """Write ``{"health": ..., "state": ...}`` to ``MDOPS_REPORT_FILE`` (atomically)."""
        report = {"health": health, "state": state}
        self.report_written = True
        if not self.report_file:
            warning("MDOPS_REPORT_FILE is not set: the report is only logged")
            debug(f"report: {json.dumps(report)}")
            return
        directory = os.path.dirname(os.path.abspath(self.report_file))
        fd, tmp = tempfile.mkstemp(prefix=".report-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(report, fh)
            os.replace(tmp, self.report_file)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        debug(f"report written to {self.report_file}")

    def report_status(self, status: dict[str, Any], with_health: bool = True, **overrides: Any) -> None:
        self.write_report(self.health(status, **overrides) if with_health else None, self.state(status))


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"null")
    except (ValueError, OSError):
        return exc.reason or "no detail"
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return json.dumps(body)


def load_context(command: str, env: dict[str, str] | None = None) -> Context:
    """Read and check the contract's environment; raises :class:`ConfigError` (exit 2)."""
    env = dict(os.environ if env is None else env)
    requested = env.get("MDOPS_COMMAND", "").strip()
    if requested and requested != command:
        raise ConfigError(f"MDOPS_COMMAND={requested!r} but this is the {command!r} script")
    sim_url = env.get("MDOPS_SIM_URL", "").strip().rstrip("/")
    if not sim_url:
        raise ConfigError("MDOPS_SIM_URL is not set: the simulator's admin URL, e.g. http://127.0.0.1:9100")
    parts = urllib.parse.urlsplit(sim_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"MDOPS_SIM_URL must be an http(s) URL, got {sim_url!r}")
    window = env.get("MDOPS_WINDOW", "").strip()
    if window not in ("", "auto", *WINDOWS):
        raise ConfigError(f"MDOPS_WINDOW must be day, night or auto, got {window!r}")
    timeout: float | None = None
    if env.get("MDOPS_TIMEOUT_SECONDS", "").strip():
        try:
            timeout = float(env["MDOPS_TIMEOUT_SECONDS"])
        except ValueError:
            timeout = -1.0
        if not timeout > 0:
            raw = env["MDOPS_TIMEOUT_SECONDS"]
            raise ConfigError(f"MDOPS_TIMEOUT_SECONDS must be a positive number, got {raw!r}")
    return Context(
        command=command,
        sim_url=sim_url,
        request_id=env.get("MDOPS_REQUEST_ID", ""),
        mode=env.get("MDOPS_MODE"),
        window=window,
        profile=env.get("MDOPS_PROFILE", ""),
        config=env.get("MDOPS_CONFIG", ""),
        reason=env.get("MDOPS_REASON", ""),
        requested_by=env.get("MDOPS_REQUESTED_BY", ""),
        enforce=_flag(env, "MDOPS_ENFORCE"),
        dry_run=_flag(env, "MDOPS_DRY_RUN"),
        timeout_seconds=timeout,
        report_file=env.get("MDOPS_REPORT_FILE") or None,
        tz=_timezone(env.get("MDOPS_TIMEZONE", "").strip() or DEFAULT_TIMEZONE),
    )


def describe(status: dict[str, Any]) -> str:
    """A one-line summary of the simulator's status."""
    latency = status.get("failover_latency_ms")
    return (
        f"state={status.get('state')} source={status.get('active_source')} window={status.get('window')} "
        f"coverage={status.get('coverage_ratio')} "
        f"({status.get('matched_total')}/{status.get('expected_total')} matched) "
        f"backlog={status.get('consumer_backlog_messages')} "
        f"failover_latency_ms={'n/a' if latency is None else latency}"
    )


def main(command: str, run: Callable[[Context], int | None], with_health: bool = True) -> NoReturn:
    """Run ``run(ctx)`` under the contract: log lines, report file, exit codes 0/1/2.

    When ``run`` fails after the environment was read, a best-effort report of the simulator's current state
    is still written, so the runner sees where the environment was left.
    """
    if command not in COMMANDS:
        raise SystemExit(f"unknown command {command!r}")
    try:
        ctx = load_context(command)
    except ConfigError as exc:
        error(str(exc))
        sys.exit(exc.exit_code)
    debug(
        f"{command}: request_id={ctx.request_id!r} mode={ctx.mode!r} window={ctx.window!r} "
        f"profile={ctx.profile!r} config={ctx.config!r} enforce={ctx.enforce} dry_run={ctx.dry_run}"
    )
    if ctx.reason or ctx.requested_by:
        info(f"{command} requested by {ctx.requested_by or 'unknown'}: {ctx.reason or 'no reason given'}")
    try:
        code = run(ctx) or EXIT_OK
    except ScriptError as exc:
        error(str(exc))
        code = exc.exit_code
    except Exception as exc:  # a reference script must fail with a log line, not a bare traceback
        error(f"{command} failed unexpectedly: {type(exc).__name__}: {exc}")
        code = EXIT_FAILED
    if code != EXIT_OK and not ctx.report_written:
        try:
            ctx.report_status(ctx.status(), with_health=with_health)
        except ScriptError as exc:
            warning(f"no report written: {exc}")
    sys.exit(code)


def switch_to(source: str) -> str:
    """The switch action that makes ``source`` active: ``failover`` to the backup, ``failback`` to the
    primary."""
    return next(action for action, target in SWITCHES.items() if target == source)


def other_source(source: str) -> str:
    return "backup" if source == "primary" else "primary"


def switch_refusal(status: dict[str, Any]) -> str | None:
    """Why the simulator would refuse any switch in this state; None if it would not. (A switch to the
    source that is active already is not refused by the scripts: it has nothing to do.)"""
    if status.get("transition") is not None:
        return f"a {status['transition'].get('action')} is in progress"
    if status.get("state") == "stopped":
        return "the feed is stopped; start it first"
    return None


def run_switch(ctx: Context, action: str) -> int:
    """``failover`` or ``failback``: make the action's source active and report health and latency.

    When that source is active already there is nothing to switch: the run says so and succeeds (exit 0)
    with a report of the unchanged state, so a repeated or retried request is harmless. A stopped feed or a
    switch in progress is refused, as the simulator refuses it (exit 1).
    """
    target = SWITCHES[action]
    verb = {"failover": "fail over", "failback": "fail back"}[action]
    status = ctx.status()
    source = status["active_source"]
    refusal = switch_refusal(status)
    if ctx.dry_run:
        ctx.report_status(status)
        if refusal:
            error(f"dry run: {action} would be refused: {refusal}")
            return EXIT_FAILED
        if source == target:
            info(f"dry run: would do nothing: the active source is already {target}")
        else:
            info(f"dry run: would {verb} from {source} to {target}")
        return EXIT_OK
    if source == target and refusal is None:
        info(f"{action}: nothing to do: the active source is already {target} ({describe(status)})")
        ctx.report_status(status)
        return EXIT_OK
    info(f"{action}: switching from {source} to {target}")
    status = ctx.switch(action)
    info(f"{action} completed in {status['failover_latency_ms']} ms: {describe(status)}")
    if status["matched_total"] == 0:
        warning(f"the {target} source delivers no data")
    ctx.report_status(status)
    return EXIT_OK
