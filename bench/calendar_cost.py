"""Benchmark: what the venue calendar costs the controller, in memory and in time.

Each measurement is a fresh Python process that first imports the controller's modules (its baseline),
then either

1. imports exchange_calendars and builds the XHKG calendar over 400 days in-process (what the design
   avoids), or
2. loads the same session table through ``runbooks.calendar.load_table`` (a child process builds it;
   this process keeps only plain datetimes), and answers a state query;

and reports its resident memory (VmRSS, VmHWM) and the times. Medians of ``--runs`` processes.

    python -m bench.calendar_cost [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

MEASURE = """
import datetime, json, time
def memory():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}
import controller.handlers, controller.runs  # the controller's own imports: the baseline
out = {"baseline": memory()}
first = datetime.date.today() - datetime.timedelta(days=35)
last = first + datetime.timedelta(days=400)
t = time.perf_counter()
if MODE == "in-process":
    import exchange_calendars
    out["import_s"] = time.perf_counter() - t
    out["imported"] = memory()
    t = time.perf_counter()
    exchange_calendars.get_calendar("XHKG", start=first, end=last)
    out["build_s"] = time.perf_counter() - t
else:
    from runbooks.calendar import SessionCalendar, load_table
    table = load_table("XHKG", first, last)
    calendar = SessionCalendar(table)
    calendar.state(datetime.datetime.now(datetime.UTC))
    out["load_s"] = time.perf_counter() - t
    out["sessions"] = len(table.sessions)
    out["json_bytes"] = len(table.to_json())
out["after"] = memory()
print(json.dumps(out))
"""


def measure(mode: str) -> dict:
    code = f"MODE = {mode!r}\n{MEASURE}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def median(runs: list[dict], *path: str) -> float:
    values = []
    for run in runs:
        value = run
        for key in path:
            value = value[key]
        values.append(value)
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    inproc = [measure("in-process") for _ in range(args.runs)]
    child = [measure("child") for _ in range(args.runs)]
    base = median(inproc + child, "baseline", "VmRSS")
    print(f"controller modules imported (baseline): VmRSS {base:.0f} MB")
    print(
        f"in-process: import exchange_calendars {median(inproc, 'import_s'):.2f} s "
        f"(+{median(inproc, 'imported', 'VmRSS') - median(inproc, 'baseline', 'VmRSS'):.0f} MB), "
        f"build XHKG over 400 days {median(inproc, 'build_s'):.2f} s; "
        f"VmRSS {median(inproc, 'after', 'VmRSS'):.0f} MB, VmHWM {median(inproc, 'after', 'VmHWM'):.0f} MB"
    )
    print(
        f"child process (the design): load_table + a query {median(child, 'load_s'):.2f} s, "
        f"{median(child, 'sessions'):.0f} sessions, {median(child, 'json_bytes') / 1024:.0f} KiB of JSON; "
        f"VmRSS {median(child, 'after', 'VmRSS'):.0f} MB "
        f"(+{median(child, 'after', 'VmRSS') - median(child, 'baseline', 'VmRSS'):.1f} MB), "
        f"VmHWM {median(child, 'after', 'VmHWM'):.0f} MB"
    )


if __name__ == "__main__":
    main()
