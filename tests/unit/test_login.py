"""The controller's credentials, read without the official client (controller/login.py)."""

import os
import re
import subprocess
import sys

import kopf
import pytest

from controller.login import from_kubeconfig, from_service_account
from devcluster.controlplane import REPO

KUBECONFIG = """
apiVersion: v1
kind: Config
current-context: local
contexts:
- name: other
  context: {cluster: other, user: other}
- name: local
  context: {cluster: local, user: admin, namespace: md}
clusters:
- name: other
  cluster: {server: 'https://127.0.0.2:1'}
- name: local
  cluster: {server: 'https://127.0.0.1:6443', certificate-authority: pki/ca.crt}
users:
- name: other
  user: {token: other}
- name: admin
  user: {client-certificate: pki/admin.crt, client-key: /abs/admin.key}
"""


def test_the_current_context_with_files_relative_to_the_kubeconfig(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    info = from_kubeconfig(path)
    assert info.server == "https://127.0.0.1:6443"
    assert info.ca_path == str(tmp_path / "pki" / "ca.crt")
    assert info.certificate_path == str(tmp_path / "pki" / "admin.crt")
    assert info.private_key_path == "/abs/admin.key"
    assert info.token is None and info.default_namespace == "md"


def test_embedded_data_and_a_token_file(tmp_path):
    (tmp_path / "token").write_text("s3cret\n")
    path = tmp_path / "kubeconfig"
    path.write_text(
        "current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
        "clusters: [{name: k, cluster: {server: 'https://[::1]:6443', certificate-authority-data: Q0E=}}]\n"
        "users: [{name: u, user: {tokenFile: token}}]\n"
    )
    info = from_kubeconfig(path)
    assert (info.ca_data, info.ca_path, info.token) == ("Q0E=", None, "s3cret")
    assert info.as_http_headers() == {"Authorization": "Bearer s3cret"}


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (("current-context: local", "current-context: gone"), "no context named 'gone'"),
        (("current-context: local", ""), "no current-context"),
        (("{cluster: local, user: admin", "{cluster: nowhere, user: admin"), "no cluster named 'nowhere'"),
        (("{client-certificate: pki/admin.crt, client-key: /abs/admin.key}", "{exec: {}}"), "exec plugin"),
    ],
)
def test_a_kubeconfig_it_cannot_log_in_with_is_refused_clearly(tmp_path, change, error):
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG.replace(*change))
    with pytest.raises(kopf.LoginError, match=error):
        from_kubeconfig(path)


def pod(host: str) -> dict[str, str]:
    """A pod's environment: where the kubelet says the API server is."""
    return {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": "443"}


def test_a_pods_service_account(tmp_path):
    (tmp_path / "token").write_text("pod-token\n")
    (tmp_path / "ca.crt").write_text("PEM")
    (tmp_path / "namespace").write_text("md-prod")
    info = from_service_account(tmp_path, pod("10.96.0.1"))
    assert (info.server, info.token) == ("https://10.96.0.1:443", "pod-token")
    assert (info.ca_path, info.default_namespace) == (str(tmp_path / "ca.crt"), "md-prod")
    assert from_service_account(tmp_path, pod("fd00::1")).server == "https://[fd00::1]:443"


def test_outside_a_pod_in_cluster_mode_says_why(tmp_path):
    with pytest.raises(kopf.LoginError, match="KUBERNETES_SERVICE_HOST"):
        from_service_account(tmp_path, {})
    with pytest.raises(kopf.LoginError, match="token"):
        from_service_account(tmp_path, pod("10.96.0.1"))
    (tmp_path / "token").write_text("pod-token")
    with pytest.raises(kopf.LoginError, match=r"ca\.crt"):
        from_service_account(tmp_path, pod("10.96.0.1"))


def test_the_controller_does_without_the_official_client():
    """``python -m controller`` hides the client from kopf (an import of ~0.9 s): every module the
    controller loads must do without it."""
    code = (
        "import sys\n"
        "sys.modules['kubernetes'] = None\n"
        "import kopf, controller.__main__, controller.handlers, controller.schedules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


@pytest.mark.parametrize("program", ["controller", "api"])
@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ({"MDOPS_IN_CLUSTER": "true"}, "service.host"),  # not in a pod: KUBERNETES_SERVICE_HOST unset
        ({"MDOPS_KUBECONFIG": "/nonexistent/kubeconfig"}, "/nonexistent/kubeconfig"),
        ({"MDOPS_KUBECONFIG": "/etc/passwd"}, "names no cluster"),
    ],
)
def test_credentials_that_cannot_be_read_stop_the_program_with_a_message(program, setting, said):
    """Not kopf's startup retried every minute for ever with a traceback, nor uvicorn's failed start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MDOPS_", "KUBERNETES_"))}
    result = subprocess.run(
        [sys.executable, "-m", program],
        env={**env, "MDOPS_NAMESPACE": "md", **setting},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"python -m {program}: cannot log in to the API server: "), result.stderr
    assert re.search(said, result.stderr, re.IGNORECASE) and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("kubeconfig", "said"),
    [("/nonexistent/kubeconfig", "No such file"), ("/etc/passwd", "names no cluster")],
)
def test_podsim_with_credentials_that_cannot_be_read_stops_with_a_message(kubeconfig, said):
    result = subprocess.run(
        [sys.executable, "-m", "devcluster.podsim", "--kubeconfig", kubeconfig],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("python -m devcluster.podsim: cannot log in to the API server: ")
    assert said in result.stderr and result.stderr.count("\n") == 1, result.stderr
