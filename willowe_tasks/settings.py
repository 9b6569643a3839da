"""Settings: the one place that reads the environment.

Names and defaults follow the integration guide (``KAFKA_BROKER``,
``KAFKA_CLIENT_ID``, …). A ``.env`` file in the working directory is read
too; real environment variables win over it. A bad value fails at start-up
with :class:`SettingsError`, which names the variable and what it expected.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "SettingsError", "get_settings", "load_settings"]


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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        message = item["msg"].removeprefix("Value error, ")
        got = item.get("input")
        lines.append(f"{field.upper()}: {message} (got {got!r})")
    return "invalid settings:\n  " + "\n  ".join(lines)
