"""Files that hold secrets (tokens, keys, kubeconfigs, and the logs and env files that show tokens): readable
by their owner only from the moment they exist, never written first and restricted afterwards."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

MODE = 0o600


def write_private(path: Path, data: bytes | str) -> Path:
    """Write ``path`` (replacing it atomically): a new file made 0600 by ``open`` itself, renamed over it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # left by a crash, perhaps with another mode: O_EXCL makes a new one
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, MODE), "wb") as file:
        file.write(data.encode() if isinstance(data, str) else data)
    tmp.replace(path)
    return path


def open_private(path: Path, append: bool = True) -> BinaryIO:
    """``path`` opened for writing, 0600 when created; an older file open to others is restricted before
    anything is written to it."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, MODE)
    if stat.S_IMODE(os.fstat(fd).st_mode) & ~MODE:
        os.fchmod(fd, MODE)
    return os.fdopen(fd, "ab" if append else "wb")
