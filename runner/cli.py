"""``python -m runner``: the arguments, and one run from them to the result line."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from runbooks.contract import Command, ExitCode, now
from runner.execute import KILL_GRACE_SECONDS, Cancellation, run_script
from runner.gate import Thresholds, evaluate
from runner.logs import LogSink, dumps
from runner.report import Report, ReportError, read_report
from runner.result import RESULT_PREFIX, build_result, write_result_file

PROG = "python -m runner"


class UsageError(Exception):
    """Invalid arguments (argparse's errors, raised instead of exiting)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command's script and print the result line; the exit code is the result's ``exitCode``."""
    started_at = now()
    out = sys.stdout.buffer
    log = LogSink(out)
    with Cancellation() as cancel:
        result_file = _result_file_hint(argv)
        try:
            args = build_parser().parse_args(argv)
            result_file = args.result_file
            result = _run(args, log, cancel, started_at)
        except UsageError as exc:
            sys.stderr.write(f"{build_parser().format_usage()}{PROG}: error: {exc}\n")
            result = _ended(ExitCode.INVALID_ARGUMENTS, f"invalid arguments: {exc}", log, started_at)
        except Exception as exc:  # a crash of the runner itself must still give a result
            traceback.print_exc()
            message = f"runner error: {type(exc).__name__}: {exc}"
            result = _ended(ExitCode.NOT_EXECUTED, message, log, started_at)
        return _emit(result, result_file, out)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Run one runbook command's script.", allow_abbrev=False)
    parser.add_argument(
        "--command", required=True, choices=[c.value for c in Command], help="the runbook command"
    )
    parser.add_argument(
        "--scripts",
        metavar="DIR",
        default=os.environ.get("MDOPS_SCRIPTS_DIR"),
        help="the folder of scripts, one executable per command (default: $MDOPS_SCRIPTS_DIR)",
    )
    parser.add_argument("--request-id", required=True, help="the request id (idempotency key)")
    parser.add_argument("--mode", default="live", help="environment mode (default: live)")
    parser.add_argument("--window", required=True, choices=("day", "night"), help="trading window")
    parser.add_argument("--profile", default="primary", help="feed profile (default: primary)")
    parser.add_argument("--config", default="", help="configuration set")
    parser.add_argument("--reason", default="", help="why the runbook is run")
    parser.add_argument("--requested-by", default="", help="who asked for the run")
    parser.add_argument("--enforce", action="store_true", help="a failed health gate fails the run (exit 3)")
    parser.add_argument("--dry-run", action="store_true", help="the script must plan only, change nothing")
    parser.add_argument(
        "--timeout", type=_positive_int, default=300, metavar="SECONDS", help="stop the script after this"
    )
    parser.add_argument(
        "--kill-grace",
        type=_non_negative_float,
        default=KILL_GRACE_SECONDS,
        metavar="SECONDS",
        help=f"from SIGTERM to SIGKILL when stopping the script (default: {KILL_GRACE_SECONDS:g})",
    )
    parser.add_argument("--min-coverage", type=_ratio, default=0.99, help="gate: lowest coverage_ratio")
    parser.add_argument(
        "--max-backlog", type=_non_negative_int, default=10000, help="gate: highest consumer_backlog_messages"
    )
    parser.add_argument(
        "--max-failover-latency-ms",
        type=_non_negative_int,
        default=5000,
        help="gate: highest failover_latency_ms",
    )
    _add_result_file(parser)
    return parser


def _add_result_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--result-file",
        metavar="PATH",
        default=os.environ.get("MDOPS_RESULT_FILE") or None,
        help="also write the result JSON here (default: $MDOPS_RESULT_FILE)",
    )


def _result_file_hint(argv: Sequence[str] | None) -> str | None:
    """The result file, found even when the other arguments are invalid."""
    parser = _Parser(add_help=False, allow_abbrev=False)
    _add_result_file(parser)
    try:
        return parser.parse_known_args(argv)[0].result_file
    except UsageError:
        return parser.get_default("result_file")


