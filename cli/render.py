"""What people see: the API's shapes as Rich tables and text, and a chart drawn by plotext.

Pure functions from API bodies to renderables; printing (and whether there is colour: only on a
terminal, never with ``NO_COLOR``) is Rich's business. ``-o json|yaml`` bypasses all of this.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from cli.errors import escaped, runbook_meaning
from runbooks.contract import RunState, parse_time

STATUS_STYLES = {
    RunState.SUCCESS: "green",
    RunState.FAILED: "bold red",
    RunState.RUNNING: "cyan",
    RunState.QUEUED: "yellow",
}
LEVEL_STYLES = {"DEBUG": "dim", "INFO": "", "WARNING": "yellow", "ERROR": "bold red"}


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return escaped(str(value))


def state(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, "dim"))


def outcome(runbook: dict[str, Any]) -> Text:
    """``failed (exit code 3: gate failed)``, ``success (exit code 0)``, ``running``, ``failed (not run)``."""
    text = state(runbook["status"])
    code = runbook.get("exit_code")
    if code is not None:
        text.append(f" (exit code {code}" + ("" if code == 0 else f": {runbook_meaning(code)}") + ")")
    elif runbook["status"] == "failed":  # refused by a change window or a person: its log says why
        text.append(" (not run)")
    return text


def ending(view: dict[str, Any]) -> str:
    """How a finished run ended, in words: ``success, exit code 0``; ``failed, Rejected`` (no exit code:
    refused without executing, its reason says why)."""
    runbook = view["runbook"]
    if runbook.get("exit_code") is not None:
        return f"{runbook['status']}, exit code {runbook['exit_code']}"
    reason = succeeded_reason(view)
    return f"{runbook['status']}, {reason}" if reason else runbook["status"]


def succeeded_reason(view: dict[str, Any]) -> str | None:
    """The reason of the run's Succeeded condition (why it ended, or waits), if it has one."""
    return next((c["reason"] for c in view.get("conditions") or [] if c.get("type") == "Succeeded"), None)


def _cancelled(cancel: dict[str, Any]) -> str:
    """``by bob: wrong venue``: who cancelled a run, and why."""
    why = f": {cancel['reason']}" if cancel.get("reason") else ""
    return escaped(f"by {cancel.get('requested_by') or '-'}{why}")


def cancel_line(view: dict[str, Any]) -> Text:
    """``cancel of fo-1 recorded, by bob: wrong venue (running)``: a cancel asked for, not followed."""
    runbook = view["runbook"]
    recorded = (
        f"cancel of {escaped(runbook['request_id'])} recorded, {_cancelled(view.get('cancel') or {})} ("
    )
    return Text.assemble(recorded, state(runbook["status"]), ")")


def result_line(view: dict[str, Any]) -> Text:
    """``health_check hc-1: success (exit code 0)``: the end of a followed run."""
    runbook = view["runbook"]
    return Text.assemble(f"{runbook['command']} {runbook['request_id']}: ", outcome(runbook))


def decision_line(decision: dict[str, Any]) -> Text:
    """``approved fo-1 (asked for by alice), as bob: checked with the desk``: a decision made."""
    done = "approved" if decision["decision"] == "Approve" else "rejected"
    comment = f": {decision['comment']}" if decision["comment"] else ""
    return Text(
        escaped(
            f"{done} {decision['request_id']} (asked for by {decision['requester']}), "
            f"as {decision['approver']}{comment}"
        ),
        style="green" if done == "approved" else "bold red",
    )


def log_line(line: dict[str, str]) -> Text:
    level = line.get("level", "INFO")
    # Never wrapped by Rich (a terminal wraps it; a pipe gets it whole).
    return Text.assemble(
        (f"{level:<8}", LEVEL_STYLES.get(level, "")),
        escaped(line.get("message", "")),
        no_wrap=True,
        overflow="ignore",
    )


