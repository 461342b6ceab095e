import pytest

from runbooks.kube import NotLoopbackError, configuration, is_loopback, loopback_kubeconfig


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("https://127.0.0.1:6443", True),
        ("https://127.8.9.10:443", True),
        ("https://[::1]:6443", True),
        ("https://localhost:6443", True),
        ("https://10.0.0.1:6443", False),
        ("https://kubernetes.default.svc", False),
        ("https://127.0.0.1.example.com:6443", False),
        ("", False),
    ],
)
def test_loopback_servers(server, expected):
    assert is_loopback(server) is expected


def test_kubeconfig_naming_a_remote_cluster_is_refused(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(
        "clusters:\n"
        "- name: local\n  cluster: {server: 'https://127.0.0.1:1'}\n"
        "- name: prod\n  cluster: {server: 'https://prod.example.com'}\n"
    )
    with pytest.raises(NotLoopbackError, match=r"prod\.example\.com"):
        loopback_kubeconfig(path)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("root:x:0:0:root:/root:/bin/bash\n", "names no cluster"),  # a file of text
        ("clusters: 5\n", "names no cluster"),
        ("clusters: [foo]\n", "refusing API server None"),
        ("clusters:\n- cluster: [127.0.0.1]\n", "refusing API server None"),
        ("clusters:\n- cluster: {server: 6443}\n", "refusing API server 6443"),
    ],
)
def test_a_file_that_is_no_kubeconfig_is_refused_saying_so(tmp_path, text, said):
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    with pytest.raises(NotLoopbackError, match=said):
        loopback_kubeconfig(path)


def test_loopback_kubeconfig_is_handed_out(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text("clusters:\n- name: local\n  cluster: {server: 'https://127.0.0.1:6443'}\n")
    assert loopback_kubeconfig(path) == path


def test_no_ambient_credentials_without_an_explicit_choice(tmp_path, monkeypatch):
    # What a pod or a developer's shell would offer: none of it is used unless asked for.
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "ambient"))
    with pytest.raises(ValueError, match="no Kubernetes credentials"):
        configuration(None)
    with pytest.raises(ValueError, match="choose one"):
        configuration(tmp_path / "kubeconfig", in_cluster=True)
