"""Files that hold secrets are readable by their owner only from the moment they exist: the stack's env file,
tokens file and logs, the control plane's keys and kubeconfig, Prometheus' bearer token."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from devcluster import pki
from devcluster.kubeconfig import write_kubeconfig
from devcluster.private import open_private, write_private
from devcluster.processes import Process
from devcluster.supervisor import write_env


@pytest.fixture(autouse=True)
def permissive_umask():
    """The most permissive umask: whatever is private is so by its own doing."""
    old = os.umask(0)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_private_file_is_a_new_file_never_restricted_after_writing(tmp_path):
    path = tmp_path / "secret"
    path.write_text("old")
    path.chmod(0o644)
    inode = path.stat().st_ino
    write_private(path, "new")
    assert (path.read_text(), mode(path)) == ("new", 0o600)
    assert path.stat().st_ino != inode  # made anew by open(O_CREAT|O_EXCL, 0600), then renamed: no chmod
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]  # no temporary file left


def test_a_private_log_is_restricted_before_anything_is_written(tmp_path):
    fresh = tmp_path / "fresh.log"
    with open_private(fresh) as out:
        assert mode(fresh) == 0o600
        out.write(b"token")
    older = tmp_path / "older.log"
    older.write_text("before\n")
    older.chmod(0o644)
    with open_private(older) as out:
        assert mode(older) == 0o600  # before this write
        out.write(b"after\n")
    assert older.read_text() == "before\nafter\n"


def test_the_stack_env_file_and_process_logs_are_private(tmp_path):
    write_env(tmp_path / "stack.env", {"MDOPS_API_TOKEN": "secret"})
    assert mode(tmp_path / "stack.env") == 0o600
    process = Process("echo", [sys.executable, "-c", "print('hello')"], tmp_path)
    process.popen.wait(30)
    assert mode(tmp_path / "echo.log") == 0o600


def test_keys_and_the_kubeconfig_are_private(tmp_path):
    authority = pki.Authority(tmp_path)
    admin = authority.issue("admin", "admin", organization="system:masters")
    service_accounts = pki.service_account_keys(tmp_path)
    kubeconfig = write_kubeconfig(
        tmp_path / "kubeconfig", "https://127.0.0.1:6443", authority.cert_path, admin, "a"
    )
    for path in (admin.key, service_accounts.key, kubeconfig):
        assert mode(path) == 0o600, path
    assert mode(admin.cert) == 0o666  # certificates are public: the umask decides
