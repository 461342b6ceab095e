"""The ``mdops`` (and ``kubectl mdops``) commands, with click; ``main`` runs them (for the console scripts,
:mod:`cli.main`)."""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
import yaml
from click.shell_completion import get_completion_class
from rich.console import Console, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cli import render
from cli.client import Api
from cli.config import (
    CONFIG_ENV,
    TOKEN_ENV,
    URL_ENV,
    Config,
    ContextEntry,
    config_path,
    resolve,
    shown_url,
    url_problem,
)
from cli.errors import CliError, Exit, help_table, interrupted
from cli.follow import Say, watch
from cli.follow import follow as follow_logs
from cli.follow import run as run_and_follow
from runbooks.contract import Command, ExitCode, Reason, RunState, is_token

COMPLETE_VAR = "_MDOPS_COMPLETE"
SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@contextmanager
def _mdops_codes() -> Iterator[None]:
    """click exits 2 on a usage error, which is a runbook's "invalid arguments": mdops exits 64. A Ctrl-C
    click would end with "Aborted!" and 1, a runbook's "failed": mdops says "interrupted" and exits 130."""
    try:
        yield
    except click.UsageError as error:
        error.exit_code = Exit.USAGE
        raise
    except KeyboardInterrupt:
        raise interrupted() from None


