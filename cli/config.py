"""Where mdops connects to: the API's URL and a token, from flags, the environment or a named context.

The config file (``$MDOPS_CONFIG``, else ``config.yaml`` in the user's config folder, ``~/.config/mdops``
on Linux) holds named contexts, like a kubeconfig::

    current-context: local
    contexts:
      local: {url: "http://127.0.0.1:8080", token: "..."}

It holds tokens (and perhaps passwords in URLs: mdops shows a URL with its password as ``***``,
:func:`shown_url`): it is written 0600 (a new file made 0600 and renamed over the old one, so it is never
readable by others, not even for a moment) and refused when its mode lets anyone else read or write it.
"""

from __future__ import annotations

import dataclasses
import re
import stat
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import click
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cli.errors import CliError, Exit
from runbooks.contract import is_token
from runbooks.yamlfile import YamlFileError, load_yaml
from runner.result import write_atomically

URL_ENV, TOKEN_ENV, CONFIG_ENV = "MDOPS_API_URL", "MDOPS_API_TOKEN", "MDOPS_CONFIG"
REDACTED = "REDACTED"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


class ContextEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    token: str = ""


class ConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    current_context: str | None = Field(None, alias="current-context")
    contexts: dict[str, ContextEntry] = {}


@dataclass(frozen=True)
class Connection:
    url: str
    token: str = field(repr=False)
    source: str  # where url and token came from, in words, for messages


def config_path(env: Mapping[str, str]) -> Path:
    return Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else Path(click.get_app_dir("mdops")) / "config.yaml"


@dataclass
class Config:
    path: Path
    file: ConfigFile

    @classmethod
    def load(cls, path: Path) -> Config:
        """The config file; an empty one when there is none. Refused when others may read or change it."""
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            return cls(path, ConfigFile())
        except OSError as error:  # a path under a file, one mdops may not look at
            raise CliError(f"cannot read the config file {path}: {error.strerror}", Exit.CONFIG) from error
        if mode & 0o077:
            raise CliError(
                f"the config file {path} is open to others (mode {mode:04o}) and holds tokens: not used",
                Exit.CONFIG,
                f"chmod 600 {path}",
            )
        try:
            data = load_yaml(path) or {}
            return cls(path, ConfigFile.model_validate(data))
        except (OSError, UnicodeDecodeError, YamlFileError) as error:
            raise CliError(f"cannot read the config file {path}: {error}", Exit.CONFIG) from error
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors(include_url=False)
            )
            raise CliError(f"the config file {path} is malformed: {problems}", Exit.CONFIG) from error

    def save(self) -> None:
        text = yaml.safe_dump(self.dump(), sort_keys=False)
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomically(str(self.path), text, mode=0o600)
        except OSError as error:
            raise CliError(
                f"cannot write the config file {self.path}: {error.strerror}", Exit.CONFIG
            ) from error

    def dump(self, redact: bool = False) -> dict:
        """The file's content; ``redact``: as shown, without tokens and the passwords of URLs."""
        data = self.file.model_dump(by_alias=True, exclude_none=True)
        if redact:
            for entry in data["contexts"].values():
                entry["token"] = REDACTED if entry["token"] else ""
                entry["url"] = shown_url(entry["url"])
        return data

    def context(self, name: str) -> Connection:
        entry = self.file.contexts.get(name)
        if entry is None:
            known = ", ".join(sorted(self.file.contexts)) or "none"
            raise CliError(
                f"no context {name!r} in {self.path} (contexts: {known})",
                Exit.CONFIG,
                "`mdops config set-context NAME --url URL --token TOKEN` adds one",
            )
        return Connection(entry.url, entry.token, f"context {name!r} of {self.path}")


