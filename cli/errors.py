"""mdops's exit codes and its one error type.

``mdops run`` exits with the runbook's exit code (0, 1, 2, 3, 124, 125, 130: the runner's contract), so a
pipeline can branch on it. When mdops could not get an answer about a run, it exits with one of its own
codes instead, taken from the BSD ``sysexits`` range so that they never collide with a runbook's; and 141,
as a shell reports a command that SIGPIPE ended, when what reads its output has gone (``mdops ... | head``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import IntEnum
from typing import Any

import click

from cli.main import INTERRUPTED
from runbooks.contract import ExitCode, reason_of


class Exit(IntEnum):
    USAGE = 64
    INVALID = 65
    NOT_FOUND = 66
    UNAVAILABLE = 69
    API_FAILED = 70
    CONFLICT = 73
    NOT_ALLOWED = 77
    CONFIG = 78
    PIPE = 141


MEANINGS = {
    Exit.USAGE: "usage: an unknown option or a bad value on mdops's command line",
    Exit.INVALID: "the API refused the request as invalid (422)",
    Exit.NOT_FOUND: "not found (404): no run has that request id",
    Exit.UNAVAILABLE: (
        "the API cannot be reached, timed out, or is not ready (503); "
        "or the token is past its rate or its cap of unfinished runs, or the namespace at its cap (429)"
    ),
    Exit.API_FAILED: (
        "the API failed (500) or gave an answer mdops does not understand; or mdops failed unexpectedly"
    ),
    Exit.CONFLICT: (
        "conflict (409): the request id was already used with other parameters; approve or reject: not "
        "the run seen (--created-at, --uid), too late, already decided, or no approval asked for; cancel: "
        "not the run seen (--uid), the run had finished, or ended otherwise before the stop reached it"
    ),
    Exit.NOT_ALLOWED: "not allowed: the token is missing or wrong (401) or lacks the permission (403)",
    Exit.CONFIG: (
        "configuration: no API URL or token, an unknown context, or a config file unsafe, unreadable or "
        "unwritable"
    ),
    Exit.PIPE: "what read mdops's output (head, say) closed it first: mdops stopped, saying nothing",
}
RUNBOOK_CODES = ", ".join(str(int(code)) for code in ExitCode)
# Control characters (C0 but tab, DEL, C1) in text from the API (a script's output, the API's messages,
# which name what they were given): an escape sequence would act on the terminal that shows it (clear it,
# set its title or clipboard), a line end would make two lines of one. They are shown escaped (\x1b), and
# so are the bidirectional embeddings, overrides and isolates (\u202e), which would reorder what the
# reader sees (a script's log line may hold them; the Runbook's own fields may not).
CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
DETAIL_CHARACTERS = 1000  # of the API's message in an error: the API's are far shorter; a broken server's


def escaped(text: str) -> str:
    """Text from the API as shown (a log line, a health report, a status message, an error, any field):
    its control characters escaped."""
    return CONTROL.sub(lambda m: repr(m[0])[1:-1], text)


def runbook_meaning(code: int) -> str:
    """``3`` -> ``health gate failed``: the reason of a run that ended with this exit code, in words."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", reason_of(code)).lower()


def help_table() -> str:
    """The table at the end of ``mdops --help`` (click keeps the lines of a paragraph marked ``\\b``)."""
    rows = [f"  {RUNBOOK_CODES}  mdops run: the runbook's exit code (1: refused, not run)"]
    rows += [f"  {int(code):<{len(RUNBOOK_CODES)}}  {meaning}" for code, meaning in MEANINGS.items()]
    return "\b\nExit codes:\n" + "\n".join(rows)


def markdown_table() -> str:
    """The same table for the README (``make generate``)."""
    rows = ["| code | meaning |", "|-----:|---------|"]
    rows.append(
        f"| {RUNBOOK_CODES} | `mdops run`: the runbook's exit code ([Exit codes](#exit-codes)); 1 for a run "
        "refused without executing (its change window, a rejection, approvals expired: it has no exit code) |"
    )
    rows += [f"| {int(code)} | {meaning} |" for code, meaning in MEANINGS.items()]
    return "\n".join(rows)


