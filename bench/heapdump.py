"""Where a benchmark's controller keeps its memory: ``python -m bench.heapdump`` runs ``python -m controller``
in this process and writes a report of its heap each time it gets SIGUSR1.

Used by ``python -m bench.controller_scale --heapdump DIR``, which starts the controller this way (with
``MDOPS_HEAPDUMP_DIR`` set) and signals it at the points it measures. Each report,
``$MDOPS_HEAPDUMP_DIR/heap-<n>.json`` (n = 1, 2, ... per process), holds the resident memory, how many
unreachable objects a full collection then freed (and the resident memory after it), the live
objects the garbage collector tracks by type (count and shallow size), the asyncio tasks by coroutine,
the threads by name, and, when ``MDOPS_HEAPDUMP_FRAMES`` > 0 (tracemalloc's frames per allocation,
default 1), the allocations made after the controller's imports and still held, grouped by file and
by line (and the largest by traceback).

tracemalloc slows the controller down and the report stops it for seconds: figures measured with it are
for finding where memory goes, not for the benchmark's tables.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import gc
import json
import os
import re
import runpy
import signal
import sys
import tempfile
import threading
import tracemalloc
from pathlib import Path
from typing import Any

TOP = 40


def _resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _objects_by_type() -> tuple[list[dict[str, Any]], list[tuple[str, int]]]:
    """The live objects the garbage collector tracks, by type; the unfinished asyncio tasks, by coroutine."""
    counts: collections.Counter[str] = collections.Counter()
    sizes: collections.Counter[str] = collections.Counter()
    tasks: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        name = f"{kind.__module__}.{kind.__qualname__}"
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj, 0)
        if isinstance(obj, asyncio.Task) and not obj.done():
            coro = obj.get_coro()
            tasks[getattr(coro, "__qualname__", repr(coro))] += 1
    by_type = [{"type": t, "count": c, "shallow_mb": round(sizes[t] / 2**20, 2)} for t, c in counts.items()]
    by_type.sort(key=lambda row: row["shallow_mb"], reverse=True)
    return by_type[:TOP], tasks.most_common(TOP)


def _allocations() -> dict[str, Any]:
    if not tracemalloc.is_tracing():
        return {}
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    )

    def rows(key: str, limit: int = TOP) -> list[dict[str, Any]]:
        return [
            {
                "where": [f"{frame.filename}:{frame.lineno}" for frame in stat.traceback],
                "mb": round(stat.size / 2**20, 3),
                "blocks": stat.count,
            }
            for stat in snapshot.statistics(key)[:limit]
        ]

    traced, peak = tracemalloc.get_traced_memory()
    return {
        "traced_mb": round(traced / 2**20, 1),
        "traced_peak_mb": round(peak / 2**20, 1),
        "by_file": rows("filename"),
        "by_line": rows("lineno"),
        "by_traceback": rows("traceback", 10),
    }


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")
    ]  # fmt: skip


LIBC = ctypes.CDLL("libc.so.6")
LIBC.mallinfo2.restype = _Mallinfo2


def _malloc() -> dict[str, float]:
    """glibc's view of the C heap (``mallinfo2``), in MB: what the heap holds (``arena``: the main heap and
    the threads' arenas; ``mmapped``), how much of it is in use and how much is free but kept."""
    info = LIBC.mallinfo2()
    return {
        "arena_mb": round(info.arena / 2**20, 1),
        "mmapped_mb": round(info.hblkhd / 2**20, 1),
        "in_use_mb": round(info.uordblks / 2**20, 1),
        "free_kept_mb": round(info.fordblks / 2**20, 1),
    }


def _pymalloc() -> dict[str, float]:
    """Python's small-object allocator (``sys._debugmallocstats``, which writes to the C stderr): its arenas
    (1 MiB each since Python 3.10, given back only when wholly empty) and the bytes in live blocks, in MB."""
    wanted = {
        "# arenas allocated current": "arenas",
        "# bytes in allocated blocks": "allocated_blocks_mb",
        "# bytes in available blocks": "available_blocks_mb",
        "# bytes lost to quantization": "quantization_mb",
    }
    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode()
    stats: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition("=")
        key = wanted.get(re.sub(r"\s+", " ", name).strip())
        if key:
            number = int(value.strip().replace(",", ""))
            stats[key] = number if key == "arenas" else round(number / 2**20, 1)
    return stats


def install(folder: Path) -> None:
    """Write a heap report into ``folder`` on each SIGUSR1."""
    folder.mkdir(parents=True, exist_ok=True)
    written = 0

    def report(_signum: int, _frame: object) -> None:
        nonlocal written
        written += 1
        rss = _resident_mb()
        garbage = gc.collect()  # what only the cyclic collector frees is not what holds memory
        by_type, tasks = _objects_by_type()
        threads = collections.Counter(t.name.rstrip("0123456789_") for t in threading.enumerate())
        data = {
            "rss_mb": rss,
            "gc_collected": garbage,
            "rss_mb_after_collect": _resident_mb(),
            "gc_objects_by_type": by_type,
            "asyncio_tasks_by_coroutine": tasks,
            "threads_by_name": threads.most_common(),
            "tracemalloc": _allocations(),
            "malloc": _malloc(),
            "pymalloc": _pymalloc(),
        }
        if os.environ.get("MDOPS_HEAPDUMP_TRIM"):  # what glibc gives back when asked (changes what follows)
            LIBC.malloc_trim(0)
            data["rss_mb_after_malloc_trim"] = _resident_mb()
        path = folder / f"heap-{written}.json"
        path.with_suffix(".tmp").write_text(json.dumps(data, indent=1))
        path.with_suffix(".tmp").replace(path)  # complete once it has its name

    signal.signal(signal.SIGUSR1, report)


def main() -> None:
    # The controller's imports first: traced, they take long, and they are not what grows. Without the
    # official client, as `python -m controller` imports them (controller/__main__.py).
    sys.modules.setdefault("kubernetes", None)
    import controller.handlers  # noqa: F401

    frames = int(os.environ.get("MDOPS_HEAPDUMP_FRAMES", "1"))
    if frames > 0:
        tracemalloc.start(frames)
    install(Path(os.environ["MDOPS_HEAPDUMP_DIR"]))
    runpy.run_module("controller", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
