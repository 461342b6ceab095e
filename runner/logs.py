"""Log lines: classify the script's output, timestamp it, stream it as JSON lines, keep the last ones."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections import deque
from typing import Any, BinaryIO

from runbooks.contract import now

MAX_MESSAGE_CHARS = 500
# The result (4 KiB) never holds more than about 60 lines, so keeping more would only cost memory.
KEPT_LINES = 100
# A log file (--log-file) holds at most this much, and its one older generation (<path>.1) as much again.
LOG_FILE_MAX_BYTES = 1024 * 1024

_LEVEL_PREFIX = re.compile(r"(DEBUG|INFO|WARNING|ERROR): ?")


def dumps(value: Any) -> str:
    """Compact JSON, UTF-8 characters kept as they are (escapes would cost bytes of the 4 KiB)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def classify(text: str, default_level: str) -> tuple[str, str]:
    """A line's level and message: a ``LEVEL:`` prefix wins (and is stripped), else the stream's default."""
    match = _LEVEL_PREFIX.match(text)
    if match:
        return match.group(1), text[match.end() :]
    return default_level, text


class RotatingFile:
    """A log file that never holds more than ``max_bytes``: when the next line would pass that, the file
    becomes ``<path>.1`` (replacing the one before) and a new one starts. So a script that writes without end
    costs at most twice ``max_bytes`` of disk, and the newest lines are always at the end of ``path``.

    A failure to write (a full disk) loses lines, never the run.
    """

    def __init__(self, path: str, max_bytes: int = LOG_FILE_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._file: BinaryIO | None = None
        self._size = 0

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            if self._file is not None and self._size and self._size + len(data) > self.max_bytes:
                self._file.close()
                self._file = None
                os.replace(self.path, f"{self.path}.1")
            if self._file is None:
                self._file = open(self.path, "ab")  # noqa: SIM115 (open for the run's whole life)
                self._size = self._file.tell()
            self._file.write(data)
            self._file.flush()
            self._size += len(data)


class LogSink:
    """Streams each line to ``out`` (and to ``file``, if any) as it comes (one JSON object per line) and
    keeps the last ones.

    Safe to use from the two threads reading the script's stdout and stderr. After ``close()`` lines are
    dropped, so nothing is printed after the result line.
    """

    def __init__(self, out: BinaryIO, keep: int = KEPT_LINES, file: RotatingFile | None = None) -> None:
        self._out = out
        self._file = file
        self._kept: deque[dict[str, str]] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._closed = False

    def emit(self, level: str, message: str) -> None:
        with self._lock:  # timestamps in the order the lines are streamed
            if self._closed:
                return
            entry = {"time": now(), "level": level, "message": message[:MAX_MESSAGE_CHARS]}
            data = (dumps(entry) + "\n").encode()
            self._kept.append(entry)
            # If nobody reads our stdout any more, keep the run (and the result file) going.
            with contextlib.suppress(OSError):
                self._out.write(data)
                self._out.flush()
            if self._file is not None:
                self._file.write(data)

    def script_line(self, raw: str, default_level: str) -> None:
        """One line of the script's output; blank lines are ignored."""
        text = raw.rstrip("\r\n")
        if text.strip():
            self.emit(*classify(text, default_level))

    def close(self) -> list[dict[str, str]]:
        """Stop taking lines and return the kept ones, oldest first."""
        with self._lock:
            self._closed = True
            return list(self._kept)
