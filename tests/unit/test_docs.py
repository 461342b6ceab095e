"""Docs that match the code: the README's generated tables (settings, mdops's exit codes) are up to date,
every mdops command line that the README and mdops's own help show parses, every curl request and route it
shows is one of the API's (docs/openapi.json), the README's tokens file is one the API loads, and its
policy rules are those of examples/policies/."""

import json
import re
import shlex

import click
import pytest
import yaml

from api.auth import TokenStore
from cli.commands import cli
from devcluster import settings_doc

README = settings_doc.README.read_text()
# What the shell would put in place of the README's variables: a value of the right kind for each.
SHELL_VALUES = {"$MDOPS_API_URL": "http://127.0.0.1:8080"}
SHELL_VALUE = "fo-2026-12-03"  # $id and the tokens: a request id and a token both parse as this
# Where a shell line runs mdops: at its start, in $(...), after an operator, or as kubectl's plugin.
COMMAND_POSITION = re.compile(r"(?:^\s*|\$\(|[;&|]\s*|kubectl\s+|\$MDOPS_KUBECTL\s+)(mdops )(?=[a-z-])")


def test_readme_generated_tables_are_up_to_date():
    assert settings_doc.render(README) == README, "README.md's generated tables are stale: `make generate`"


def _shell_blocks(text: str) -> list[str]:
    return [line for block in re.findall(r"```sh\n(.*?)```", text, re.S) for line in block.splitlines()]


def _help_examples() -> list[str]:
    """The examples of mdops's help, its own and each command's (config's subcommands included), without
    what their second column says of them."""

    def walk(command: click.Command) -> list[str]:
        text = "\n\n".join([command.help or "", command.epilog or ""])
        lines = [
            re.split(r"\s{2,}", line.strip())[0]
            for examples in re.findall(r"Examples:\n(.*?)(?:\n\s*\n|$)", text, re.S)
            for line in examples.splitlines()
        ]
        for sub in getattr(command, "commands", {}).values():
            lines += walk(sub)
        return lines

    return walk(cli)


def mdops_commands(lines: list[str]) -> list[list[str]]:
    """Each ``mdops ...`` command of shell lines, as the words its process gets: up to the shell's next
    operator or comment, ``"$(mdops ...)"`` included, with the shell's variables given values."""
    commands = []
    for line in lines:
        line = line.replace('"$(', "$(").replace(')"', ")")
        for found in re.finditer(COMMAND_POSITION, line):
            words = shlex.shlex(line[found.start(1) :], posix=True, punctuation_chars=True)
            words.whitespace_split, words.commenters = True, "#"
            command = []
            for word in list(words)[1:]:
                if set(word) <= set("();<>|&"):
                    break
                command.append(SHELL_VALUES.get(word, SHELL_VALUE) if word.startswith("$") else word)
            commands.append(command)
    return commands


def _resolve(args: list[str]) -> tuple[click.Context, list[str]]:
    """The context of the (sub)command that ``args`` name, and the words left for it."""
    context = click.Context(cli, info_name="mdops")
    while isinstance(context.command, click.Group) and args and not args[0].startswith("-"):
        name, *args = args
        command = context.command.get_command(context, name)
        assert command is not None, f"no command {name!r}"
        context = click.Context(command, info_name=name, parent=context)
    return context, args


def parse(args: list[str]) -> None:
    """What mdops does with ``args`` before it asks anything of the API: find the command, parse and
    check its options and arguments (click's errors, a usage error, if it cannot)."""
    context, args = _resolve(args)
    try:
        context.command.make_context(context.info_name, args, parent=context.parent)
    except click.exceptions.Exit as shown:  # --help, --version
        assert shown.exit_code == 0


def unknown_options(args: list[str]) -> list[str]:
    """The options among ``args`` that their command does not have (the values may be placeholders)."""
    context, args = _resolve(args)
    known = {
        name for param in context.command.get_params(context) for name in param.opts + param.secondary_opts
    }
    words = [word.strip("[]") for word in args]  # the usage's [--reason TEXT]
    return [
        word for word in words if word.startswith("-") and word != "-" and word.split("=")[0] not in known
    ]


README_COMMANDS = mdops_commands(_shell_blocks(README))
HELP_COMMANDS = mdops_commands(_help_examples())
# The commands the README's prose names in backticks (`mdops logs ID -f`), outside its code blocks.
PROSE_COMMANDS = mdops_commands(re.findall(r"`(mdops [^`]*)`", re.sub(r"```.*?```", "", README, flags=re.S)))


def test_the_readme_and_the_help_show_mdops_commands():
    assert len(README_COMMANDS) >= 25 and len(HELP_COMMANDS) >= 40 and len(PROSE_COMMANDS) >= 40
    assert ["status"] in README_COMMANDS and ["status"] in HELP_COMMANDS