def _fields(rows: list[tuple[str, RenderableType | str]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for name, value in rows:
        grid.add_row(name, value)
    return grid


def _inline(mapping: dict[str, Any] | None) -> str:
    """``key value · key value``; a health report's gate as ``gate passed`` or its failures."""
    if not mapping:
        return "-"
    parts = []
    for key, value in mapping.items():
        if key == "note":
            parts.append(_text(value))
        elif key == "gate" and isinstance(value, dict):
            verdict = "passed" if value.get("passed") else "FAILED: " + ", ".join(value.get("failures", []))
            parts.append(f"gate {verdict}" + (" (enforced)" if value.get("enforced") else ""))
        else:
            parts.append(f"{key} {_text(value)}")
    return escaped(" · ".join(parts))


def _parameters(runbook: dict[str, Any]) -> str:
    """``profile primary · mode live · window auto · config backup · enforce · dry run``: what is set."""
    named = [f"{key} {runbook[key]}" for key in ("profile", "mode", "window", "config") if runbook.get(key)]
    flags = [flag for flag, key in (("enforce", "enforce"), ("dry run", "dry_run")) if runbook.get(key)]
    return escaped(" · ".join(named + flags)) or "-"


def unreported(view: dict[str, Any]) -> bool:
    """Whether a run (as ``GET /api/ops/runbooks/{request_id}`` shows it) may have changed the platform and
    ended without reporting the state it left: the API says so (``state_unreported``)."""
    return view.get("state_unreported") is True


def _left(view: dict[str, Any]) -> RenderableType:
    """The environment state a run reported (mode / profile / window), or, when it may have changed the
    platform without reporting one, that it is not known."""
    if unreported(view):
        return Text(
            "not reported: what it changed is not known (mdops run health_check reports it)", style="yellow"
        )
    state = view["state"] or {}
    keys = ("environment_mode", "active_profile", "active_window")
    return " / ".join(_text(state.get(k)) for k in keys) + "   (mode / profile / window)" if state else "-"


def run_view(view: dict[str, Any]) -> RenderableType:
    """One run: what, how it ended, health, logs; as a read of it (``GET /api/ops/runbooks/{request_id}``)
    also who asked for it and why, its parameters, when it was created (as ``--created-at`` takes it) and its
    uid, which execute's answer does not say."""
    runbook = view["runbook"]
    waits = runbook.get("message") if runbook["status"] in (RunState.PENDING, RunState.QUEUED) else None
    why = f": {runbook['reason']}" if runbook.get("reason") else ""
    read = (
        [
            ("asked by", escaped(f"{runbook['requested_by'] or '-'}{why}")),
            ("parameters", _parameters(runbook)),
            ("created", _text(runbook["created_at"])),
            ("uid", _text(runbook["uid"])),
        ]
        if "created_at" in runbook
        else []
    )
    fields = _fields(
        [
            ("request id", runbook["request_id"]),
            ("command", runbook["command"]),
            *read,
            ("result", outcome(runbook)),
            *([("waits", escaped(waits))] if waits else []),
            *([("cancelled", _cancelled(view["cancel"]))] if view.get("cancel") else []),
            ("finished", _text(runbook.get("finished_at"))),
            ("health", _inline(view.get("health"))),
            *([("state", _left(view))] if "state" in view else []),
        ]
    )
    logs = [log_line(line) for line in runbook.get("logs", [])]
    return Group(fields, Text("logs", style="bold"), *logs) if logs else fields


RUNS_COLUMNS = ("REQUEST ID", "COMMAND", "RESULT", "EXIT", "PROFILE", "WINDOW", "BY", "CREATED", "NOTE")
COMPACT_COLUMNS = ("REQUEST ID", "COMMAND", "RESULT", "EXIT", "CREATED")  # then a line of the others
NOTE_ROOM = 20  # the least the table's NOTE column wraps in; with less room, the compact form
BY_AND_PARAMETERS = (("by", "BY"), ("profile", "PROFILE"), ("window", "WINDOW"))
GAP = 2  # between two columns (Rich's padding of one each side)


def runs_table(runs: list[dict[str, Any]]) -> RenderableType:
    return _RunsTable(runs)


class _RunsTable:
    """The runs as the console's width lets them read: a table, its notes wrapped in their column, where
    every other column fits whole and the notes have room; else, compact, a line each with what tells a
    run apart (request id, command, result, exit code, created as month-day hour:minute, in the API's
    zone), and under it who asked, its parameters and its note, wrapped. Nothing is broken in the middle
    of an id or a time (a table squeezed into 80 columns broke them over lines), nor cut at the edge."""

    def __init__(self, runs: list[dict[str, Any]]):
        self.runs = runs

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        rows = [_run_cells(run, whole_time=True) for run in self.runs]
        widths = _widths(rows, RUNS_COLUMNS[:-1])
        if sum(widths) + GAP * len(widths) + min(_widths(rows, ["NOTE"])[0], NOTE_ROOM) <= options.max_width:
            table = Table(box=None, header_style="bold", pad_edge=False)
            for column in RUNS_COLUMNS:
                table.add_column(column, no_wrap=column != "NOTE")
            for row in rows:
                table.add_row(*row.values())
            yield table
            return
        rows = [_run_cells(run, whole_time=False) for run in self.runs]
        widths = _widths(rows, COMPACT_COLUMNS)
        rest = sum(widths[1:]) + GAP * len(widths[1:])
        # A request id too long for the line (a schedule's) is a line of its own, its run's cells under it.
        widths[0] = min(widths[0], max(options.max_width - rest, cell_len(COMPACT_COLUMNS[0])))

        def lines(cells: list[Text]) -> Iterator[Text]:
            text = Text()
            for cell, width in zip(cells, widths, strict=True):
                if cell.cell_len > width:
                    yield cell
                    cell = Text()
                text.append_text(cell)
                text.append(" " * (width - cell.cell_len + GAP))
            text.rstrip()
            yield text

        yield from lines([Text(column, style="bold") for column in COMPACT_COLUMNS])
        for row in rows:
            yield from lines([row[column] for column in COMPACT_COLUMNS])
            said = [f"{key} {row[column]}" for key, column in BY_AND_PARAMETERS if row[column].plain != "-"]
            details = Text(" · ".join(said + ([row["NOTE"].plain] if row["NOTE"] else [])))
            yield Padding(details, (0, 0, 0, 2), expand=False)  # its lines wrapped under its first


def _run_cells(run: dict[str, Any], whole_time: bool) -> dict[str, Text]:
    """The runs list's entry as the cells of its columns; created as given, or as month-day hour:minute."""
    flags = [flag for flag, on in (("dry run", run["dry_run"]), ("enforce", run["enforce"])) if on]
    # Why a run that has not started waits (its lock, its change window, approvals), or why one ended
    # without running (refused by its window, a person, its approvals expired): its message.
    refused = run["status"] == RunState.FAILED and run.get("exit_code") is None
    waits = (run["status"] in (RunState.PENDING, RunState.QUEUED) or refused) and run.get("message")
    created = run.get("created_at")
    if not whole_time and (when := parse_time(created)):  # in the API's zone: parse_time keeps its offset
        created = when.strftime("%m-%d %H:%M")
    cells = [
        *(_text(run[key]) for key in ("request_id", "command")),
        state(run["status"]),
        *(_text(run.get(key)) for key in ("exit_code", "profile", "window", "requested_by")),
        _text(created),
        escaped(", ".join(flags + ([waits] if waits else []))),
    ]
    return {
        column: Text(cell) if isinstance(cell, str) else cell
        for column, cell in zip(RUNS_COLUMNS, cells, strict=True)
    }


def _widths(rows: list[dict[str, Text]], columns: Sequence[str]) -> list[int]:
    return [max([cell_len(column)] + [row[column].cell_len for row in rows]) for column in columns]


def schedules_table(schedules: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("NAME", "SCHEDULE", "COMMAND", "NEXT", "LAST", "RESULT", "MISSED", "SKIPPED", "NOTE"):
        table.add_column(column, overflow="fold")
    for schedule in schedules:
        note = "suspended" if schedule["suspended"] else escaped(schedule.get("problem") or "")
        table.add_row(
            schedule["name"],
            _text(schedule.get("schedule")),
            _text(schedule.get("command")),
            "\n".join(schedule.get("next_slots") or []) or "-",
            _text(schedule.get("last_slot")),
            state(schedule["last_result"]) if schedule.get("last_result") else "-",
            str(schedule["missed_slots"]),
            str(schedule["skipped_slots"]),
            note,
        )
    return table


def session_line(session: dict[str, Any] | None) -> str:
    """``XHKG open, closes 2026-01-05T16:00:00+08:00, opens 2026-01-06T09:30:00+08:00``: the venue's session
    in the status, its next close and next open in the order they come."""
    if not session:
        return "-"
    if session.get("state") is None:
        return f"{session['venue']} ({session.get('note') or 'unknown'})"
    changes = [
        (session[key], word)
        for key, word in (("next_close", "closes"), ("next_open", "opens"))
        if session.get(key)
    ]
    if all(parse_time(at) for at, _ in changes):
        changes.sort(key=lambda change: parse_time(change[0]))
    return ", ".join([f"{session['venue']} {session['state']}", *(f"{word} {at}" for at, word in changes)])


def status_view(status: dict[str, Any], recent: int = 5) -> RenderableType:
    """The status: the environment's state with the run that reported it, and the run since then that may
    have changed it without reporting one, if any."""
    last = status.get("last_runbook")
    environment = " / ".join(
        _text(status.get(k)) for k in ("environment_mode", "active_profile", "active_window")
    )
    notes: list[RenderableType] = []
    if reported := status.get("state_reported_by"):
        when = _text(reported["finished_at"])
        notes.append(Text(escaped(f"reported by {reported['command']} {reported['request_id']} at {when}")))
    if stale := status.get("state_stale_by"):
        notes.append(_stale(stale))
    codes = " · ".join(f"{command} {code}" for command, code in status.get("last_exit_codes", {}).items())
    fields = _fields(
        [
            ("environment", f"{environment}   (mode / profile / window)"),
            *(("", note) for note in notes),
            ("venue", session_line(status.get("session"))),
            (
                "last runbook",
                Text.assemble(f"{last['command']} {last['request_id']}  ", outcome(last)) if last else "-",
            ),
            ("exit codes", codes or "-"),
            ("health", _inline(status.get("last_health"))),
            ("updated", _text(status.get("last_updated_at"))),
        ]
    )
    history = status.get("runbook_history", [])[:recent]
    if not history:
        return fields
    return Group(
        fields,
        Text(""),
        Text("recent runs (older ones: mdops runs --limit N)", style="bold"),
        runs_table(history),
    )


def _stale(run: dict[str, Any]) -> Text:
    code = run["exit_code"]
    return Text(
        escaped(
            f"may be stale: {run['command']} {run['request_id']} ended without reporting the state it left "
            f"(exit code {code}: {runbook_meaning(code)}); mdops run health_check reports it now"
        ),
        style="yellow",
    )


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1 else f"{value:,.1f}".removesuffix(".0")
    return f"{value:,}" if isinstance(value, int) else _text(value)


def metrics_table(summary: dict[str, Any]) -> Table:
    """The console overview's five tiles."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("METRIC", "VALUE", "UNIT", "NOTE"):
        table.add_column(column, justify="right" if column == "VALUE" else "left")
    for name, sample in summary.items():
        stale, context = sample.get("stale"), sample.get("context")
        value = Text(_number(sample.get("value")), style="yellow" if stale else "")
        note = "; ".join((["stale"] if stale else []) + ([_inline(context)] if context else []))
        table.add_row(name, value, _text(sample.get("unit")), note)
    return table


def chart(series: dict[str, Any], width: int, height: int) -> Text:
    """The timeseries response's points (some, with values) drawn as a line; its time axis in the API's
    zone (exchange time)."""
    import plotext as plt  # only `mdops chart` needs it

    points = [p for p in series["points"] if p.get("value") is not None]
    unit = f" ({series['unit']})" if series.get("unit") else ""
    plt.clf()
    plt.plotsize(width, height)
    plt.theme("clear")  # the terminal's own background
    plt.title(f"{series['metric']}{unit}")
    plt.date_form("Y-m-d H:M:S", "H:M:S")
    times = [parse_time(p["timestamp"]).strftime("%Y-%m-%d %H:%M:%S") for p in points]
    plt.plot(times, [p["value"] for p in points], marker="braille")
    if len(set(times)) == 1:  # no span (one sample): plotext would make up an axis, running backwards
        plt.xticks(times[:1], [parse_time(points[0]["timestamp"]).strftime("%H:%M:%S")])
    return Text.from_ansi(plt.build())  # its colours are Rich's to show or not