class Mdops(click.Group):
    """The top command: click's own failures get mdops's codes (usage: 64; Ctrl-C: 130), and so do those
    that no command expected (1 would read as a runbook's "failed"): a closed pipe 141, others 70."""

    def make_context(
        self, info_name: str | None, args: list[str], *rest: Any, **kwargs: Any
    ) -> click.Context:
        with _mdops_codes():
            for arg in args:
                # Bytes that are not UTF-8 are kept by Python as surrogates, which no URL or JSON carries.
                if not _utf_8(arg):
                    raise click.UsageError(f"{arg!a} is not UTF-8 text: give it in UTF-8")
            return super().make_context(info_name, args, *rest, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        with _mdops_codes():
            try:
                return super().invoke(ctx)
            except (click.ClickException, click.exceptions.Exit, click.Abort):
                raise
            except BrokenPipeError:
                # Python's advice for SIGPIPE: what is still buffered for the closed pipe goes to /dev/null,
                # not into another error as Python exits.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                ctx.exit(Exit.PIPE)
            except Exception as error:
                raise CliError(
                    f"unexpected error: {type(error).__name__}: {error}",
                    Exit.API_FAILED,
                    "an answer mdops does not understand (is the URL the mdops API's?), or a bug in mdops",
                ) from error


def _utf_8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """Rich's own exits 1, a runbook's "failed": a closed pipe ends mdops as any command's (Mdops)."""
        raise BrokenPipeError


def console(stderr: bool = False) -> Console:
    """Rich decides on colour (a terminal only; never with NO_COLOR). Into a pipe or a file the width is
    not the terminal's: lines are kept whole for grep."""
    out = _Console(stderr=stderr, markup=False, emoji=False, highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = 200
    return out


class Output:
    """``-o table`` for people (Rich), ``-o json`` and ``-o yaml`` for scripts: the API's own shapes."""

    def __init__(self, form: str):
        self.form = form
        self.console = console()

    @property
    def human(self) -> bool:
        return self.form == "table"

    def show(self, body: Any, view: Callable[[Any], RenderableType]) -> None:
        if self.form == "json":
            click.echo(json.dumps(body, indent=2, ensure_ascii=False))
        elif self.form == "yaml":
            click.echo(yaml.safe_dump(body, sort_keys=False, allow_unicode=True), nl=False)
        else:
            self.print(view(body))

    def item(self, body: Any, view: Callable[[Any], RenderableType]) -> None:
        """One item of a stream (log lines, refreshes): a line of JSON, an item of a YAML list."""
        if self.form == "json":
            click.echo(json.dumps(body, ensure_ascii=False))
        elif self.form == "yaml":
            click.echo(yaml.safe_dump([body], sort_keys=False, allow_unicode=True), nl=False)
        else:
            self.print(view(body))

    def print(self, renderable: RenderableType) -> None:
        """Rich pads table cells to their column's width: into a pipe or a file, lines lose that padding."""
        if self.console.is_terminal:
            whole(self.console, renderable)
            return
        with self.console.capture() as captured:
            whole(self.console, renderable)
        click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def whole(out: Console, renderable: RenderableType) -> None:
    """Print with no line cut at the width: a log line (render.log_line, never wrapped) goes out whole, for
    a terminal to wrap and a pipe to get as one line. Rich would cut it at the width, and a text printed
    alone it would wrap between words (its no_wrap is lost when Rich joins what it prints)."""
    out.print(renderable, crop=False, soft_wrap=isinstance(renderable, Text))


class Seconds(click.FloatRange):
    """Seconds, from ``least`` to a day. click's FloatRange takes nan (no comparison with it fails), and
    inf without a maximum: the HTTP client and sleep would fail on them."""

    def __init__(self, least: float):
        super().__init__(min=least, max=86400.0)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if math.isnan(seconds):
            self.fail(f"{value!r} is not a number", param, ctx)
        return seconds


def warn(message: str) -> None:
    """A line on standard error. To sys.stderr as it is now: under mdops run's spinner, or a --watch's live
    table, Rich's proxy of it, which writes the line above them (click.echo wrote into the spinner's line)."""
    print(f"mdops: {message}", file=sys.stderr, flush=True)


def verbose_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``-v`` for the commands that follow a run: the command gets ``say`` (how the run is followed, with
    -v only) and ``warn`` (what could not be shown, and why a run waits: always), each a line on standard
    error."""

    @click.option(
        "-v",
        "--verbose",
        is_flag=True,
        help="Say on standard error how the run is followed (stream, polling).",
    )
    @functools.wraps(command)
    def with_notices(verbose: bool, **kwargs: Any) -> Any:
        def quiet(message: str) -> None:
            pass

        say: Say = warn if verbose else quiet
        return command(say=say, warn=warn, **kwargs)

    return with_notices


def api_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of every command that calls the API; the command gets ``api`` and ``out`` instead."""

    @click.option(
        "--url",
        metavar="URL",
        help=f"The API's base URL. Default: from --context, {URL_ENV}, or the current context.",
    )
    @click.option(
        "--token",
        metavar="TOKEN",
        help=f"Bearer token. Other users can see it in the process list: prefer {TOKEN_ENV} or a context.",
    )
    @click.option("--context", "context_name", metavar="NAME", help="Use this context of the config file.")
    @click.option(
        "--request-timeout",
        type=Seconds(0.1),
        default=60.0,
        show_default=True,
        metavar="SECONDS",
        help="How long to wait for each answer of the API.",
    )
    @click.option(
        "-o",
        "--output",
        "form",
        type=click.Choice(["table", "json", "yaml"]),
        default="table",
        show_default=True,
        help="table for people; json or yaml, in the API's shapes, for scripts.",
    )
    @functools.wraps(command)
    def with_api(url, token, context_name, request_timeout, form, **kwargs):
        connection = resolve(url, token, context_name, os.environ)
        with Api(connection, request_timeout) as api:
            return command(api, Output(form), **kwargs)

    return with_api


@click.group(
    cls=Mdops,
    context_settings=SETTINGS,
    epilog=help_table(),
    help=f"""The command line of mdops' Ops Console REST API: run runbooks, read status, metrics and logs.

\b
Connecting (first that applies; --url and --token override either):
  --context NAME                  a context of the config file (mdops config --help)
  {URL_ENV}, {TOKEN_ENV}   e.g. `. .mdops/stack.env` of the local stack
  the config file's current context ({CONFIG_ENV}, else ~/.config/mdops/config.yaml)

\b
Examples:
  . .mdops/stack.env && mdops status
  mdops run health_check --follow
  mdops run failover --profile backup --reason "primary down" && echo "failed over"
  id=$(mdops run drill --no-wait) && mdops logs "$id" -f
  mdops runs --result failed --since 1d
  mdops chart md_throughput_mps --minutes 30
  kubectl mdops status                 (installed as kubectl-mdops, a kubectl plugin)
""",
)
@click.version_option(package_name="mdops", prog_name="mdops")
def cli() -> None:
    pass


# -- runs ------------------------------------------------------------------------------------------


@cli.command(
    epilog="""\b
Examples:
  mdops run health_check                         wait, show the result; exit with the run's exit code
  mdops run failover --profile backup --reason "primary down" --follow
  mdops run drill --enforce --timeout 600 -o json > drill.json
  mdops run restart --dry-run                    plan only: the script changes nothing
  id=$(mdops run start --no-wait)                the request id, as soon as the API has the run
  mdops run health_check --request-id hc-2025-09-22   the same id again is the same run, not a second"""
)
@click.argument("command", type=click.Choice([c.value for c in Command]), metavar="COMMAND")
@click.option("--mode", help="Environment mode, e.g. live. Default: the API's.")
@click.option(
    "--window",
    type=click.Choice(["day", "night", "auto"]),
    help="Trading window; auto: from the session calendar at the start. Default: the API's.",
)
@click.option("--profile", help="Feed profile, e.g. primary or backup. Default: the API's.")
@click.option("--config", "config_set", metavar="NAME", help="Configuration set. Default: the API's.")
@click.option("--reason", help="Why (kept in the audit).")
@click.option(
    "--enforce/--no-enforce", default=None, help="Fail the run (exit 3) when the health gate fails."
)
@click.option("--dry-run", is_flag=True, default=None, help="Plan only: the script changes nothing.")
@click.option(
    "--request-id", metavar="ID", help="Idempotency key: the same id is the same run. Default: new."
)
@click.option(
    "--timeout",
    type=click.IntRange(1, 86400),
    metavar="SECONDS",
    help="Stop the run after this (exit code 124). Default: the API's.",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait for the end, or print the request id as soon as the API has the run.",
)
@click.option("-f", "--follow", is_flag=True, help="Print the run's log lines as they come.")
@verbose_option
@api_options
def run(
    api: Api,
    out: Output,
    say: Say,
    warn: Say,
    command: str,
    mode: str | None,
    window: str | None,
    profile: str | None,
    config_set: str | None,
    reason: str | None,
    enforce: bool | None,
    dry_run: bool | None,
    request_id: str | None,
    timeout: int | None,
    wait: bool,
    follow: bool,
) -> None:
    """Run a runbook command, wait, exit with its code.

    Runs COMMAND as a runbook and, unless --no-wait, waits for its end and shows the result.
    The exit status is the runbook's exit code (0 success, 1 failed, 2 invalid arguments, 3 health gate
    failed, 124 timeout, 125 could not execute, 130 cancelled); when the request could not be made,
    one of mdops's own codes (mdops --help). Interrupting mdops (Ctrl-C) leaves the run going.
    """
    if follow and not wait:
        raise click.UsageError(
            "--follow shows the run's lines while mdops waits for its end: not with --no-wait"
        )
    body = {
        "command": command,
        "mode": mode,
        "window": window,
        "profile": profile,
        "config": config_set,
        "reason": reason,
        "enforce": enforce,
        "dry_run": dry_run,
        "timeout_seconds": timeout,
        "request_id": request_id or str(uuid.uuid4()),
    }
    body = {key: value for key, value in body.items() if value is not None}
    logs = out.console if out.human else console(stderr=True)  # with -o json|yaml, stdout has the result only
    emit = (lambda line: whole(logs, render.log_line(line))) if follow else None
    if out.human and wait and not follow:
        # Text, not a str, which Rich would read as markup: a request id may hold brackets ("[/x]").
        with console(stderr=True).status(Text(f"{command} {body['request_id']}: waiting for the end")):
            view = run_and_follow(api, body, wait, emit, say, warn)
    else:
        view = run_and_follow(api, body, wait, emit, say, warn)
    if view is None:
        out.item({"request_id": body["request_id"]}, lambda started: started["request_id"])
        return
    out.show(view, render.result_line if follow else render.run_view)
    code = view["runbook"]["exit_code"]
    if code and Command(command).mutating and not dry_run and _unreported(api, body["request_id"]):
        warn(
            f"{command} {body['request_id']} ended without reporting the state it left: what it changed is "
            "not known, and mdops status shows the state from before it; hint: mdops run health_check "
            "reports it now"
        )
    if code is None and view["runbook"]["status"] == "failed":  # refused without executing: its log says why
        code = ExitCode.SCRIPT_FAILED
    if code is None:
        raise CliError(f"the run {body['request_id']} finished without an exit code", Exit.API_FAILED)
    click.get_current_context().exit(code)


def _unreported(api: Api, request_id: str) -> bool:
    """Whether the finished run left no state it reported (``render.unreported``); execute's answer does
    not say, a read of the run does. A read that fails says nothing: the run's own result stands."""
    try:
        return render.unreported(api.runbook(request_id))
    except CliError:
        return False


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime.datetime | None:
    """``30m``, ``2h``, ``1d`` ago, or an ISO 8601 time with its UTC offset. A time without one is refused:
    the API's times carry their zone's offset (+08:00 by default), and one without could be meant in that
    zone, in UTC or in the machine's, hours apart."""
    if value is None:
        return None
    if match := re.fullmatch(r"(\d+)([smhd])", value):
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match[2]]
        try:
            return datetime.datetime.now(datetime.UTC) - datetime.timedelta(**{unit: int(match[1])})
        except OverflowError:  # before the year 1
            raise click.BadParameter(f"{value!r} is too far back") from None
    return _time(value, "a duration (30m, 2h, 1d) or ")


def _time(value: str, other: str = "") -> datetime.datetime:
    """An ISO 8601 time with its UTC offset, as the API writes its times (``other``: what else the option
    takes, as words)."""
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give {other}an ISO 8601 time with its UTC offset") from None
    if when.tzinfo is None:
        raise click.BadParameter(
            f"{value!r} has no UTC offset: give one, as the API's times do (2026-01-02T10:00+08:00, "
            "or Z for UTC)"
        )
    return when


def _created_at(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime.datetime | None:
    return None if value is None else _time(value)


def _uid(ctx: click.Context, param: click.Parameter, value: str | None) -> uuid.UUID | None:
    """A Runbook's uid as mdops get shows it (any case)."""
    try:
        return None if value is None else uuid.UUID(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a uid (mdops get ID shows the run's)") from None


@cli.command(
    epilog="""\b
Examples:
  mdops runs
  mdops runs --command failover --result failed
  mdops runs --since 2h -o json | jq -r '.[].request_id'
  mdops runs --who alice --limit 500"""
)
@click.option("--command", type=click.Choice([c.value for c in Command]), help="Only runs of this command.")
@click.option("--result", type=click.Choice([s.value for s in RunState]), help="Only runs in this state.")
@click.option(
    "--since",
    metavar="WHEN",
    callback=_since,
    help="Only runs created since: 30m, 2h, 1d, or an ISO 8601 time with its UTC offset "
    "(2026-01-02T10:00+08:00, 2026-01-02T02:00Z).",
)
@click.option("--who", metavar="NAME", help="Only runs whose requester's name contains NAME (any case).")
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, metavar="N", help="At most N runs."
)
@api_options
def runs(
    api: Api,
    out: Output,
    command: str | None,
    result: str | None,
    since: datetime.datetime | None,
    who: str | None,
    limit: int,
) -> None:
    """List the runs, newest first: the N newest that match every filter given.

    They are read from the API's runs list (GET /api/ops/runbooks), a page at a time: every run the
    namespace keeps, however old. -o json gives a list of its entries (status' runbook_history shape).
    """
    filters = {
        "command": command,
        "status": result,
        "requested_by": who,
        "since": since and since.isoformat(),
    }
    given = {k: v for k, v in filters.items() if v}
    found = api.runs(given, limit)
    if out.human and not found:  # not a table of headers alone
        out.console.print("no runs match the filters" if given else "no runs")
        return
    out.show(found, render.runs_table)


def _request_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """An empty id is no run's: refused here, in words, rather than sent as the path ``/api/ops/runbooks/``
    (which the API answers 404, as it does an unknown run)."""
    if not value:
        raise click.BadParameter("the request id is empty")
    return value


@cli.command(
    epilog="\b\nExamples:\n  mdops get hc-2025-09-22\n  mdops get hc-2025-09-22 -o json | jq .health"
)
@click.argument("request_id", callback=_request_id)
@api_options
def get(api: Api, out: Output, request_id: str) -> None:
    """Show one run: who asked for it and why, its parameters, created (for --created-at), uid (for
    --uid), result, what it waits for, health, the state it left, last log lines."""
    out.show(api.runbook(request_id), render.run_view)


@cli.command(
    epilog='\b\nExamples:\n  mdops logs hc-2025-09-22\n  mdops logs "$(mdops run drill --no-wait)" -f'
)
@click.argument("request_id", callback=_request_id)
@click.option("-f", "--follow", is_flag=True, help="Go on printing new lines until the run has finished.")
@verbose_option
@api_options
def logs(api: Api, out: Output, say: Say, warn: Say, request_id: str, follow: bool) -> None:
    """Print a run's log lines (-f: until its end).

    The API keeps a run's last 50 lines. -o json: one JSON object per line.
    """

    def emit(line: dict) -> None:
        out.item(line, render.log_line)

    if follow:
        follow_logs(api, request_id, emit, say, warn)
    else:
        lines = api.runbook(request_id)["runbook"]["logs"]
        for line in lines:
            emit(line)
        if not lines:  # said on standard error: standard output stays the lines, none
            warn(f"run {request_id} has no log lines (yet: -f waits for them)")


COMMENT = click.option("--comment", default="", metavar="TEXT", help="Why, for the audit.")
CREATED_AT = click.option(
    "--created-at",
    metavar="TIME",
    callback=_created_at,
    help="The run decided on: its creation time as mdops get showed it (created; mdops runs shows it whole "
    "on a terminal wide enough, and with -o json). If its request id names another run now (deleted, or "
    "expired or rejected, and asked for again), nothing is decided (exit 73).",
)
UID = click.option(
    "--uid",
    metavar="UID",
    callback=_uid,
    help="The run decided on: its uid as mdops get showed it. As --created-at, and it also tells apart a run "
    "asked for again within the second the one seen was created in.",
)


@cli.command(
    epilog="\b\nExamples:\n  mdops approve fo-2026-12-03 --comment 'checked with the desk'\n"
    "  mdops runs --result queued   # what waits, approvals among it\n"
    "  mdops approve fo-2026-12-03 --created-at 2026-12-03T09:15:02+08:00   # that run, not one made again\n"
    "  mdops get fo-2026-12-03   # who asked, its parameters, created, uid\n"
    "  mdops approve fo-2026-12-03 --uid 3f0c9a2e-5b1d-4c7e-8f2a-6d4b1e9c0a37   # the run mdops get showed"
)
@click.argument("request_id", callback=_request_id)
@COMMENT
@CREATED_AT
@UID
@api_options
def approve(
    api: Api,
    out: Output,
    request_id: str,
    comment: str,
    created_at: datetime.datetime | None,
    uid: uuid.UUID | None,
) -> None:
    """Approve another person's run that waits for approvals (four eyes).

    Needs a token with runbooks:approve; nobody approves their own run (exit 77). The run starts once
    it has the approvals its RunbookPolicy asks for; too late (it started), already decided by this
    token, no approval asked for, or (--created-at, --uid) not the run seen: exit 73. Without them, the
    decision is on the run the request id names when the API looks (mdops reads no run first: what it
    would read a moment before is what the API checks anyway).
    """
    out.show(api.decide(request_id, "approve", comment, created_at, uid), render.decision_line)


@cli.command(epilog="\b\nExamples:\n  mdops reject fo-2026-12-03 --comment 'not during the auction'")
@click.argument("request_id", callback=_request_id)
@COMMENT
@CREATED_AT
@UID
@api_options
def reject(
    api: Api,
    out: Output,
    request_id: str,
    comment: str,
    created_at: datetime.datetime | None,
    uid: uuid.UUID | None,
) -> None:
    """Reject a run that has not started: it ends failed (Rejected), never run.

    Needs a token with runbooks:approve; one's own run too (a withdrawal). A rejection wins over any
    approvals, until the run starts.
    """
    out.show(api.decide(request_id, "reject", comment, created_at, uid), render.decision_line)


@cli.command(
    epilog="""\b
Examples:
  mdops cancel fo-2026-12-03 --reason 'primary is back'   wait for the run's end; exit 0 once cancelled
  mdops cancel fo-2026-12-03 --no-wait                     return once the cancel is recorded
  mdops get fo-2026-12-03                                  who asked, its parameters, created, uid
  mdops cancel fo-2026-12-03 --uid 3f0c9a2e-5b1d-4c7e-8f2a-6d4b1e9c0a37   only the run mdops get showed"""
)
@click.argument("request_id", callback=_request_id)
@click.option("--reason", default="", metavar="TEXT", help="Why, for the audit.")
@click.option(
    "--uid",
    metavar="UID",
    callback=_uid,
    help="The run cancelled: its uid as mdops get showed it. If its request id names another run now (the "
    "one seen was deleted and asked for again), nothing is cancelled (exit 73).",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Follow the run to its end, or return as soon as the cancel is recorded.",
)
@verbose_option
@api_options
def cancel(
    api: Api,
    out: Output,
    say: Say,
    warn: Say,
    request_id: str,
    reason: str,
    uid: uuid.UUID | None,
    wait: bool,
) -> None:
    """Cancel a run: one not started never starts, one running is stopped (exit code 130).

    Needs the execute permission for the run's command. The Runbook stays, with its record. Unless
    --no-wait, follows the run to its end and exits 0 once it ended cancelled; a run that had finished
    (nothing to cancel), or that ended otherwise before the stop reached it, is said with its outcome, and
    the exit status is 73; so is, with --uid, a run that is not the one seen (nothing cancelled). Without
    --uid, the cancel is of the run the request id names when the API looks. Interrupting mdops (Ctrl-C)
    leaves the cancel recorded.
    """
    code, view = api.cancel(request_id, reason, uid)
    if code == 200:
        warn(f"{request_id} was already cancelled: nothing changed")
    if not wait:
        out.show(view, render.cancel_line)
        return
    if out.human:
        with console(stderr=True).status(Text(f"{request_id}: cancelled, waiting for the end")):
            view = follow_logs(api, request_id, None, say, warn)
    else:
        view = follow_logs(api, request_id, None, say, warn)
    out.show(view, render.run_view)
    if render.succeeded_reason(view) != Reason.CANCELLED:
        raise CliError(
            f"{request_id} ended before the cancel reached it: {render.ending(view)}",
            Exit.CONFLICT,
            status=409,
        )


@cli.command(epilog="\b\nExamples:\n  mdops status\n  mdops status -o json | jq .last_exit_codes")
@api_options
def status(api: Api, out: Output) -> None:
    """Show the environment's state and recent runs.

    The environment mode, active profile and window, the last runbook, the last exit code of each
    command, the last health report and the most recent runs.
    """
    body = api.status()
    out.show(body, render.status_view)


@cli.command(
    epilog="\b\nExamples:\n  mdops schedules\n  mdops schedules --slots 5 -o json | jq '.[].next_slots'"
)
@click.option("--slots", type=click.IntRange(0, 20), default=1, show_default=True, help="Next slots shown.")
@api_options
def schedules(api: Api, out: Output, slots: int) -> None:
    """List the RunbookSchedules: their trigger, next slots, last run and result.

    -o json gives the API's list of schedules.
    """
    answer = api.schedules(slots)
    found = answer["schedules"]
    if answer["truncated"]:  # the API lists one page of them (200): not every schedule is here
        click.echo(f"mdops: the API listed its first {len(found)} schedules only: there are more", err=True)
    if out.human and not found:  # not a table of headers alone
        out.console.print("no schedules")
        return
    out.show(found, render.schedules_table)


# -- metrics ---------------------------------------------------------------------------------------


@cli.command(epilog="\b\nExamples:\n  mdops metrics\n  mdops metrics --watch --interval 2")
@click.option("-w", "--watch", "watching", is_flag=True, help="Refresh until interrupted (Ctrl-C).")
@click.option(
    "--interval",
    type=Seconds(0.5),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="Seconds between refreshes with --watch.",
)
@api_options
def metrics(api: Api, out: Output, watching: bool, interval: float) -> None:
    """Show the console overview's five metrics.

    From Prometheus, through the API; a metric without a recent sample is stale.

    With --watch and -o json: one JSON object per refresh, a line each. While watching, an API that cannot
    be reached for a while (restarting, say) is said on standard error and asked again until it answers.
    """
    if not watching:
        out.show(api.summary(), render.metrics_table)
        return
    refreshes = watch(api.summary, interval, say=warn)
    try:
        if out.human and out.console.is_terminal:
            with Live(console=out.console, auto_refresh=False) as live:
                for summary in refreshes:
                    live.update(render.metrics_table(summary), refresh=True)
        else:
            for summary in refreshes:
                out.item(summary, render.metrics_table)
    except KeyboardInterrupt:
        return


@cli.command(
    epilog="""\b
Examples:
  mdops chart md_throughput_mps
  mdops chart md_subscription_coverage_ratio --minutes 360 --step 300
  mdops chart consumer_backlog_messages -o json

\b
Metrics: md_subscription_coverage_ratio, md_subscription_{expected,active,matched,ignored}_total,
md_throughput_mps, md_failover_latency_ms, consumer_backlog_messages, md_feed_up, md_runbook_exit_code
(the API's list: a name it does not know is refused with the list)."""
)
@click.argument("metric")
@click.option("--minutes", type=click.IntRange(1, 10080), default=60, show_default=True, help="How far back.")
@click.option(
    "--step",
    type=click.IntRange(1, 3600),
    default=60,
    show_default=True,
    metavar="SECONDS",
    help="Seconds between samples.",
)
@click.option(
    "--height", type=click.IntRange(5, 200), default=20, show_default=True, help="Lines of the chart."
)
@api_options
def chart(api: Api, out: Output, metric: str, minutes: int, step: int, height: int) -> None:
    """Draw a metric's recent samples in the terminal.

    The samples of METRIC (its maximum over series), in the API's time zone (exchange time).
    """
    series = api.timeseries(metric, minutes, step)
    if out.human and not any(p["value"] is not None for p in series["points"]):
        out.console.print(f"{metric}: no samples in the last {minutes} minutes")
        return
    out.show(series, lambda body: render.chart(body, min(out.console.width, 160), height))


# -- config ----------------------------------------------------------------------------------------


@cli.group(
    epilog=f"""\b
Examples:
  . .mdops/stack.env
  mdops config set-context local --url "${URL_ENV}" --token - <<< "${TOKEN_ENV}"
  mdops config set-context viewer --url "${URL_ENV}" --token - <<< "$MDOPS_API_VIEWER_TOKEN"
  mdops config use-context local
  mdops config get-contexts
  mdops status --context viewer"""
)
def config() -> None:
    """Manage named contexts: an API URL and a token.

    Contexts are like kubeconfig's. The file is $MDOPS_CONFIG, else ~/.config/mdops/config.yaml. It
    holds tokens: mdops writes it with mode 0600 and refuses to use it when others may read or change
    it. The current context is used when MDOPS_API_URL is not set; --context NAME picks another.
    """


def _config() -> Config:
    return Config.load(config_path(os.environ))


def _api_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and (problem := url_problem(value)):
        raise click.BadParameter(f"{shown_url(value)!r} {problem}")
    return value


@config.command("set-context")
@click.argument("name")
@click.option(
    "--url", metavar="URL", callback=_api_url, help="The API's base URL, http(s) (needed for a new context)."
)
@click.option(
    "--token", metavar="TOKEN", help="Bearer token; - reads it from standard input (not seen in ps)."
)
def set_context(name: str, url: str | None, token: str | None) -> None:
    """Add the context NAME, or change its URL or token."""
    if token == "-":
        token = sys.stdin.readline()
    if token is not None:
        token = token.strip()  # a line end kept from a file or a paste
        if token == "":
            raise click.BadParameter("the token is empty", param_hint="'--token'")
        if not is_token(token):
            raise click.BadParameter(
                "the token has a character outside visible ASCII (! to ~), which no API token has",
                param_hint="'--token'",
            )
    settings = _config()
    entry = settings.file.contexts.get(name)
    if entry is None and url is None:
        raise click.UsageError(f"the new context {name!r} needs --url")
    settings.file.contexts[name] = ContextEntry(
        url=url or entry.url, token=token if token is not None else (entry.token if entry else "")
    )
    settings.save()
    click.echo(f"context {name!r} {'added' if entry is None else 'changed'} in {settings.path}")


@config.command("use-context")
@click.argument("name")
def use_context(name: str) -> None:
    """Make NAME the current context."""
    settings = _config()
    settings.context(name)  # refuses an unknown name
    settings.file.current_context = name
    settings.save()
    click.echo(f"current context: {name}")


@config.command("current-context")
def current_context() -> None:
    """Print the current context's name."""
    name = _config().file.current_context
    if name is None:
        raise CliError("no current context", Exit.CONFIG, "mdops config use-context NAME")
    click.echo(name)


@config.command("get-contexts")
def get_contexts() -> None:
    """List the contexts (the current one marked *)."""
    settings = _config()
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("CURRENT", "NAME", "URL"):
        table.add_column(column)
    for name, entry in sorted(settings.file.contexts.items()):
        table.add_row("*" if name == settings.file.current_context else "", name, shown_url(entry.url))
    Output("table").print(table)


@config.command("delete-context")
@click.argument("name")
def delete_context(name: str) -> None:
    """Remove the context NAME (and make no context current if it was)."""
    settings = _config()
    settings.context(name)
    del settings.file.contexts[name]
    if settings.file.current_context == name:
        settings.file.current_context = None
    settings.save()
    click.echo(f"context {name!r} deleted from {settings.path}")


@config.command("view")
def view() -> None:
    """Print the config file, tokens and the passwords of URLs redacted."""
    click.echo(yaml.safe_dump(_config().dump(redact=True), sort_keys=False), nl=False)


# -- completion ------------------------------------------------------------------------------------


@cli.command(
    epilog="""\b
Examples:
  eval "$(mdops completion bash)"                          in ~/.bashrc
  eval "$(mdops completion zsh)"                           in ~/.zshrc
  mdops completion fish > ~/.config/fish/completions/mdops.fish"""
)
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script of SHELL.

    Generated by click: commands, options and their values complete.
    """
    click.echo(get_completion_class(shell)(cli, {}, "mdops", COMPLETE_VAR).source())


def main() -> None:
    """mdops, or kubectl mdops as kubectl runs it (kubectl-mdops)."""
    invoked = os.path.basename(sys.argv[0])
    cli.main(prog_name="kubectl mdops" if invoked == "kubectl-mdops" else "mdops", complete_var=COMPLETE_VAR)
