"""Run the simulator as a subprocess: used by the tests and the local stack."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_PACKAGE_PARENT = Path(__file__).resolve().parent.parent


class SimProcess:
    """A running simulator: its URL, its process, and a tiny JSON client for its admin API."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str) -> None:
        self.proc = proc
        self.url = url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def request(self, method: str, path: str, body: Any = None, timeout: float = 35.0) -> tuple[int, Any]:
        """``(status, decoded JSON or text)``; HTTP errors are returned, not raised."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            status, raw, ctype = exc.code, exc.read(), exc.headers.get("Content-Type", "")
        text = raw.decode()
        return status, (json.loads(text) if ctype.startswith("application/json") else text)

    def status(self) -> dict[str, Any]:
        code, data = self.request("GET", "/admin/status")
        if code != 200:
            raise RuntimeError(f"GET /admin/status answered {code}: {data}")
        return data


def _read_ready_line(stream: IO[bytes], proc: subprocess.Popen[bytes], deadline: float) -> str:
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the simulator did not report readiness in time")
            if not sel.select(remaining):
                continue
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"the simulator exited before it was ready (exit code {proc.wait()})")
            buf += chunk
    line = buf.split(b"\n", 1)[0].decode().strip()
    if not line.startswith("READY "):
        raise RuntimeError(f"unexpected first line from the simulator: {line!r}")
    return line.split(" ", 1)[1]


def _wait_healthy(url: str, deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1.0) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}/healthz did not answer 200 in time")
        time.sleep(0.02)


@contextlib.contextmanager
def run_sim(
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    args: list[str] | None = None,
    ready_timeout: float = 10.0,
    stderr: IO[Any] | int | None = None,
    python: str = sys.executable,
) -> Iterator[SimProcess]:
    """Start ``python -m sim`` (``port=0``: a free port, race-free), wait until it serves, stop it at exit.

    ``args`` are extra command-line flags (e.g. ``["--failover-ms", "200"]``); ``stderr`` is where its log
    goes (inherited by default).
    """
    cmd = [python, "-m", "sim", "--host", host, "--port", str(port), *(args or [])]
    proc = subprocess.Popen(
        cmd, cwd=_PACKAGE_PARENT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + ready_timeout
        url = _read_ready_line(proc.stdout, proc, deadline)
        _wait_healthy(url, deadline)
        yield SimProcess(proc, url)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
