"""Debian's chromium for the console's browser tests and bench (``make chromium`` installs it), driven by
Playwright from PyPI: never a browser download of Playwright's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
# Root needs --no-sandbox; the rest keep chromium off the network (this machine's is closed: without them
# it stalls on refused connections at start). Playwright gives each launch a fresh user data directory.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)


def launch(playwright: Any) -> Any:
    """A headless chromium browser (Playwright's ``Browser``)."""
    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing: run `make chromium` (Debian's package chromium)")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
