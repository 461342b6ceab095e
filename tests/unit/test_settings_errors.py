"""An invalid setting stops the API or the controller with a message that names its environment variable,
as the README's Configuration says, and shows none of the values it was given (the admin token, a script's
secrets)."""

import os
import socket
import subprocess
import sys

import pytest
from pydantic import ValidationError

from api.settings import ApiSettings
from controller.settings import ControllerSettings
from devcluster.controlplane import REPO
from runbooks.settings import CommonSettings, problems, variable

TOKEN = "admin-token-not-to-be-shown-0123456789"


def _refusal(settings: type[CommonSettings], env: dict[str, str], monkeypatch) -> ValidationError:
    for name in [name for name in os.environ if name.startswith("MDOPS_") or name == "OPS_API_TOKEN"]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as refused:
        settings()
    return refused.value


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"MDOPS_API_PORT": "abc"}, "MDOPS_API_PORT: Input should be a valid integer"),
        ({"MDOPS_API_HISTORY": "0"}, "MDOPS_API_HISTORY: Input should be greater than or equal to 1"),
        ({"MDOPS_SESSION_WINDOWS": '{"open": "day"}'}, "MDOPS_SESSION_WINDOWS: give a window for every"),
        ({"MDOPS_SESSION_WINDOWS": '{"open": "noon"}'}, "MDOPS_SESSION_WINDOWS: open: Input should be"),
        ({}, "set MDOPS_KUBECONFIG (a path to a loopback kubeconfig) or MDOPS_IN_CLUSTER=true"),
        ({"MDOPS_PROMETHEUS_URL": "prometheus:9090"}, "MDOPS_PROMETHEUS_URL: not an http:// or https:// URL"),
        ({"MDOPS_PROMETHEUS_URL": f"http://u:{TOKEN}@[::1"}, "MDOPS_PROMETHEUS_URL: not an http:// or https"),
    ],
)
def test_each_problem_names_its_variable(monkeypatch, env, said):
    base = {} if not env else {"MDOPS_IN_CLUSTER": "true", "OPS_API_TOKEN": TOKEN}
    message = problems(_refusal(ApiSettings, {**base, **env}, monkeypatch), ApiSettings)
    assert said in message and "\n" not in message
    assert TOKEN not in message and TOKEN[:6] not in message and "Value error" not in message


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"MDOPS_METRICS_PORT": "70000"}, "MDOPS_METRICS_PORT: Input should be less than or equal to 65535"),
        ({"MDOPS_LIVENESS_PORT": "-1"}, "MDOPS_LIVENESS_PORT: Input should be greater than or equal to 0"),
        ({"MDOPS_NAMESPACE": "Market_Data"}, "MDOPS_NAMESPACE: String should match pattern"),
        ({"MDOPS_JOB_SERVICE_ACCOUNT": "Runner"}, "MDOPS_JOB_SERVICE_ACCOUNT: String should match"),
        ({"MDOPS_SCRIPTS_CONFIGMAP": "my_scripts"}, "MDOPS_SCRIPTS_CONFIGMAP: String should match"),
        ({"MDOPS_PEERING": "mdops peers"}, "MDOPS_PEERING: String should match"),
        ({"MDOPS_RUNNER_IMAGE": ""}, "MDOPS_RUNNER_IMAGE: String should match"),
        ({"MDOPS_RUNNER_COMMAND": "[]"}, "MDOPS_RUNNER_COMMAND: List should have at least 1 item"),
        ({"MDOPS_JOB_POD_ANNOTATIONS": '{"a b": "c"}'}, "MDOPS_JOB_POD_ANNOTATIONS: a b: [key]: String"),
        ({"MDOPS_WATCH_SECONDS": "1"}, "MDOPS_WATCH_SECONDS: Input should be greater than or equal to 2"),
        ({"MDOPS_WATCH_SECONDS": "601"}, "MDOPS_WATCH_SECONDS: Input should be less than or equal to 600"),
    ],
)
def test_what_would_fail_later_is_refused_at_the_start(monkeypatch, env, said):
    """A port beyond 65535 failed kopf's startup every minute, with a traceback, in a pod that looked
    Running; a name the API server refuses failed every run (or every request) instead."""
    refused = _refusal(ControllerSettings, {"MDOPS_IN_CLUSTER": "true", **env}, monkeypatch)
    assert said in problems(refused, ControllerSettings)


def test_a_setting_without_the_prefix_is_named_by_its_alias():
    assert variable(ApiSettings, "api_token") == "OPS_API_TOKEN"
    assert variable(ApiSettings, "api_port") == "MDOPS_API_PORT"


SECRET = '{"FEED_PASSWORD": "hunter2-not-to-be-shown"}'  # what a script's environment may hold


