"""The Makefile's virtualenv: installed again when pyproject.toml's content changes, not when its file is
newer than the last install (a fresh checkout; a git worktree sharing the virtualenv of another, whose
install it would point at itself)."""

import hashlib
import os
import subprocess

from devcluster.controlplane import REPO


def _make_venv(venv) -> str:
    done = subprocess.run(
        ["make", "-n", "venv", f"VENV={venv}"], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_virtualenv_is_installed_again_for_new_content_only(tmp_path):
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:12]
    venv = tmp_path / "venv"
    venv.mkdir()
    stamp = venv / f".installed-{digest}"
    stamp.touch()
    os.utime(stamp, (0, 0))  # installed long before pyproject.toml's file was written
    assert "pip install" not in _make_venv(venv)
    stamp.rename(venv / ".installed-000000000000")  # installed from other content
    assert "pip install" in _make_venv(venv)
