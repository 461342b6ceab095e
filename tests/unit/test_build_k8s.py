"""tools/build-k8s.sh: binaries found in $KUBEBUILDER_ASSETS are used instead of being built."""

import os
import subprocess

from devcluster.controlplane import BUILD_SCRIPT, binaries

NAMES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")


def test_kubebuilder_assets_are_linked_not_built(tmp_path):
    built = binaries()  # the cached build, as every test session uses it
    assets = tmp_path / "assets"
    assets.mkdir()
    for name in NAMES:
        (assets / name).symlink_to((built / name).resolve())
    env = {**os.environ, "KUBEBUILDER_ASSETS": str(assets), "MDOPS_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([BUILD_SCRIPT], env=env, capture_output=True, text=True, check=True)
    bin_dir = result.stdout.strip()
    assert "building" not in result.stderr
    for name in NAMES:
        assert os.readlink(os.path.join(bin_dir, name)) == str(assets / name)
    version = subprocess.run([os.path.join(bin_dir, "kubectl"), "version", "--client"], capture_output=True,
                             text=True, check=True)  # fmt: skip
    assert "v1.34.4" in version.stdout
