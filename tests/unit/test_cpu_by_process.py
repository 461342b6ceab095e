"""bench.cpu_by_process: the program each process's CPU counts under, and a real command's CPU, sampled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from bench.cpu_by_process import Ledger, command_line, main, program
from devcluster.processes import wait_until


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["/usr/local/bin/kube-apiserver", "--etcd-servers=http://127.0.0.1:2379"], "kube-apiserver"),
        (["/work/.venv/bin/python", "-m", "controller"], "python -m controller"),
        (
            ["python3.11", "-u", "-m", "controller.executors.launcher"],
            "python -m controller.executors.launcher",
        ),
        (["python", "-u", "-c", "import sys;exec(eval(sys.stdin.readline()))"], "python -c"),
        (["/work/.venv/bin/python", "/work/.venv/bin/mdops", "run", "health_check"], "python mdops"),
        (["python", "-X", "importtime", "-m", "api"], "python -m api"),
        (["python"], "python"),
    ],
)
def test_each_process_counts_under_its_program_or_python_module(argv: list[str], name: str) -> None:
    assert program(argv) == name


def test_a_process_is_named_by_its_executable_whatever_its_first_argument_says() -> None:
    """exec -a gives a process a first argument of its own choosing, as chromium's helpers write their
    title over their command line: the executable still names it."""
    child = subprocess.Popen(["bash", "-c", "exec -a 'profile-x --type=renderer' sleep 30"])
    try:

        def execd() -> list[str]:
            argv = command_line(str(child.pid))
            return [] if argv and argv[0].endswith("bash") else argv

        argv = wait_until(execd, 10, "bash to exec sleep")
        assert argv == [os.path.realpath("/bin/sleep"), "30"]
        assert program(argv) == "sleep"
    finally:
        child.kill()
        child.wait()


def test_a_process_counts_by_its_last_reading_and_a_reused_pid_is_another_process() -> None:
    ledger = Ledger(since=100)
    ledger.observe("7", 50, 9.0, ["etcd"])  # started before the command: not counted
    ledger.observe("8", 120, 1.0, ["etcd"])
    ledger.observe("8", 120, 2.5, None)
    ledger.observe("8", 300, 0.5, ["python", "-m", "api"])  # pid 8 again, a new process
    ledger.observe("9", 130, 0.0, [])  # no command line yet: read again next time
    ledger.observe("9", 130, 0.2, ["kubectl"])
    assert ledger.totals() == {"etcd": 2.5, "python -m api": 0.5, "kubectl": 0.2}


def test_a_commands_cpu_is_sampled_by_program_and_its_exit_code_kept(tmp_path) -> None:
    """A command whose child burns 0.5 s of CPU, then exits 3. The child runs a script of a name no other
    process has: the sample counts every process started meanwhile, other tests' too."""
    burn = tmp_path / f"burn_{uuid.uuid4().hex}.py"
    burn.write_text("import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\n")
    command = tmp_path / "command.py"
    command.write_text(
        f"import subprocess, sys\nsubprocess.run([sys.executable, {str(burn)!r}])\nsys.exit(3)\n"
    )
    out = tmp_path / "cpu.json"
    code = main(["--interval", "0.05", "--out", str(out), "--", sys.executable, str(command)])
    report = json.loads(out.read_text())
    assert code == report["exit"] == 3
    assert 0.4 <= report["cpu_s"][f"python {burn.name}"] <= report["waited_cpu_s"], report
