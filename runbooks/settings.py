"""Settings shared by the controller and the API, read once from ``MDOPS_*`` environment variables."""

from __future__ import annotations

import datetime
import difflib
import json
import socket
from functools import cached_property
from pathlib import Path
from typing import Any, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from runbooks import keys
from runbooks.calendar import DEFAULT_WINDOWS, State, VenueCalendar
from runbooks.models import Window
from runbooks.venues import VENUES


class CommonSettings(BaseSettings):
    # JSON values (dicts, lists) are decoded by _json below, not by pydantic-settings, whose error for one
    # that is no JSON is a traceback (SettingsError) that names the field but not the variable.
    model_config = SettingsConfigDict(env_prefix="MDOPS_", extra="ignore", enable_decoding=False)

    kubeconfig: Path | None = Field(None, description="Kubeconfig of a loopback API server (local use).")
    in_cluster: bool = Field(False, description="Use the pod's service account instead of a kubeconfig.")
    namespace: str = Field(
        "mdops",
        pattern=keys.DNS_LABEL,
        max_length=63,
        description="Namespace the Runbooks live in.",
    )
    timezone: str = Field(
        "Asia/Shanghai",
        description="Time zone of the times shown (API timestamps, sessions) and of cron triggers.",
    )
    venue: str = Field(
        "XHKG",
        pattern=r"^[A-Za-z0-9/]{1,16}$",
        description="Venue whose sessions count: an exchange_calendars name (XHKG, XSHG, XSES, XTKS...).",
    )
    pre_open_minutes: int = Field(
        30, ge=0, le=720, description="Minutes before a session's open that are its pre-open."
    )
    calendar_cache: Path | None = Field(
        None,
        description="A file that keeps the venue's session table between starts: a restarted process reads "
        "it in milliseconds instead of building it (about 1.5 s of CPU). None: built at every start.",
    )
    session_windows: dict[State, Window] = Field(
        default_factory=lambda: dict(DEFAULT_WINDOWS),
        description="The window (day or night) that window: auto resolves to in each session state; "
        "give all five states.",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _json(cls, value: Any, info: ValidationInfo) -> Any:
        """The JSON of a dict or list setting given as text (an environment variable's)."""
        annotation = cls.model_fields[info.field_name].annotation if info.field_name else None
        if isinstance(value, str) and get_origin(annotation) in (dict, list):
            try:
                return json.loads(value)
            except ValueError as error:  # its message has the place, never the text (a secret's)
                raise ValueError(f"not JSON: {error}") from None
        return value

    @field_validator("venue")
    @classmethod
    def _known_venue(cls, value: str) -> str:
        """A venue exchange_calendars does not know is refused as the process starts, not at its first run
        (where each run needing the sessions would fail with CalendarUnavailable)."""
        if value not in VENUES:
            close = difflib.get_close_matches(value.upper(), VENUES, n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ValueError(f"unknown venue {value!r}: not an exchange_calendars name{hint}")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(
                f"unknown time zone {value!r}: give an IANA name, e.g. Asia/Hong_Kong"
            ) from error
        return value

    @field_validator("session_windows")
    @classmethod
    def _every_state(cls, value: dict[State, Window]) -> dict[State, Window]:
        missing = [state.value for state in State if state not in value]
        if missing:
            raise ValueError(f"give a window for every session state; missing: {', '.join(missing)}")
        return value

    @model_validator(mode="after")
    def _credentials(self):
        if not self.in_cluster and self.kubeconfig is None:
            raise ValueError(
                "set MDOPS_KUBECONFIG (a path to a loopback kubeconfig) or MDOPS_IN_CLUSTER=true"
            )
        return self

    @property
    def zone(self) -> datetime.tzinfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def calendar(self) -> VenueCalendar:
        """The venue's sessions, loaded at first use (see runbooks.calendar) and kept for the process."""
        return VenueCalendar(
            self.venue,
            pre_open=datetime.timedelta(minutes=self.pre_open_minutes),
            windows=self.session_windows,
            zone=self.zone,
            cache=self.calendar_cache,
        )


def variable(settings: type[BaseSettings], field: str) -> str:
    """The environment variable that sets ``field`` of ``settings``: its alias, else the prefixed name."""
    alias = settings.model_fields[field].validation_alias if field in settings.model_fields else None
    return (
        alias if isinstance(alias, str) else f"{settings.model_config.get('env_prefix', '')}{field}".upper()
    )


def problems(error: ValidationError, settings: type[BaseSettings] | None = None) -> str:
    """``error``'s problems on one line, each after the variable it is of (``MDOPS_API_PORT: Input should
    be a valid integer ...``), or after the place in the document it is of when ``settings`` is None
    (``tokens: 0: token: ...``); never the values given, which pydantic's own message shows (a token's
    too, when the problem is the whole environment's)."""
    said = []
    for problem in error.errors(include_url=False, include_input=False, include_context=False):
        message = problem["msg"].removeprefix("Value error, ")
        field, *within = problem["loc"] or ("",)
        where = [variable(settings, str(field)) if settings else str(field)] if field != "" else []
        said.append(": ".join([*where, *map(str, within), message]))
    return "; ".join(said)


def cannot_listen(host: str, port: int) -> str | None:
    """Why a server could not listen on ``host:port`` now (None: it could, or port 0: any free one)."""
    if not port:
        return None
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        with socket.create_server((host, port), family=family):
            return None
    except OSError as error:
        return error.strerror or str(error)
