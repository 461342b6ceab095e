"""``python -m runner``: the arguments and the request, and one run from them to the result line."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from runbooks.contract import Command, ExitCode, now
from runner.claim import CLAIMED_BY, ClaimError, Stopped, claim_from, claim_start
from runner.execute import KILL_GRACE_SECONDS, Cancellation, Outcome, run_script
from runner.gate import Thresholds, evaluate
from runner.logs import LogSink, RotatingFile, dumps
from runner.report import Report, ReportError, read_report
from runner.request import (
    REQUEST_ENV,
    Request,
    RequestError,
    contract_env,
    inherited_env,
    parse_request,
    read_request,
)
from runner.result import RESULT_PREFIX, build_result, write_result_file

PROG = "python -m runner"
STAND_BY_POLL_SECONDS = 0.5  # how soon a pod that does not run notices its SIGTERM


class UsageError(Exception):
    """Invalid arguments (argparse's errors, raised instead of exiting)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command's script and print the result line; the exit code is the result's ``exitCode``."""
    started_at = now()
    out = sys.stdout.buffer
    hints = _hints(argv)
    log = LogSink(out, file=RotatingFile(hints.log_file) if hints.log_file else None)
    with Cancellation() as cancel:
        try:
            args, request, env = parse_arguments(argv, os.environ)
            if (claim := claim_from(os.environ)) is not None:
                holder = claim_start(claim, cancel)
                if holder is not None:
                    return _stand_by(holder, hints.result_file, cancel)
            result = _run(args, request, env, log, cancel, started_at)
        except ClaimError as exc:
            result = _ended(ExitCode.NOT_EXECUTED, f"not run: {exc}", log, started_at)
        except Stopped as exc:
            result = _ended(ExitCode.CANCELLED, f"cancelled, not run: {exc}", log, started_at)
        except UsageError as exc:
            sys.stderr.write(f"{build_parser().format_usage()}{PROG}: error: {exc}\n")
            result = _ended(ExitCode.INVALID_ARGUMENTS, f"invalid arguments: {exc}", log, started_at)
        except Exception as exc:  # a crash of the runner itself must still give a result
            traceback.print_exc()
            message = f"runner error: {type(exc).__name__}: {exc}"
            result = _ended(ExitCode.NOT_EXECUTED, message, log, started_at)
        return _emit(result, hints, out)


def _stand_by(holder: str, result_file: str | None, cancel: Cancellation) -> int:
    """A second pod of the run's Job, whose start ``holder`` claimed: it never runs the script. It says so
    (its termination message) and waits to be stopped with its Job; ended first, it would end the Job, and
    the holder's run with it."""
    if result_file:
        write_result_file(result_file, json.dumps({CLAIMED_BY: holder}))
    sys.stderr.write(f"{PROG}: not run in this pod: pod {holder} claimed the run's start\n")
    sys.stderr.flush()
    while cancel.signal_name is None:
        time.sleep(STAND_BY_POLL_SECONDS)
    return ExitCode.CANCELLED


def parse_arguments(
    argv: Sequence[str] | None, environ: Mapping[str, str]
) -> tuple[argparse.Namespace, Request, dict[str, str]]:
    """The runner's options, the request, and what the script inherits of ``environ``.

    The request is JSON from ``--request`` or ``$MDOPS_REQUEST`` (how the controller passes it), else the
    request's own options (by hand); never both.
    """
    source = _hints(argv).request
    from_json = source is not None or bool(environ.get(REQUEST_ENV))
    args = build_parser(request_options=not from_json).parse_args(argv)
    try:
        env = inherited_env(environ)
    except RequestError as exc:
        raise UsageError(str(exc)) from None
    where = "--request" if source else REQUEST_ENV if from_json else "request"
    try:
        if not from_json:
            return args, _request_from_options(args), env
        return args, parse_request(read_request(source) if source else environ[REQUEST_ENV]), env
    except RequestError as exc:
        raise UsageError(f"{where}: {exc}") from None


def _request_from_options(args: argparse.Namespace) -> Request:
    return Request(
        command=args.command,
        request_id=args.request_id,
        window=args.window,
        mode=args.mode,
        profile=args.profile,
        config=args.config,
        reason=args.reason,
        requested_by=args.requested_by,
        enforce=args.enforce,
        dry_run=args.dry_run,
        timeout=args.timeout,
    )


def build_parser(*, request_options: bool = True) -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Run one runbook command's script.", allow_abbrev=False)
    if request_options:
        _add_request_options(parser.add_argument_group("the request, by hand (instead of --request)"))
    parser.add_argument(
        "--scripts",
        metavar="DIR",
        default=os.environ.get("MDOPS_SCRIPTS_DIR"),
        help="the folder of scripts, one executable per command (default: $MDOPS_SCRIPTS_DIR)",
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
    _add_hinted(parser)
    return parser


def _add_request_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--command", required=True, choices=[c.value for c in Command], help="the runbook command"
    )
    group.add_argument("--request-id", required=True, help="the request id (idempotency key)")
    group.add_argument("--mode", default="live", help="environment mode (default: live)")
    group.add_argument("--window", required=True, choices=("day", "night"), help="trading window")
    group.add_argument("--profile", default="primary", help="feed profile (default: primary)")
    group.add_argument("--config", default="", help="configuration set")
    group.add_argument("--reason", default="", help="why the runbook is run")
    group.add_argument("--requested-by", default="", help="who asked for the run")
    group.add_argument("--enforce", action="store_true", help="a failed health gate fails the run (exit 3)")
    group.add_argument("--dry-run", action="store_true", help="the script must plan only, change nothing")
    group.add_argument(
        "--timeout", type=_positive_int, default=300, metavar="SECONDS", help="stop the script after this"
    )


def _add_hinted(parser: argparse.ArgumentParser) -> None:
    """The options needed before the others are parsed (where to write, where the request is)."""
    parser.add_argument(
        "--request",
        metavar="FILE",
        help=f"the request as a JSON object, from FILE or standard input (-) (default: ${REQUEST_ENV})",
    )
    parser.add_argument(
        "--result-file",
        metavar="PATH",
        default=os.environ.get("MDOPS_RESULT_FILE") or None,
        help="also write the result JSON here (default: $MDOPS_RESULT_FILE)",
    )
    parser.add_argument(
        "--log-file",
        metavar="PATH",
        help="also write the log lines here, at most 1 MiB in it and 1 MiB in PATH.1",
    )
    parser.add_argument(
        "--room-file",
        metavar="PATH",
        help="a file that keeps room for the result on its disk: removed just before the result file is "
        "written, so that a disk the script filled still takes the result",
    )


def _hints(argv: Sequence[str] | None) -> argparse.Namespace:
    """The result file, the log file and the request's source, found even when other arguments are
    invalid."""
    parser = _Parser(add_help=False, allow_abbrev=False)
    _add_hinted(parser)
    try:
        return parser.parse_known_args(argv)[0]
    except UsageError:
        return parser.parse_args([])


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


def _run(
    args: argparse.Namespace,
    request: Request,
    env: dict[str, str],
    log: LogSink,
    cancel: Cancellation,
    started_at: str,
) -> dict[str, Any]:
    # The script works in a folder of its own, beside (not holding) its report, both removed afterwards.
    with tempfile.TemporaryDirectory(prefix="mdops-run-", ignore_cleanup_errors=True) as workdir:
        report_file = Path(workdir) / "report.json"
        cwd = Path(workdir) / "work"
        cwd.mkdir()
        outcome = run_script(
            args.scripts,
            request.command,
            env | contract_env(request, report_file),
            cwd=cwd,
            timeout=request.timeout,
            log=log,
            cancel=cancel,
            kill_grace=args.kill_grace,
        )
        try:
            return _conclude(args, request, outcome, report_file, log, started_at)
        except Exception as exc:  # never let a runner failure hide how the script ended
            traceback.print_exc()
            problem = f"runner error after the script ended: {type(exc).__name__}: {exc}"
            if outcome.exit_code == ExitCode.SUCCESS:
                return _ended(ExitCode.NOT_EXECUTED, problem, log, started_at)
            log.emit("ERROR", problem)
            return _ended(outcome.exit_code, outcome.message, log, started_at, logged=True)


def _conclude(
    args: argparse.Namespace,
    request: Request,
    outcome: Outcome,
    report_file: Path,
    log: LogSink,
    started_at: str,
) -> dict[str, Any]:
    """The result of a run whose script has ended: its report, its state, the health gate."""
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
        state = {
            "environment_mode": request.mode,
            "active_profile": request.profile,
            "active_window": request.window,
        }
        state |= report.state or {}
        exit_code, message = _gate(args, request, health, log)
    finished_at = now()
    if health is not None and health.get("generated_at") is None:
        health["generated_at"] = finished_at
    return build_result(
        exit_code=exit_code,
        message=message,
        started_at=started_at,
        finished_at=finished_at,
        dry_run=request.dry_run,
        health=health,
        state=state,
        logs=log.close(),
    )


def _gate(
    args: argparse.Namespace, request: Request, health: dict[str, Any] | None, log: LogSink
) -> tuple[ExitCode, str]:
    """The exit code and message of a script that succeeded, after the health gate."""
    succeeded = f"{request.command} succeeded"
    if not Command(request.command).gated:
        return ExitCode.SUCCESS, succeeded
    if health is None:
        log.emit("WARNING", "no health report; gate not evaluated")
        return ExitCode.SUCCESS, f"{succeeded}; no health report, gate not evaluated"
    thresholds = Thresholds(args.min_coverage, args.max_backlog, args.max_failover_latency_ms)
    gate = health["gate"] = evaluate(health, thresholds, enforced=request.enforce)
    if gate["passed"]:
        return ExitCode.SUCCESS, f"{succeeded}; health gate passed"
    failures = "; ".join(gate["failures"])
    if request.enforce:
        log.emit("ERROR", f"health gate failed: {failures}")
        return ExitCode.GATE_FAILED, f"health gate failed: {failures}"
    log.emit("WARNING", f"health gate failed (not enforced): {failures}")
    return ExitCode.SUCCESS, f"{succeeded}; health gate failed (not enforced): {failures}"


def _ended(
    code: ExitCode, message: str, log: LogSink, started_at: str, *, logged: bool = False
) -> dict[str, Any]:
    """The result of a run that ended before (or instead of) the script's end, or without its report."""
    if not logged:
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


def _emit(result: dict[str, Any], hints: argparse.Namespace, out: BinaryIO) -> int:
    text = dumps(result)
    if hints.room_file:
        with contextlib.suppress(OSError):
            os.unlink(hints.room_file)
    if hints.result_file:
        try:
            write_result_file(hints.result_file, text)
        except OSError as exc:
            sys.stderr.write(f"{PROG}: could not write the result file {hints.result_file}: {exc}\n")
    with contextlib.suppress(OSError):
        out.write(f"{RESULT_PREFIX}{text}\n".encode())
        out.flush()
    return result["exitCode"]