def _positive_int(text: str) -> int:
    value = _int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _ratio(text: str) -> float:
    value = _float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _run(args: argparse.Namespace, log: LogSink, cancel: Cancellation, started_at: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mdops-run-", ignore_cleanup_errors=True) as workdir:
        report_file = Path(workdir) / "report.json"
        outcome = run_script(
            args.scripts,
            args.command,
            _script_env(args, report_file),
            timeout=args.timeout,
            log=log,
            cancel=cancel,
            kill_grace=args.kill_grace,
        )
        exit_code, message = outcome.exit_code, outcome.message
        report = Report()
        if outcome.script_ran:
            try:
                report = read_report(report_file)
            except ReportError as exc:
                problem = f"malformed report file: {exc}"
                log.emit("ERROR", problem)
                if exit_code == ExitCode.SUCCESS:  # a broken contract is a script failure
                    exit_code, message = ExitCode.SCRIPT_FAILED, problem
    health, state = report.health, report.state
    if exit_code == ExitCode.SUCCESS:
        # The state the script reports wins; what it leaves out is what the request asked for.
        state = {"environment_mode": args.mode, "active_profile": args.profile, "active_window": args.window}
        state |= report.state or {}
        exit_code, message = _gate(args, health, log)
    finished_at = now()
    if health is not None and health.get("generated_at") is None:
        health["generated_at"] = finished_at
    return build_result(
        exit_code=exit_code,
        message=message,
        started_at=started_at,
        finished_at=finished_at,
        dry_run=args.dry_run,
        health=health,
        state=state,
        logs=log.close(),
    )


def _gate(args: argparse.Namespace, health: dict[str, Any] | None, log: LogSink) -> tuple[ExitCode, str]:
    """The exit code and message of a script that succeeded, after the health gate."""
    succeeded = f"{args.command} succeeded"
    if not Command(args.command).gated:
        return ExitCode.SUCCESS, succeeded
    if health is None:
        log.emit("WARNING", "no health report; gate not evaluated")
        return ExitCode.SUCCESS, f"{succeeded}; no health report, gate not evaluated"
    thresholds = Thresholds(args.min_coverage, args.max_backlog, args.max_failover_latency_ms)
    gate = health["gate"] = evaluate(health, thresholds, enforced=args.enforce)
    if gate["passed"]:
        return ExitCode.SUCCESS, f"{succeeded}; health gate passed"
    failures = "; ".join(gate["failures"])
    if args.enforce:
        log.emit("ERROR", f"health gate failed: {failures}")
        return ExitCode.GATE_FAILED, f"health gate failed: {failures}"
    log.emit("WARNING", f"health gate failed (not enforced): {failures}")
    return ExitCode.SUCCESS, f"{succeeded}; health gate failed (not enforced): {failures}"


def _script_env(args: argparse.Namespace, report_file: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MDOPS_COMMAND": args.command,
        "MDOPS_REQUEST_ID": args.request_id,
        "MDOPS_MODE": args.mode,
        "MDOPS_WINDOW": args.window,
        "MDOPS_PROFILE": args.profile,
        "MDOPS_CONFIG": args.config,
        "MDOPS_REASON": args.reason,
        "MDOPS_REQUESTED_BY": args.requested_by,
        "MDOPS_ENFORCE": "1" if args.enforce else "0",
        "MDOPS_DRY_RUN": "1" if args.dry_run else "0",
        "MDOPS_TIMEOUT_SECONDS": str(args.timeout),
        "MDOPS_REPORT_FILE": str(report_file),
    }


def _ended(code: ExitCode, message: str, log: LogSink, started_at: str) -> dict[str, Any]:
    """The result of a run that ended before (or instead of) the script's end."""
    log.emit("ERROR", message)
    return build_result(
        exit_code=code,
        message=message,
        started_at=started_at,
        finished_at=now(),
        dry_run=False,
        health=None,
        state=None,
        logs=log.close(),
    )


def _emit(result: dict[str, Any], result_file: str | None, out: BinaryIO) -> int:
    text = dumps(result)
    if result_file:
        try:
            write_result_file(result_file, text)
        except OSError as exc:
            sys.stderr.write(f"{PROG}: could not write the result file {result_file}: {exc}\n")
    with contextlib.suppress(OSError):
        out.write(f"{RESULT_PREFIX}{text}\n".encode())
        out.flush()
    return result["exitCode"]
