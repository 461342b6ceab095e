"""What a script gets from the controller (local executor), checked against what the script itself recorded:
a minimal environment (none of the controller's secrets, not even in its runner's), the request's text
exactly as written, a working directory of its own, and a bounded log on disk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runner.logs import LOG_FILE_MAX_BYTES
from runner.request import BASE_ENV, Request, contract_env
from tests.runbook_client import AWKWARD_TEXTS, Runbooks, recorded_environ, write_script

SECRET = "s3cret-the-scripts-must-never-see"
CONTRACT = set(contract_env(Request("stop", "r", "day"), Path("report.json")))
# The script records its own environment as it was started, its runner's (its parent's), and its working
# directory, in $SEEN/<request id>.*
RECORDS = """
    cat /proc/$$/environ > "$SEEN/$MDOPS_REQUEST_ID.env"
    cat /proc/$PPID/environ > "$SEEN/$MDOPS_REQUEST_ID.runner-env"
    pwd > "$SEEN/$MDOPS_REQUEST_ID.cwd"
"""


@pytest.fixture
def rbs(api_client, namespace):
    return Runbooks(api_client, namespace)


@pytest.fixture
def seen(tmp_path) -> Path:
    folder = tmp_path / "seen"
    folder.mkdir()
    return folder


def local_settings(tmp_path: Path, seen: Path, **controller_env: str) -> dict[str, str]:
    scripts = tmp_path / "scripts"
    for command in ("health_check", "stop"):
        write_script(scripts, command, RECORDS)
    return {
        "MDOPS_SCRIPTS_DIR": str(scripts),
        "MDOPS_SCRIPT_ENV": json.dumps({"SEEN": str(seen)}),
        **controller_env,
    }


def test_scripts_and_their_runner_get_none_of_the_controllers_environment(
    start_controller, rbs, tmp_path, seen
):
    start_controller(
        **local_settings(
            tmp_path,
            seen,
            OPS_API_TOKEN=SECRET,
            AWS_SECRET_ACCESS_KEY=SECRET,
            PASSED="asked for",
            MDOPS_SCRIPT_PASS_ENV=json.dumps(["PASSED"]),
        )
    )
    rbs.create("env-check", command="health_check")
    assert rbs.wait_finished("env-check")["status"]["result"] == "success"

    script = recorded_environ(seen / "env-check.env")
    inherited = {name for name in BASE_ENV if name in os.environ}  # the controller's are the test's
    assert set(script) == inherited | {"PASSED", "SEEN"} | CONTRACT
    assert (script["PASSED"], script["MDOPS_REASON"]) == ("asked for", "")
    runner = recorded_environ(seen / "env-check.runner-env")
    # A forked runner's /proc environ is its launcher's (BASE_ENV and PYTHONPATH); its own is the request's.
    allowed = inherited | {"PYTHONPATH", "PASSED", "MDOPS_REQUEST", "MDOPS_SCRIPT_ENV"}
    allowed |= {"MDOPS_SCRIPT_PASS_ENV"}
    assert set(runner) <= allowed, set(runner) - allowed
    assert not any(SECRET in value for value in (*script.values(), *runner.values()))


def test_the_requests_text_reaches_the_script_exactly_as_written(start_controller, rbs, tmp_path, seen):
    start_controller(**local_settings(tmp_path, seen))
    reasons = [*AWKWARD_TEXTS, "tab\tand\nnewline"]
    # (config, requestedBy) of each: no control character at all there
    others = [(text[::-1], text[:24]) for text in AWKWARD_TEXTS[1:] + AWKWARD_TEXTS[:2]]
    for index, (reason, (config, who)) in enumerate(zip(reasons, others, strict=True)):
        rbs.create(f"text-{index}", command="health_check", reason=reason, config=config, requestedBy=who)
    for index, (reason, (config, who)) in enumerate(zip(reasons, others, strict=True)):
        status = rbs.wait_finished(f"text-{index}")["status"]
        assert status["result"] == "success", status
        script = recorded_environ(seen / f"text-{index}.env")
        got = (script["MDOPS_REASON"], script["MDOPS_CONFIG"], script["MDOPS_REQUESTED_BY"])
        assert got == (reason, config, who)
    assert not Path("/tmp/mdops-never").exists()


def test_a_chatty_script_in_its_own_folder_leaves_the_runs_files_alone(
    start_controller, rbs, tmp_path, seen, namespace
):
    """A script that writes ``pid`` and ``result.json`` where it runs, and 6 MiB of output: the run's own
    files are intact, its log on disk stays within two generations of 1 MiB, the status shows the end."""
    controller = start_controller(**local_settings(tmp_path, seen))
    write_script(
        tmp_path / "scripts",
        "stop",
        RECORDS
        + """
        echo 1 > pid
        echo '{"exitCode": 0, "result": "success"}' > result.json
        python3 -c 'for i in range(12000): print(f"line {i:05d} " + "x" * 480)'
        echo "the last line"
        exit 3
        """,
    )
    uid = rbs.create("chatty", command="stop", timeoutSeconds=120)["metadata"]["uid"]
    status = rbs.wait_finished("chatty", timeout=120)["status"]

    assert (status["exitCode"], status["message"]) == (1, "script exited with code 3")
    assert [line["message"] for line in status["logs"][-2:]] == ["the last line", "script exited with code 3"]
    folder = controller.workdir / "state" / namespace / uid
    assert (seen / "chatty.cwd").read_text().strip() != str(folder)
    assert status["execution"]["name"] == f"pid/{(folder / 'pid').read_text()}"
    assert json.loads((folder / "result.json").read_text())["exitCode"] == 1
    sizes = {path.name: path.stat().st_size for path in folder.iterdir()}
    # "released": the result is recorded, the folder may go after its TTL.
    run_files = {
        "pid",
        "launcher",
        "exit",
        "result.json",
        "runner.err",
        "runner.log",
        "runner.log.1",
        "released",
    }
    assert set(sizes) == run_files
    assert max(sizes["runner.log"], sizes["runner.log.1"]) <= LOG_FILE_MAX_BYTES
    assert sizes["runner.err"] == 0
