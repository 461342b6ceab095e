"""Settings shared by the controller and the API, read once from ``MDOPS_*`` environment variables."""

from __future__ import annotations

import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from runbooks.calendar import SessionCalendar


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MDOPS_", extra="ignore")

    kubeconfig: Path | None = Field(None, description="Kubeconfig of a loopback API server (local use).")
    in_cluster: bool = Field(False, description="Use the pod's service account instead of a kubeconfig.")
    namespace: str = Field("mdops", description="Namespace the Runbooks live in.")
    timezone: str = Field("Asia/Shanghai", description="Exchange time zone: windows and API timestamps.")
    day_session: str = Field("09:00-15:00", description="Day trading window, HH:MM-HH:MM exchange time.")
    night_session: str = Field("21:00-02:30", description="Night trading window; may cross midnight.")

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

    @property
    def calendar(self) -> SessionCalendar:
        return SessionCalendar.parse(self.day_session, self.night_session, self.zone)
