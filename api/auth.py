"""Bearer tokens: who a token is, and what it may do.

``OPS_API_TOKEN`` is the admin token (every permission). A tokens file adds named tokens, each with
its permissions::

    tokens:
      - name: console
        token_sha256: e82e2f1f2a2ad3562c7cda1a94a49d74c7b72d41f07128a289d95ff8b039168f
        permissions: [status:read, metrics:read]
      - name: ci
        token: change-me-to-16-or-more-characters
        permissions: [status:read, "runbooks:execute:health_check"]

A presented token is compared, in constant time, with every configured one (no early exit), and is
never logged or kept beyond the request. Refused at start: a token shorter than :data:`MIN_TOKEN_LENGTH`
or with a character outside visible ASCII (an HTTP header carries nothing else as it is), a name with a
control character (it is recorded as the runs' ``requestedBy``), a name that is another's (``admin``
beside ``OPS_API_TOKEN``; ``schedule:...``, the schedules' runs), two entries (or the admin token and an
entry) with the same secret, and a tokens file that others may read (:func:`check_private`). The tokens
file is read again when it changes (:class:`TokenStore`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from api.errors import Forbidden
from runbooks import approval
from runbooks.contract import EXECUTE, PERMISSIONS, STATUS_READ, Command, is_token
from runbooks.models import Person
from runbooks.schedule import REQUESTER_PREFIX
from runbooks.settings import problems
from runbooks.yamlfile import load_yaml

if TYPE_CHECKING:
    from api.records import RunbookRecord

log = logging.getLogger(__name__)

ADMIN = "admin"
MIN_TOKEN_LENGTH = 16
RELOAD_CHECK_SECONDS = 1.0  # how often, at most, the tokens file is looked at for a change


class TokensFileError(ValueError):
    """The tokens file may not be used as it is."""


def execute_permission(command: Command | str) -> str:
    return f"{EXECUTE}:{Command(command).value}"


@dataclass(frozen=True)
class Principal:
    """The identity behind a token: a name (recorded as the Runbook's requestedBy) and permissions."""

    name: str
    permissions: frozenset[str]

    def allows(self, permission: str) -> bool:
        if permission in self.permissions:
            return True
        # runbooks:execute grants every runbooks:execute:<command>
        return permission.startswith(f"{EXECUTE}:") and EXECUTE in self.permissions

    def may_execute_something(self) -> bool:
        return any(p == EXECUTE or p.startswith(f"{EXECUTE}:") for p in self.permissions)


@dataclass(frozen=True)
class Requirement:
    """What a route asks of a token, from its permissions alone: the edge (:mod:`api.edge`) checks it
    before it reads a request's body, so that a token without it learns nothing from the body and makes
    the server read none; the route's dependency (:mod:`api.deps`) checks it again."""

    allows: Callable[[Principal], bool]
    lacking: str  # what the 403 says the token lacks

    def check(self, principal: Principal) -> Principal:
        if not self.allows(principal):
            raise Forbidden(f"token {principal.name!r} lacks the permission {self.lacking}")
        return principal


def permission(name: str) -> Requirement:
    return Requirement(lambda principal: principal.allows(name), repr(name))


def reads(principal: Principal, record: RunbookRecord) -> bool:
    """Whether ``principal`` may read the run of ``record``: any run with status:read, else its own."""
    return principal.allows(STATUS_READ) or record.requested_by == principal.name


class TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Person = Field(min_length=1)
    token: SecretStr | None = Field(None, min_length=MIN_TOKEN_LENGTH)
    token_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    permissions: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _a_persons(cls, name: str) -> str:
        if name.startswith(REQUESTER_PREFIX):
            raise ValueError(f"{REQUESTER_PREFIX}... names the runs of RunbookSchedules")
        if not approval.person(name):  # its approvals would be made, and never count
            raise ValueError(f"{approval.SYSTEM_PREFIX}... names Kubernetes' own identities, not a person")
        return name

    @field_validator("token")
    @classmethod
    def _visible_ascii(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None:
            visible(token.get_secret_value(), "the token")
        return token

    @field_validator("permissions")
    @classmethod
    def _known(cls, permissions: list[str]) -> list[str]:
        unknown = sorted(set(permissions) - PERMISSIONS)
        if unknown:
            raise ValueError(f"unknown permission(s) {unknown}; known: {sorted(PERMISSIONS)}")
        return permissions

    @model_validator(mode="after")
    def _one_secret(self) -> TokenEntry:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError(f"token {self.name!r}: give exactly one of token and token_sha256")
        return self

    def digest(self) -> bytes:
        if self.token_sha256 is not None:
            return bytes.fromhex(self.token_sha256)
        assert self.token is not None
        return hashlib.sha256(self.token.get_secret_value().encode()).digest()


def visible(secret: str, what: str) -> None:
    if not is_token(secret):
        raise TokensFileError(
            f"{what} has a character outside visible ASCII (! to ~): no client could send it"
        )


class TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: list[TokenEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> TokensFile:
        names = [t.name for t in self.tokens]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate token name(s): {duplicates}")
        return self


def file_version(path: Path | None) -> tuple[int, ...] | None:
    """What tells that a file changed: its device and inode (a Secret's update swaps a link to a new file),
    size and time; None for no file, or one that is not there."""
    try:
        info = os.stat(path) if path is not None else None
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_mode) if info else None


def check_private(path: Path) -> None:
    """Refuse a tokens file that others may read or change. Owner-only (0600 or less), as ssh asks of its
    keys; group read is allowed only for a file owned by root read by another user, as PostgreSQL allows
    for its keys: how Kubernetes mounts a Secret (root, the pod's fsGroup, ``defaultMode: 0440``)."""
    info = os.stat(path)
    mode = stat.S_IMODE(info.st_mode)
    allowed = 0o640 if info.st_uid == 0 and os.geteuid() != 0 else 0o600
    if mode & ~allowed:
        raise TokensFileError(
            f"{path}: mode {mode:04o} lets others read or change the tokens; allowed: {allowed:04o} or less "
            f"(chmod {allowed:o} {path})"
        )


class TokenStore:
    """The configured tokens, kept as SHA-256 digests; ``authenticate`` is constant time in the token.

    The tokens file is read again once it changed (looked at, by its inode, size and time, at most every
    ``RELOAD_CHECK_SECONDS`` as requests come): a token added or revoked takes effect without a restart, as
    Kubernetes updates a mounted Secret in place. A changed file that cannot be used (malformed, open to
    others, gone) is refused with an error in the log, once per change, and the tokens read before stay in
    effect, as they would after a restart refused."""

    def __init__(
        self,
        admin_token: SecretStr | None,
        tokens_file: Path | None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._admin_token, self._tokens_file, self._clock = admin_token, tokens_file, clock
        self._version = file_version(tokens_file)
        self._entries = self._read(admin_token, tokens_file)
        self._looked = clock()

    @classmethod
    def load(cls, admin_token: SecretStr | None, tokens_file: Path | None) -> TokenStore:
        """The tokens; :class:`TokensFileError` if they may not be used (the API does not start)."""
        return cls(admin_token, tokens_file)

    def _reload(self) -> None:
        """Read the tokens file again if it changed since it was last read (or refused)."""
        now = self._clock()
        if self._tokens_file is None or now - self._looked < RELOAD_CHECK_SECONDS:
            return
        self._looked = now
        version = file_version(self._tokens_file)
        if version == self._version:
            return
        self._version = version
        try:
            entries = self._read(self._admin_token, self._tokens_file)
        except (ValueError, OSError) as error:  # TokensFileError, not YAML, not UTF-8; unreadable, gone
            log.error(
                "the tokens file changed and cannot be used, the tokens before stay in effect: %s", error
            )
            return
        # A token kept as it was keeps its principal (:meth:`holds`); a revoked one's goes.
        before = dict(self._entries)
        self._entries = [
            (digest, before[digest] if before.get(digest) == principal else principal)
            for digest, principal in entries
        ]
        log.info("the tokens file changed and was read again; tokens in effect: %d", len(self._entries))

    def holds(self, principal: Principal) -> bool:
        """Whether ``principal`` (as :meth:`authenticate` gave it) is still in effect: its token was not
        revoked, nor its name or permissions changed, since (the file read again if it changed)."""
        self._reload()
        return any(held is principal for _, held in self._entries)

    @staticmethod
    def _read(admin_token: SecretStr | None, tokens_file: Path | None) -> list[tuple[bytes, Principal]]:
        entries: list[tuple[bytes, Principal]] = []
        if admin_token is not None and admin_token.get_secret_value():
            secret = admin_token.get_secret_value()
            if len(secret) < MIN_TOKEN_LENGTH:
                raise TokensFileError(f"OPS_API_TOKEN is shorter than {MIN_TOKEN_LENGTH} characters")
            visible(secret, "OPS_API_TOKEN")
            entries.append((hashlib.sha256(secret.encode()).digest(), Principal(ADMIN, PERMISSIONS)))
        if tokens_file is not None:
            check_private(Path(tokens_file))
            try:  # pydantic's message would show the values given: the tokens
                listed = TokensFile.model_validate(load_yaml(tokens_file) or {}).tokens
            except ValidationError as error:
                raise TokensFileError(f"{tokens_file}: {problems(error)}") from None
            admin_named = bool(entries)  # by OPS_API_TOKEN
            for entry in listed:
                if entry.name == ADMIN and admin_named:
                    raise TokensFileError(f"token {ADMIN!r}: the name of OPS_API_TOKEN's holder")
                entries.append((entry.digest(), Principal(entry.name, frozenset(entry.permissions))))
        owners: dict[bytes, str] = {}
        for digest, principal in entries:
            if digest in owners:
                raise TokensFileError(f"tokens {owners[digest]!r} and {principal.name!r} are the same secret")
            owners[digest] = principal.name
        return entries

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, token: str) -> Principal | None:
        """The principal whose token this is, or None. Every entry is compared, matched or not."""
        self._reload()
        presented = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found = None
        for digest, principal in self._entries:
            if hmac.compare_digest(presented, digest) and found is None:
                found = principal
        return found