@pytest.mark.parametrize(
    ("program", "env", "said"),
    [
        ("api", {"MDOPS_IN_CLUSTER": "true", "MDOPS_API_PORT": "abc"}, "MDOPS_API_PORT: "),
        ("api", {}, "MDOPS_KUBECONFIG"),
        ("controller", {"MDOPS_IN_CLUSTER": "true", "MDOPS_MAX_PARALLEL": "abc"}, "MDOPS_MAX_PARALLEL: "),
        ("controller", {"MDOPS_SCRIPT_ENV": SECRET}, "MDOPS_KUBECONFIG"),
        # Not JSON: pydantic-settings' own decoding ended in a traceback (exit 1) naming the field.
        (
            "controller",
            {"MDOPS_IN_CLUSTER": "true", "MDOPS_SCRIPT_ENV": SECRET[:-1]},
            "MDOPS_SCRIPT_ENV: not JSON",
        ),
        (
            "api",
            {"MDOPS_IN_CLUSTER": "true", "MDOPS_SESSION_WINDOWS": "{open: day}"},
            "MDOPS_SESSION_WINDOWS: ",
        ),
    ],
    ids=[
        "api-a-bad-port",
        "api-no-credentials",
        "controller-a-bad-number",
        "controller-no-credentials",
        "controller-no-json",
        "api-no-json",
    ],
)
def test_the_process_says_so_in_one_line_without_the_values(program, env, said):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MDOPS_")}
    done = subprocess.run(
        [sys.executable, "-m", program],
        env={**clean, "OPS_API_TOKEN": TOKEN, "MDOPS_SCRIPT_ENV": SECRET, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"python -m {program}: invalid settings: "), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert said in done.stderr, done.stderr
    for secret in (TOKEN, "hunter2"):
        assert secret[:6] not in done.stderr and secret[-5:] not in done.stderr, done.stderr


KUBECONFIG_TOKEN = "kube-token-not-to-be-shown-0123456789"
ALICE = "alice-token-not-to-be-shown-0123"
LOOPBACK_KUBECONFIG = """\
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: a-token-of-a-server-that-is-not-there}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
"""


@pytest.mark.parametrize(
    ("program", "files", "said"),
    [
        ("controller", {"kubeconfig": f"users:\n- user: {{token: {KUBECONFIG_TOKEN}: x}}\n"}, "not YAML"),
        ("api", {"kubeconfig": f"users:\n- user: {{token: {KUBECONFIG_TOKEN}: x}}\n"}, "not YAML"),
        ("api", {"tokens": f'tokens:\n  - {{name: alice, token: "{ALICE}}}\n'}, "not YAML"),
        ("api", {"tokens": "tokens: [{name: alice, token: hunter2-short}]"}, "tokens: 0: token: "),
        ("api", {"tokens": f"tokens: [{{name: alice, token: {ALICE}, permissions: [all]}}]"}, "unknown"),
    ],
    ids=["controller-kubeconfig", "api-kubeconfig", "api-tokens-yaml", "api-short-token", "api-permission"],
)
def test_a_file_that_holds_secrets_is_refused_in_one_line_without_them(tmp_path, program, files, said):
    """PyYAML's message quotes the line it stopped at, pydantic's the values given: both the secrets."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(files.get("kubeconfig", LOOPBACK_KUBECONFIG))
    env = {"MDOPS_KUBECONFIG": str(kubeconfig)}
    if "tokens" in files:
        tokens = tmp_path / "tokens.yaml"
        tokens.write_text(files["tokens"])
        tokens.chmod(0o600)
        env["MDOPS_API_TOKENS_FILE"] = str(tokens)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MDOPS_")}
    done = subprocess.run(
        [sys.executable, "-m", program],
        env={**clean, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith(f"python -m {program}: ")]
    assert said in line and done.stderr.endswith(line + "\n"), done.stderr
    for secret in (KUBECONFIG_TOKEN, ALICE, "hunter2"):
        assert secret[:6] not in done.stderr and secret[-5:] not in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("env", "said"),
    [
        (
            {"MDOPS_METRICS_HOST": "127.0.0.1", "MDOPS_METRICS_PORT": "{taken}"},
            "(MDOPS_METRICS_HOST, MDOPS_M",
        ),
        ({"MDOPS_METRICS_PORT": "0", "MDOPS_LIVENESS_PORT": "{taken}"}, "(MDOPS_LIVENESS_PORT): "),
        ({"MDOPS_METRICS_HOST": "192.0.2.1"}, "cannot listen on 192.0.2.1:9102 (MDOPS_METRICS_HOST"),
    ],
    ids=["metrics-port-taken", "liveness-port-taken", "not-this-hosts-address"],
)
def test_a_port_the_controller_cannot_listen_on_stops_it_at_once(env, said):
    """Not kopf's startup activity failed and retried every minute for ever, its tasks started again each
    time, in a pod that looks Running."""
    done = _started_beside_a_taken_port("controller", env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("python -m controller: cannot listen on "), done.stderr
    assert said in done.stderr and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize(
    "env",
    [{"MDOPS_API_HOST": "127.0.0.1", "MDOPS_API_PORT": "{taken}"}, {"MDOPS_API_HOST": "192.0.2.1"}],
    ids=["port-taken", "not-this-hosts-address"],
)
def test_a_port_the_api_cannot_listen_on_stops_it_naming_its_variables(tmp_path, env):
    """uvicorn's own: exit 3 and its error, without the variables."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(LOOPBACK_KUBECONFIG)
    done = _started_beside_a_taken_port("api", {"MDOPS_KUBECONFIG": str(kubeconfig), **env})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("python -m api: cannot listen on "), done.stderr
    assert "(MDOPS_API_HOST, MDOPS_API_PORT): " in done.stderr and done.stderr.count("\n") == 1, done.stderr


def _started_beside_a_taken_port(program: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``python -m program`` with ``env``, where ``{taken}`` is a port in use meanwhile."""
    with socket.create_server(("0.0.0.0", 0)) as taken:
        port = str(taken.getsockname()[1])
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MDOPS_")}
        filled = {name: value.format(taken=port) for name, value in env.items()}
        return subprocess.run(
            [sys.executable, "-m", program],
            env={**clean, **({} if "MDOPS_KUBECONFIG" in env else {"MDOPS_IN_CLUSTER": "true"}), **filled},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
