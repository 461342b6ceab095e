"""The API's settings, read once from the environment (``MDOPS_*``, and ``OPS_API_TOKEN`` without prefix)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from limits import parse_many
from pydantic import Field, SecretStr, field_validator

from runbooks.models import ConfigSet, Name, TimeoutSeconds, WindowChoice
from runbooks.settings import CommonSettings


class ApiSettings(CommonSettings):
    api_token: SecretStr | None = Field(
        None,
        validation_alias="OPS_API_TOKEN",
        description="The admin bearer token (every permission, name 'admin').",
    )
    api_tokens_file: Path | None = Field(
        None, description="YAML file of named tokens with permissions (see the README)."
    )
    prometheus_url: str = Field("http://127.0.0.1:9090", description="Prometheus the metrics come from.")
    prometheus_timeout_seconds: float = Field(
        5.0, gt=0, le=60, description="Timeout of one Prometheus query, its whole answer (no retries)."
    )
    api_metrics_max_age_seconds: float = Field(
        2.0,
        ge=0,
        le=300,
        description="How long a metrics summary or timeseries answer is reused for every client (concurrent "
        "requests share one set of queries anyway; the console refreshes this often); keep it at most "
        "Prometheus' scrape interval. 0: computed for each request.",
    )
    api_host: str = Field("127.0.0.1", description="Address uvicorn listens on.")
    api_port: int = Field(8080, ge=0, le=65535, description="Port uvicorn listens on.")
    api_max_body_bytes: int = Field(
        32768, ge=1024, le=16 * 1024 * 1024, description="Largest request body; a larger one is a 413."
    )
    api_read_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Seconds a client has to send a whole request (head and body) from its first byte or its "
        "connection's start; then a 408 and the connection closed. Also how long the server waits for a "
        "client that reads nothing of its answers (they fill the buffers); then the connection is dropped.",
    )
    api_keep_alive_seconds: int = Field(
        5,
        ge=5,
        le=3600,
        description="Seconds an idle kept-alive connection stays open. A request sent on a connection as the "
        "server closes it is lost to its client: behind a proxy or load balancer that keeps its connections "
        "to the API idle for up to N s, make this longer than N. mdops keeps its own for 4 s.",
    )
    api_execute_wait_seconds: float = Field(
        30.0, ge=0, le=3600, description="How long execute waits for the run's end before answering 202."
    )
    api_default_mode: Name = Field("live", description="Mode when the request names none.")
    api_default_profile: Name = Field("primary", description="Profile when the request names none.")
    api_default_config: ConfigSet = Field("", description="Config set when the request names none.")
    api_default_window: WindowChoice = Field(
        "auto", description="Window when the request names none; auto: the controller resolves it."
    )
    api_default_enforce: bool = Field(False, description="enforce when the request does not say.")
    api_default_timeout_seconds: TimeoutSeconds = Field(
        300, description="timeoutSeconds of the Runbook when the request names none."
    )
    api_execute_rate: str = Field(
        "30/minute",
        description="Per token: how many Runbooks execute may create, in the notation of the limits library "
        "('30/minute', '10/minute;200/day'); past it a 429 with Retry-After. Empty: no limit.",
    )
    api_max_unfinished_per_token: int = Field(
        20, ge=0, description="Per token: Runbooks it may have unfinished at once; past it a 429. 0: no cap."
    )
    api_history: int = Field(20, ge=1, le=1000, description="Entries in status' history, audit and health.")
    api_sync_wait_seconds: float = Field(
        10.0, ge=0, description="How long a request waits for the Runbook cache's first sync before a 503."
    )
    api_watch_grace_seconds: float = Field(
        15.0, ge=0, description="How long the Runbook watch may be down before /readyz answers 503."
    )
    api_events_buffer: int = Field(
        1000, ge=10, le=100000, description="Live-update events kept for clients that resume (Last-Event-ID)."
    )
    api_events_heartbeat_seconds: float = Field(
        15.0, gt=0, le=300, description="Seconds between heartbeats of an idle event stream."
    )
    api_events_streams_per_token: int = Field(
        8, ge=1, le=1000, description="Event streams one token may hold open at once (429 past it)."
    )
    api_log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")

    @field_validator("prometheus_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        """Refused at the start, not at every metrics request; the message never repeats the URL (it may
        hold a password)."""
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 (read for its ValueError: a port that is no number from 0 to 65535)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http:// or https:// URL with a host")
        return value

    @field_validator("api_execute_rate")
    @classmethod
    def _rate(cls, value: str) -> str:
        if value.strip():
            parse_many(value)  # a ValueError names what it could not parse
        return value


@cache
def get_settings() -> ApiSettings:
    return ApiSettings()