@pytest.mark.parametrize("args", README_COMMANDS + HELP_COMMANDS, ids=" ".join)
def test_every_mdops_command_shown_parses(args):
    parse(args)


@pytest.mark.parametrize("args", PROSE_COMMANDS, ids=" ".join)
def test_every_option_the_readme_names_exists(args):
    assert unknown_options(args) == []


def test_an_unknown_option_is_found():
    with pytest.raises(click.UsageError):
        parse(["runs", "--status", "failed"])
    assert unknown_options(["cancel", "ID", "--uid", "UID", "--status=failed"]) == ["--status=failed"]


def test_the_readme_tokens_file_loads(tmp_path):
    """The example of the REST API's Auth: a tokens file the API starts with."""
    example = next(b for b in re.findall(r"```yaml\n(.*?)```", README, re.S) if b.startswith("tokens:"))
    path = tmp_path / "tokens.yaml"
    path.write_text(example)
    path.chmod(0o600)
    store = TokenStore.load(None, path)
    for entry in yaml.safe_load(example)["tokens"]:
        if "token" in entry:
            assert store.authenticate(entry["token"]).name == entry["name"]


def test_the_readme_policy_rules_are_the_examples():
    """The README's change windows show the rules of examples/policies/, each under its file's name."""
    excerpt = next(b for b in re.findall(r"```yaml\n(.*?)```", README, re.S) if "allowedStates" in b)
    files = re.findall(r"^# (\S+\.yaml):", excerpt, re.M)
    examples = settings_doc.README.parent / "examples" / "policies"
    rules = [
        rule for name in files for rule in yaml.safe_load((examples / name).read_text())["spec"]["rules"]
    ]
    assert len(files) == 3 and yaml.safe_load(excerpt)["spec"]["rules"] == rules


OPENAPI = json.loads((settings_doc.README.parent / "docs" / "openapi.json").read_text())


def _operation(method: str, path: str) -> dict:
    """The OpenAPI operation that ``method path`` (a concrete path, or one with ``{names}``) is."""
    for template, operations in OPENAPI["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", r"[^/]+", template), path) and method.lower() in operations:
            return operations[method.lower()]
    raise AssertionError(f"the API has no {method} {path}")


def _schema(schema: dict) -> dict:
    """A request body's object schema: its $ref followed, null left out of an anyOf."""
    for option in schema.get("anyOf", [schema]):
        if "$ref" in option:
            return OPENAPI["components"]["schemas"][option["$ref"].rsplit("/", 1)[1]]
        if option.get("type") == "object":
            return option
    raise AssertionError(f"no object schema in {schema}")


BASE = re.compile(r"\$API|\$MDOPS_API_URL|http://127\.0\.0\.1:30080")  # the API's URL in the README


def curls(lines: list[str]) -> list[tuple[str, str, dict, dict]]:
    """The README's curl requests to the API: method, path, query and JSON body."""
    requests = []
    for line in re.sub(r"\\\n\s*", " ", "\n".join(lines)).splitlines():  # continued lines joined
        for command in re.split(r";|&&", line):
            if not command.strip().startswith("curl "):
                continue
            words = shlex.split(command, comments=True)
            data = words[words.index("-d") + 1] if "-d" in words else None
            method = words[words.index("-X") + 1] if "-X" in words else ("POST" if data else "GET")
            for url in [BASE.sub("", word) for word in words if BASE.match(word)]:
                path, _, query = url.partition("?")
                params = dict(pair.split("=", 1) for pair in query.split("&") if pair)
                requests.append((method, path, params, json.loads(data) if data else {}))
    return requests


README_CURLS = curls(_shell_blocks(README))


def test_the_readme_shows_curl_requests():
    assert len(README_CURLS) >= 20
    with pytest.raises(AssertionError, match="the API has no POST /api/ops/status"):
        _operation("POST", "/api/ops/status")


@pytest.mark.parametrize(("method", "path", "query", "body"), README_CURLS, ids=lambda v: str(v)[:60])
def test_every_curl_the_readme_shows_is_an_operation_of_the_api(method, path, query, body):
    operation = _operation(method, path)
    assert set(query) <= {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
    if body:
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert set(body) <= set(_schema(schema)["properties"])


@pytest.mark.parametrize(
    ("method", "path"),
    sorted(
        set(re.findall(r"\b(GET|POST|PUT|PATCH|DELETE) (/api/[a-z_/{}]+[a-z}]|/healthz|/readyz)", README))
    ),
)
def test_every_route_the_readme_names_is_one(method, path):
    _operation(method, path)
