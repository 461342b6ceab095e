"""The supervisor's restart policy and what it says, as pure functions; and the orphans a supervisor adopts
(local processes: the stack's restarts themselves are tested on the real stack, tests/e2e/)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from devcluster.controlplane import REPO
from devcluster.processes import Process, wait_until
from devcluster.supervisor import RECORD, Backoff, Supervisor, exit_text, restart_message, status_table
from tests.pids import all_gone
from tests.runbook_client import lines


def test_the_wait_doubles_with_each_crash_in_a_row_up_to_a_minute():
    assert [Backoff().delay(crashes) for crashes in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


@pytest.mark.parametrize(
    ("before", "ran", "crashes"),
    [
        (0, 0.1, 1),  # the first crash
        (3, 0.1, 4),  # crashed again soon after its restart
        (3, 119, 4),
        (3, 120, 1),  # ran two minutes: a new crash, not the same one again
        (7, 3600, 1),
    ],
)
def test_crashes_in_a_row_start_over_after_two_minutes_of_running(before, ran, crashes):
    assert Backoff().crashes(before, ran) == crashes


@pytest.mark.parametrize(
    ("code", "text"), [(-9, "-9 (SIGKILL)"), (-15, "-15 (SIGTERM)"), (-99, "-99"), (0, "0"), (3, "3")]
)
def test_an_exit_names_its_signal(code, text):
    assert exit_text(code) == text


def test_the_restart_line_says_when_a_component_keeps_crashing():
    log = Path("/state/controller.log")
    first = restart_message("controller", -9, 12.4, 1, 3, 1, Backoff(), log)
    assert first == "controller exited with -9 (SIGKILL) after 12 s; restarting in 1 s (restart 3)"
    again = restart_message("prometheus", 1, 0.12, 8, 5, 4, Backoff(), log)
    assert again == (
        "prometheus exited with 1 after 0.12 s; restarting in 8 s (restart 5); it keeps crashing (4 times in "
        "a row, each within 2 min of starting), so each wait doubles, up to 60 s: see /state/controller.log"
    )


def test_the_status_table_shows_each_component_on_a_line():
    exit_ = {"at": "2026-11-26T08:00:00.000Z", "exit": "-9 (SIGKILL)", "ran_seconds": 12.4}
    record = {
        "components": {
            "etcd": {"pid": 10, "state": "running", "restarts": 0, "restart_at": None, "last_exit": None},
            "controller": {
                "pid": 11, "state": "waiting to restart", "restarts": 3,
                "restart_at": "2026-11-26T08:00:02.000Z", "last_exit": exit_,
            },
        }
    }  # fmt: skip
    assert status_table(record).splitlines() == [
        "COMPONENT   PID  STATE                                           RESTARTS  LAST EXIT",
        "etcd        10   running                                         0         -",
        "controller  -    waiting to restart at 2026-11-26T08:00:02.000Z  3         "
        "-9 (SIGKILL) after 12 s, at 2026-11-26T08:00:00.000Z",
    ]


# A supervisor in a process that adopts orphans (as make up's does), over a component that starts a process
# in a session of its own (as the controller starts a run) and then waits; stopped when its stdin says so.
HOST = """
import sys
from pathlib import Path
from devcluster.processes import Process, adopt_orphans
from devcluster.supervisor import RECORD, Backoff, Supervisor

folder = Path(sys.argv[1])
adopt_orphans()
script = 'setsid sleep 600 & echo $! >> "$0"; exec sleep 600'
leaves = Process("leaves", ["sh", "-c", script, folder / "left"], folder)
supervisor = Supervisor([leaves], folder / RECORD, Backoff(initial=0.1)).start()
print(leaves.popen.pid, flush=True)
sys.stdin.readline()
supervisor.stop()
"""


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_supervisor_that_adopts_orphans_stops_them_with_the_components(tmp_path):
    host = subprocess.Popen(
        [sys.executable, "-c", HOST, str(tmp_path)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip

    def left() -> list[int]:
        return [int(pid) for pid in lines(tmp_path / "left")]

    try:
        first = int(host.stdout.readline())
        wait_until(lambda: len(left()) == 1, 30, "the first process left behind")
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: len(left()) == 2, 30, "the restarted component's")
        assert parent(left()[0]) == host.pid  # adopted by the supervisor's process, not by init
        host.stdin.write("stop\n")
        host.stdin.flush()
        assert host.wait(30) == 0
        restarted = json.loads((tmp_path / RECORD).read_text())["components"]["leaves"]["pid"]
        assert all_gone([first, restarted, *left()])
    finally:
        host.kill()
        for pid in left():  # should the test fail: no sleep 600 left behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_held_component_stays_stopped_while_the_others_are_restarted(tmp_path):
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    held, other = (Process(name, sleeper, tmp_path) for name in ("held", "other"))
    supervisor = Supervisor(
        [held, other], tmp_path / RECORD, Backoff(initial=0.1), say=lambda _: None
    ).start()
    try:
        supervisor.hold("held")
        assert not held.alive()
        os.kill(other.popen.pid, signal.SIGKILL)
        wait_until(
            lambda: other.alive() and supervisor.components[1].restarts == 1, 30, "the other's restart"
        )
        record = json.loads((tmp_path / RECORD).read_text())["components"]
        assert (record["held"]["state"], record["held"]["restarts"]) == ("stopped", 0)
        assert not held.alive()
    finally:
        supervisor.stop()


def test_make_status_into_a_pipe_closed_early_ends_as_a_shells_commands_do(tmp_path):
    """``make status | head -1``: what reads the table has gone before it is written. Exit 141 (SIGPIPE, as
    a shell says), and no traceback."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "devcluster", "status"],
            stdout=write,
            stderr=subprocess.PIPE,
            env={**os.environ, "MDOPS_STATE_DIR": str(tmp_path)},
            cwd=REPO,
            timeout=60,
        )
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, b"")
