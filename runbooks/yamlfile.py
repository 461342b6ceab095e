"""YAML files that may hold secrets (a kubeconfig's token, the API's tokens file, the command line's
config): read, and their errors told without their text. PyYAML's message quotes the line it stopped at,
which may be the secret's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class YamlFileError(ValueError):
    """A file that is not YAML; the message says where, never what is written there."""


def load_yaml(path: str | Path) -> Any:
    """The YAML document of ``path`` (OSError, UnicodeDecodeError as they come; YamlFileError)."""
    text = Path(path).read_text()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise YamlFileError(f"{path}: not YAML: {yaml_problem(error)}") from None


def yaml_problem(error: yaml.YAMLError) -> str:
    """What PyYAML found and where (line and column), without the snippet of the file it shows."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{error.problem or error.context}{where}"
    return type(error).__name__
