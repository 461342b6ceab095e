"""``python -m api``: serve the Ops Console REST API with uvicorn (settings from the environment)."""

from __future__ import annotations

import functools
import logging
import sys

import uvicorn
from kubernetes.config import ConfigException
from pydantic import ValidationError

from api import server
from api.auth import TokenStore
from api.main import create_app
from api.settings import ApiSettings, get_settings
from runbooks.kube import NotLoopbackError, configuration
from runbooks.settings import cannot_listen, problems


def main() -> int:
    try:
        settings = get_settings()
    except ValidationError as error:  # a settings error: which variable, without a traceback or the values
        print(f"python -m api: invalid settings: {problems(error, ApiSettings)}", file=sys.stderr)
        return 2
    try:  # what the app's start would read: unreadable credentials are a message, not a traceback
        configuration(settings.kubeconfig, settings.in_cluster)
    except (ConfigException, NotLoopbackError, OSError, ValueError) as error:
        print(f"python -m api: cannot log in to the API server: {error}", file=sys.stderr)
        return 2
    try:  # what the app's start would load: a refusal in one line, without the tokens
        TokenStore.load(settings.api_token, settings.api_tokens_file)
    except (OSError, ValueError) as error:
        print(f"python -m api: invalid tokens: {error}", file=sys.stderr)
        return 2
    if problem := cannot_listen(settings.api_host, settings.api_port):  # uvicorn: exit 3, no variable named
        where = f"{settings.api_host}:{settings.api_port} (MDOPS_API_HOST, MDOPS_API_PORT)"
        print(f"python -m api: cannot listen on {where}: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.api_log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # uvicorn's access log shows method, path and status: never headers, so never a token.
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.api_log_level,
        proxy_headers=False,
        timeout_keep_alive=settings.api_keep_alive_seconds,
        http=functools.partial(server.Protocol, read_seconds=settings.api_read_timeout_seconds),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