class CliError(click.ClickException):
    """Every failure mdops reports: one line in words (with the API's own message), a hint, an exit code.

    Messages are built from what the API answered and from the connection's URL and source; never from
    the token."""

    def __init__(
        self,
        message: str,
        code: int,
        hint: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.exit_code = int(code)
        self.hint = hint
        self.status = status  # the API's HTTP status, when it answered
        self.retry_after = retry_after  # the seconds its Retry-After said, if any

    def line(self) -> str:
        return escaped(f"mdops: {self.message}" + (f"; hint: {self.hint}" if self.hint else ""))

    def show(self, file: Any = None) -> None:
        click.echo(self.line(), err=True, file=file)


def interrupted(message: str = "interrupted", hint: str | None = None) -> CliError:
    """The error of a Ctrl-C (exit 130; a Ctrl-C again changes nothing: :mod:`cli.main`)."""
    return CliError(message, INTERRUPTED, hint)


def detail_of(body: Any) -> str:
    """The API's ``detail`` in words: a string as it is; FastAPI's list of validation errors as
    ``field: message`` pairs."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for error in detail:
            if not isinstance(error, dict):  # another server's list: what it holds is not said
                continue
            loc, message = error.get("loc"), error.get("msg")
            where = ".".join(str(p) for p in loc if p != "body") if isinstance(loc, list) else ""
            message = message if isinstance(message, str) else ""
            if where or message:
                parts.append(f"{where}: {message}" if where else message)
        return "; ".join(parts)
    return ""


# What each HTTP status of the API means for mdops: exit code, words, hint.
_ANSWERS: dict[int, tuple[Exit, str, str]] = {
    401: (Exit.NOT_ALLOWED, "the API refused the token", "check the token ({source})"),
    403: (Exit.NOT_ALLOWED, "not allowed", "use a token that has the permission (--context, --token)"),
    404: (Exit.NOT_FOUND, "not found", "`mdops runs` lists the recent request ids"),
    409: (Exit.CONFLICT, "conflict", "give a new --request-id to run again"),
    422: (Exit.INVALID, "the API refused the request", "see the command's --help"),
    429: (Exit.UNAVAILABLE, "too many requests", "try again later"),
    503: (Exit.UNAVAILABLE, "the API is not ready", "try again in a moment; `mdops status` shows when it is"),
}


def retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header's seconds (the API's form; an HTTP date or anything else: None)."""
    return float(value) if value is not None and value.strip().isdigit() else None


def answer_error(status: int, body: Any, source: str, headers: Mapping[str, str] | None = None) -> CliError:
    """The error for an API answer that is not a success (pure: status, body and headers in, error out)."""
    headers = headers or {}
    if 300 <= status < 400:  # the API redirects nowhere: another server (https only, a sign-in page)
        where = headers.get("Location", "nowhere said")
        return CliError(
            f"the server at the URL redirects ({status}) to {where}: not an answer of the mdops API",
            Exit.API_FAILED,
            f"is the URL the mdops API's? ({source})",
            status,
        )
    retry = retry_after(headers.get("Retry-After"))
    detail = detail_of(body) or f"HTTP {status}"
    if len(detail) > DETAIL_CHARACTERS:
        detail = f"{detail[:DETAIL_CHARACTERS]}... ({len(detail) - DETAIL_CHARACTERS} more characters)"
    if status == 404 and not detail_of(body):  # the API's 404s all say what is missing: another server's
        return CliError(
            "not found (404) without the API's detail: not an answer of the mdops API",
            Exit.API_FAILED,
            f"is the URL the mdops API's? ({source})",
            status,
        )
    if status in _ANSWERS:
        code, words, hint = _ANSWERS[status]
        return CliError(f"{words} ({status}): {detail}", code, hint.format(source=source), status, retry)
    if status in (502, 504):
        return CliError(
            f"the API is unavailable ({status}): {detail}", Exit.UNAVAILABLE, "try again later", status
        )
    if 400 <= status < 500:
        return CliError(f"the API refused the request ({status}): {detail}", Exit.INVALID, status=status)
    return CliError(
        f"the API failed ({status}): {detail}",
        Exit.API_FAILED,
        "the API's log says more; try again later",
        status,
    )
