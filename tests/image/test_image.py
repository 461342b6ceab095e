"""What the image holds, read from its filesystem (``podman image mount``), and what it says when it is
run with something that is not one of its commands."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.podman import podman

CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----\n(.+?)\n-----END CERTIFICATE-----", re.DOTALL)


@pytest.fixture
def root(image) -> Iterator[Path]:
    """The image's root filesystem, mounted read-only on this machine for the test."""
    yield Path(podman("image", "mount", image).stdout.strip())
    podman("image", "unmount", image)


def files(root: Path) -> Iterator[Path]:
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                yield path


def test_the_ca_bundle_given_to_the_build_is_in_no_file_of_the_image(root):
    """tools/build-image.sh gives pip this machine's CA bundle as a build secret: certificates of it
    that Debian's bundle lacks (a TLS-inspecting proxy's) must not be anywhere in the image."""
    bundle = Path(os.environ.get("MDOPS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"))
    image_bundle = (root / "etc/ssl/certs/ca-certificates.crt").read_text()
    extra = set(CERTIFICATE.findall(bundle.read_text())) - set(CERTIFICATE.findall(image_bundle))
    # The first line of each certificate's base64 text: enough to recognise a copy.
    needles = {certificate.split("\n", 1)[0].encode() for certificate in extra}
    holders = [path for path in files(root) if any(map(path.read_bytes().__contains__, needles))]
    assert not holders, f"the build's CA bundle was copied into {holders}"
    assert not (root / "run" / "secrets").exists()


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["controller", "--token=s3cret"], []],
    ids=["an-option", "a-bare-name-with-options", "nothing"],
)
def test_the_image_run_without_one_of_its_commands_lists_them(image, argv):
    """``podman run IMAGE --help`` (an option for the image, not a command) says what to run instead of
    the runtime's "executable file not found", naming only what it took for a command (the rest may hold
    a secret: the usage goes to the container's log); with no argument at all the image runs its default
    command, the controller, which says what it lacks (settings) rather than a usage."""
    run = podman("run", "--rm", "--network=none", "--read-only", image, *argv, check=False)
    if argv:
        assert run.returncode == 2, run.stderr
        assert f'"{argv[0]}" is not a command of this image' in run.stderr
        assert "s3cret" not in run.stderr
        for program in (
            "python -m controller",
            "python -m api",
            "python -m runner",
            "python -m sim",
            "mdops",
        ):
            assert program in run.stderr
    else:
        assert run.returncode == 2 and "python -m controller: invalid settings" in run.stderr, run.stderr
