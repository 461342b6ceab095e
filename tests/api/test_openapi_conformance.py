"""The committed OpenAPI document (docs/openapi.json) against ``python -m api``, the real control plane and
the real controller, with schemathesis' own runner (``st run``: its examples, coverage, fuzzing and stateful
phases) and every default check, none excluded. Every status code, header and body the API sends must be in
the document; every request the document calls valid must be accepted (or answered with a status that says
why not: 401, 403, 404, 409, 429), every invalid one refused.

The examples per operation are bounded to keep ``make test`` within its time."""

from __future__ import annotations

import subprocess
import sys

from runbooks.contract import Command
from tests.api.conftest import ADMIN_TOKEN
from tests.unit.test_openapi import DOCUMENT

EXAMPLES = 10


def test_the_api_answers_as_its_document_says(start_server, controller, scripts, tmp_path):
    for command in Command:
        scripts.write(command.value, "exit 0\n")
    # An event stream never ends: schemathesis reads one until its request timeout (10 s by default),
    # checked as each chunk comes. A heartbeat every 0.5 s and 3 s for that operation read pings and any
    # event as well, in a third of the time (the events phase took 140 s of this test's 170).
    server = start_server(MDOPS_API_EXECUTE_WAIT_SECONDS="0.5", MDOPS_API_EVENTS_HEARTBEAT_SECONDS="0.5")
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'[auth.openapi.bearer]\nbearer = "{ADMIN_TOKEN}"\n\n'
        '[[operations]]\ninclude-path = "/api/ops/events"\nrequest-timeout = 3.0\n'
    )
    options = ["--url", server.url, "--max-examples", str(EXAMPLES), "--seed", "1", "--no-color"]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config),
            "run",
            str(DOCUMENT),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    assert "No issues found" in run.stdout or "passed" in run.stdout, run.stdout[-5000:]
