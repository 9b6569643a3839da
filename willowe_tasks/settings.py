"""Settings: the one place that reads the environment.

Names and defaults follow the integration guide (``KAFKA_BROKER``,
``KAFKA_CLIENT_ID``, …). A ``.env`` file in the working directory is read
too; real environment variables win over it. A bad value fails at start-up
with :class:`SettingsError`, which names the variable and what it expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from willowe_tasks import analytics

__all__ = ["Settings", "SettingsError", "get_settings", "load_settings", "settings_from"]


class SettingsError(ValueError):
    """One or more environment variables have values we can't use."""


class Settings(BaseSettings):
    """Every setting, under the environment variable of the same name in upper case."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True,
    )

    kafka_broker: str = Field(
        "localhost:9092",
        description="Kafka bootstrap servers, host:port, comma-separated for several.",
    )
    kafka_client_id: str = Field("willowe-notifications", min_length=1)
    kafka_group_id: str = Field("notifications-group", min_length=1)
    kafka_retry_initial: int = Field(
        100, ge=1, le=3_600_000,
        description="First retry backoff in milliseconds; doubles on each retry.",
    )
    kafka_retry_retries: int = Field(8, ge=0, le=1000, description="Retries before a dead letter.")

    # Where the workers keep their state (SQLite files work for several
    # worker processes on one host; see README for a server database).
    device_registry_path: Path = Field(Path(".cache/willowe/devices.sqlite3"))
    delivery_log_path: Path = Field(Path(".cache/willowe/delivery-log.sqlite3"))
    analytics_path: Path = Field(Path(".cache/willowe/analytics.jsonl"))

    # The analytics file rotates by size and keeps the newest pieces, so a
    # host needs at most MAX_BYTES × (KEEP_FILES + 1) of disk for it.
    analytics_max_bytes: int = Field(
        analytics.DEFAULT_MAX_BYTES, ge=analytics.MAX_LINE_BYTES, le=2**40,
        description="Size in bytes at which the analytics file is rotated; "
                    "at least the longest line.",
    )
    analytics_keep_files: int = Field(
        analytics.DEFAULT_KEEP_FILES, ge=1, le=10_000,
        description="Rotated analytics pieces kept; older ones are deleted.",
    )
    analytics_fsync_interval_ms: int = Field(
        analytics.DEFAULT_FSYNC_INTERVAL_MS, ge=0, le=60_000,
        description="Longest wait in ms before a recorded line is fsynced; 0 fsyncs each line.",
    )

    # APNs: token auth (.p8 key) or certificate auth; endpoint production,
    # sandbox or a URL (local fakes).
    apns_endpoint: str = Field("sandbox")
    apns_topic: str = Field("com.willowe.app", min_length=1, description="the app's bundle id")
    apns_key_file: Path | None = None
    apns_key_id: str | None = None
    apns_team_id: str | None = None
    apns_cert_file: Path | None = None
    apns_cert_key_file: Path | None = None
    apns_ca_file: Path | None = None

    # FCM HTTP v1 with a service account.
    fcm_project_id: str | None = None
    fcm_service_account_file: Path | None = None
    fcm_endpoint: str | None = None
    fcm_ca_file: Path | None = None

    push_timeout_s: float = Field(10.0, gt=0, le=120)

    # The brake on removing tokens (willowe_tasks/token_guard.py): when over
    # this share of a window's pushes reject their tokens for one reason, the
    # setup is the likely cause and no token is removed.
    token_guard_max_share: float = Field(0.5, gt=0, le=1)
    token_guard_window_s: float = Field(300.0, gt=0, le=86_400)
    token_guard_min_pushes: int = Field(20, ge=1, le=1_000_000)

    # Housekeeping in each worker (willowe_tasks/housekeeping.py).
    ledger_retention_days: float = Field(
        31, gt=0, le=3650,
        description="Settled ledger pairs are forgotten after this; at least the longest"
                    " lifetime of a notification (30 days).")
    invalid_device_retention_days: float = Field(90, gt=0, le=3650)
    housekeeping_interval_s: float = Field(3600, ge=1, le=7 * 86_400)

    # Metrics (willowe_tasks/metrics.py): each `dramatiq willowe_tasks` run
    # serves one scrape for all its processes; the lag exporter
    # (willowe_tasks/exporter.py) serves what Kafka knows.
    metrics_enabled: bool = Field(True, description="Workers count and serve metrics.")
    metrics_host: str = Field(
        "0.0.0.0", min_length=1,
        description="Address the workers' metrics endpoint listens on (all, for Prometheus"
                    " on another host).")
    metrics_port: int = Field(9191, ge=1, le=65_535,
                              description="Port of the workers' metrics endpoint.")
    metrics_dir: Path = Field(
        Path(".cache/willowe/metrics"),
        description="Where worker processes share their counts (prometheus-client's"
                    " multiprocess files), a folder per run inside.")
    metrics_exporter_port: int = Field(9192, ge=1, le=65_535,
                                       description="Default port of the lag exporter.")

    @field_validator("apns_endpoint")
    @classmethod
    def _apns_endpoint(cls, value: str) -> str:
        if value not in ("production", "sandbox") and not value.startswith("https://"):
            raise ValueError("expected 'production', 'sandbox' or an https:// URL")
        return value

    @model_validator(mode="after")
    def _credentials_complete(self) -> Settings:
        token = (self.apns_key_file, self.apns_key_id, self.apns_team_id)
        if any(token) and not all(token):
            raise ValueError(
                "APNS_KEY_FILE, APNS_KEY_ID and APNS_TEAM_ID go together; set all three"
            )
        if bool(self.apns_cert_file) != bool(self.apns_cert_key_file):
            raise ValueError("APNS_CERT_FILE and APNS_CERT_KEY_FILE go together; set both")
        if bool(self.fcm_project_id) != bool(self.fcm_service_account_file):
            raise ValueError(
                "FCM_PROJECT_ID and FCM_SERVICE_ACCOUNT_FILE go together; set both"
            )
        return self

    @model_validator(mode="after")
    def _ledger_outlives_notifications(self) -> Settings:
        from willowe_tasks.kinds import longest_lifetime_s

        longest_days = longest_lifetime_s() / 86_400
        if self.ledger_retention_days < longest_days:
            raise ValueError(
                f"LEDGER_RETENTION_DAYS must be at least {longest_days:g}, the longest lifetime"
                f" of a notification (got {self.ledger_retention_days:g}): a redelivery within"
                " it would otherwise be pushed again")
        return self

    @field_validator("kafka_broker")
    @classmethod
    def _host_port_list(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers:
            raise ValueError("expected host:port[,host:port…]")
        for server in servers:
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port[,host:port…]; {server!r} is not host:port")
        return ",".join(servers)

    @property
    def bootstrap_servers(self) -> list[str]:
        return self.kafka_broker.split(",")


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (and ``.env``); raise :class:`SettingsError` naming
    each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        raise SettingsError(_describe(e)) from None


def settings_from(variables: Mapping[str, str]) -> Settings:
    """Settings from these environment variables (``{"KAFKA_BROKER": …}``), on
    top of the environment: for tools that start workers with a given
    environment and act with the same settings themselves."""
    return load_settings(**{name.lower(): value for name, value in variables.items()})


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:  # a rule across several variables names them itself
            lines.append(message)
            continue
        field = str(item["loc"][0])
        lines.append(f"{field.upper()}: {message} (got {item.get('input')!r})")
    return "invalid settings:\n  " + "\n  ".join(lines)
