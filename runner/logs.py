"""Log lines: classify the script's output, timestamp it, stream it as JSON lines, keep the last ones."""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections import deque
from typing import Any, BinaryIO

from runbooks.contract import now

MAX_MESSAGE_CHARS = 500
# The result (4 KiB) never holds more than about 60 lines, so keeping more would only cost memory.
KEPT_LINES = 100

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


class LogSink:
    """Streams each line to ``out`` as it comes (one JSON object per line) and keeps the last ones.

    Safe to use from the two threads reading the script's stdout and stderr. After ``close()`` lines are
    dropped, so nothing is printed after the result line.
    """

    def __init__(self, out: BinaryIO, keep: int = KEPT_LINES) -> None:
        self._out = out
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
