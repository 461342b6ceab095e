"""Benchmark: where a command's CPU goes, by program: ``make test``'s, for one.

    python -m bench.cpu_by_process [--interval 0.5] [--top 20] [--out FILE] -- make test

Runs the command, and while it runs reads every process's CPU time (``/proc/<pid>/stat``) each
``--interval`` seconds. Each process that started after the command did counts, under its program:
the executable's name, or for Python the module it runs (``python -m controller`` is
``python -m controller``; a pytest-xdist worker, started with ``-c``, is ``python -c``). A process's
last reading is its CPU: a process that lives less than an interval may be missed, and so is what one
spends after its last reading. The report compares the sum with the CPU of the processes the command
waited for, its children's and theirs (``rusage``), which misses none of those: about how much the
sample saw. Processes of other work started meanwhile count too: run it on a quiet machine.

The command's own exit code is this one's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def program(argv: list[str]) -> str:
    """The name a process's CPU is counted under, from its command line."""
    name = Path(argv[0]).name
    if not name.startswith("python"):
        return name
    rest = iter(argv[1:])
    for arg in rest:
        if arg == "-m":
            return f"python -m {next(rest, '')}".rstrip()
        if arg == "-c":
            return "python -c"
        if arg in ("-X", "-W"):  # an option that takes the next argument
            next(rest, None)
        elif not arg.startswith("-"):
            return f"python {Path(arg).name}"
    return "python"


def stat(pid: int | str) -> tuple[int, float]:
    """A process's start (clock ticks since boot) and CPU seconds (user and system); OSError if gone."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the name, in parentheses, may hold spaces
    return int(fields[19]), (int(fields[11]) + int(fields[12])) / TICKS


def command_line(pid: str) -> list[str]:
    """A process's arguments, the first one its executable's path where it can be read: chromium's helpers
    (a browser test's) write their own title over their command line, which then names no program."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    argv = [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]
    with contextlib.suppress(OSError):
        argv[:1] = [os.readlink(f"/proc/{pid}/exe")] if argv else []
    return argv


class Ledger:
    """The last CPU reading of each process seen, by (pid, start): a pid used again is another process."""

    def __init__(self, since: int):
        self.since = since  # clock ticks since boot: processes started before are not counted
        self.seen: dict[tuple[str, int], tuple[str, float]] = {}

    def observe(self, pid: str, start: int, cpu: float, argv: list[str] | None) -> None:
        if start < self.since:
            return
        key = (pid, start)
        if key in self.seen:
            self.seen[key] = (self.seen[key][0], cpu)
        elif argv:  # a zombie or a process mid-exec has no command line yet: read next time
            self.seen[key] = (program(argv), cpu)

    def sample(self) -> None:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                start, cpu = stat(pid)
            except OSError:
                continue  # gone meanwhile
            self.observe(pid, start, cpu, None if (pid, start) in self.seen else command_line(pid))

    def totals(self) -> Counter[str]:
        totals: Counter[str] = Counter()
        for name, cpu in self.seen.values():
            totals[name] += cpu
        return totals


def boot_ticks_now() -> int:
    """Clock ticks since boot now, in the unit of /proc/<pid>/stat's start time."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * TICKS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between readings (0.5)")
    parser.add_argument("--top", type=int, default=20, help="programs listed (20)")
    parser.add_argument("--out", type=Path, help="write every program's CPU seconds here, as JSON")
    parser.add_argument("command", nargs="+", help="the command, after --")
    args = parser.parse_args(argv)

    ledger = Ledger(boot_ticks_now())
    started = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = subprocess.Popen(args.command)
    while command.poll() is None:
        ledger.sample()
        time.sleep(args.interval)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    waited = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    totals = ledger.totals()
    sampled = sum(totals.values())
    print(f"\n{' '.join(args.command)}: exit {command.returncode}, {wall:.0f} s", file=sys.stderr)
    print(f"CPU of the processes it waited for {waited:.0f} s, sampled {sampled:.0f} s", file=sys.stderr)
    for name, cpu in totals.most_common(args.top):
        print(f"{cpu:8.1f} s {cpu / sampled:6.1%}  {name}", file=sys.stderr)
    if args.out:
        report = {"command": args.command, "exit": command.returncode, "wall_s": wall, "waited_cpu_s": waited}
        report["cpu_s"] = dict(totals.most_common())
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return command.returncode


if __name__ == "__main__":
    sys.exit(main())