def resolve(url: str | None, token: str | None, context: str | None, env: Mapping[str, str]) -> Connection:
    """The connection, from (first that applies):

    1. the context named by ``--context``;
    2. ``MDOPS_API_URL`` and ``MDOPS_API_TOKEN`` (what ``. .mdops/stack.env`` sets);
    3. the config file's current context;

    then ``--url`` and ``--token`` replace what they give. A URL and a token are taken together from one
    source, so that a token is never sent to another source's server unless the command line says so: with
    ``--url`` to another server than a context's, the token is ``--token``'s or ``MDOPS_API_TOKEN``'s, never
    the context's. The token is taken without the whitespace around it (a line end kept from a file).
    """
    away = ""  # why a context's token is not used
    if context is None and env.get(URL_ENV):
        found = Connection(env[URL_ENV], env.get(TOKEN_ENV, ""), f"{URL_ENV} and {TOKEN_ENV}")
    elif context is None and url is not None and token is not None:
        found = None
    else:
        config = Config.load(config_path(env))
        name = context if context is not None else config.file.current_context
        found = None if name is None else config.context(name)
        if found is None and url is None:
            raise CliError(
                "no API to talk to: no --url, no MDOPS_API_URL and no current context",
                Exit.CONFIG,
                "`. .mdops/stack.env` for the local stack, or `mdops config set-context` and `use-context`",
            )
        if found is not None and url is not None and token is None and _server(url) != _server(found.url):
            away = f"; the token of {found.source} is for {shown_url(found.url)} only"
            found = None
    if found is None:
        given = "--token" if token is not None else TOKEN_ENV
        connection = Connection(
            url, token if token is not None else env.get(TOKEN_ENV, ""), f"--url and {given}{away}"
        )
    else:
        overrides = " and ".join(
            flag for flag, value in (("--url", url), ("--token", token)) if value is not None
        )
        connection = Connection(
            url or found.url,
            token if token is not None else found.token,
            found.source + (f"; {overrides} from the command line" if overrides else ""),
        )
    if problem := url_problem(connection.url):
        raise CliError(
            f"the API URL {shown_url(connection.url)!r} ({connection.source}) {problem}", Exit.CONFIG
        )
    connection = dataclasses.replace(connection, token=connection.token.strip())
    if not connection.token:
        raise _no_token(connection.url, connection.source)
    if not is_token(connection.token):
        raise CliError(
            f"the token ({connection.source}) has a character outside visible ASCII (! to ~), which no API "
            "token has and an HTTP header cannot carry: not sent",
            Exit.CONFIG,
            "copy the token again",
        )
    return connection


def _server(url: str) -> str:
    """Where a token sent to ``url`` goes: its scheme, host and port (``http://api:8080``)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # not a URL: refused as such
        return url
    return f"{parts.scheme}://{parts.netloc.lower()}"


def shown_url(url: str) -> str:
    """``url`` as mdops shows it, in messages and listings: a password in it replaced by ``***``
    (``http://user:***@host:8080``). It reads the text as it is, a URL or not (one refused as no URL is
    named in the error): the password is what comes between the first ``:`` and the last ``@`` of what
    follows the scheme up to the first ``/``, ``?`` or ``#``, whatever the HTTP client would make of it."""
    scheme = match.group() if (match := _SCHEME.match(url)) else ""
    rest = url[len(scheme) :]
    end = min((place for place in map(rest.find, "/?#") if place >= 0), default=len(rest))
    userinfo, at, host = rest[:end].rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{userinfo.partition(':')[0]}:***@{host}{rest[end:]}"


def url_problem(url: str) -> str | None:
    """Why mdops cannot talk to ``url``, or None: it must be http:// or https://, with a host, a port (if
    any) that is a port, and no user name or password, which the HTTP client would send in the place of
    the token (as basic authentication), so that the API would never see the token."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (read for its ValueError: a port that is no number from 0 to 65535)
    except ValueError:  # also an unclosed IPv6 bracket
        return "is not an http:// or https:// URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http:// or https:// URL"
    if parts.username is not None:
        return "holds a user name or password: mdops sends its token instead, and could not send both"
    return None


def _no_token(url: str, source: str) -> CliError:
    return CliError(
        f"no token for {shown_url(url)} ({source})",
        Exit.CONFIG,
        f"give --token, set {TOKEN_ENV} or add a token to the context",
    )
