"""An invalid setting stops the API with a message that names its environment variable, as the README's
Configuration says, and shows none of the values it was given (the admin token among them)."""

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from api.settings import ApiSettings
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
    ],
)
def test_each_problem_names_its_variable(monkeypatch, env, said):
    base = {} if not env else {"MDOPS_IN_CLUSTER": "true", "OPS_API_TOKEN": TOKEN}
    message = problems(_refusal(ApiSettings, {**base, **env}, monkeypatch), ApiSettings)
    assert said in message and "\n" not in message
    assert TOKEN not in message and TOKEN[:6] not in message and "Value error" not in message


def test_a_setting_without_the_prefix_is_named_by_its_alias():
    assert variable(ApiSettings, "api_token") == "OPS_API_TOKEN"
    assert variable(ApiSettings, "api_port") == "MDOPS_API_PORT"


@pytest.mark.parametrize(
    ("env", "said"),
    [({"MDOPS_IN_CLUSTER": "true", "MDOPS_API_PORT": "abc"}, "MDOPS_API_PORT: "), ({}, "MDOPS_KUBECONFIG")],
    ids=["a-bad-port", "no-credentials"],
)
def test_the_api_says_so_in_one_line_without_the_token(env, said):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MDOPS_")}
    done = subprocess.run(
        [sys.executable, "-m", "api"],
        env={**clean, "OPS_API_TOKEN": TOKEN, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("python -m api: invalid settings: ") and done.stderr.count("\n") == 1
    assert said in done.stderr and TOKEN[:6] not in done.stderr and TOKEN[-5:] not in done.stderr
