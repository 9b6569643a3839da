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
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from willowe_tasks import analytics
from willowe_tasks.database_url import DatabaseUrl, InvalidDatabaseUrl

__all__ = ["Settings", "SettingsError", "get_settings", "load_settings", "settings_from"]


#: Shortest operator token the dashboard accepts.
MIN_OPERATOR_TOKEN_CHARS = 16


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

    # When Kafka is away (broker/circuit.py, broker/spool.py): a send fails
    # within KAFKA_SEND_TIMEOUT_MS, then at once until a probe finds Kafka
    # again; SEND_FALLBACK says what send() does instead of failing.
    kafka_send_timeout_ms: int = Field(
        2_000, ge=100, le=120_000,
        description="Longest one send() takes, for metadata and Kafka's acknowledgement.")
    kafka_probe_interval_ms: int = Field(3_000, ge=100, le=600_000)
    # Compression (README, Compression): KAFKA_COMPRESSION is the producers'
    # codec for record batches; PAYLOAD_COMPRESSION compresses each body
    # (with a dictionary, so even a lone record shrinks) before encryption,
    # which leaves Kafka's codec nothing to compress.
    kafka_compression: Literal["none", "gzip", "lz4", "zstd"] = Field(
        "lz4", description="Codec the producers compress record batches with (lz4: "
                           "measured, README Compression).")
    payload_compression: Literal["auto", "none", "zstd"] = Field(
        "auto", description="Compress each body with the shipped zstd dictionary, before "
                            "encryption: zstd always, auto when PAYLOAD_KEYS is set (a plain "
                            "body stays JSON and Kafka's batch codec compresses it better).")
    send_fallback: Literal["raise", "spool", "direct"] = Field(
        "raise",
        description="raise: send() raises ConnectionFailed; spool: the record waits in "
                    "SPOOL_PATH and is sent when Kafka answers; direct: this process "
                    "delivers the notification itself (it needs provider credentials).")
    spool_path: Path | None = None
    spool_max_records: int = Field(100_000, ge=1, le=100_000_000)

    # Static group membership (broker/membership.py): a restarted worker
    # takes its partitions straight back instead of waiting out a session.
    kafka_static_membership: bool = True
    kafka_membership_dir: Path | None = Field(
        None, description="Where a host's worker processes take their slots "
                          "(default: a folder of this user's in the temporary directory).")

    # Where the workers keep their state (SQLite files work for several
    # worker processes on one host; see README for a server database).
    device_registry_path: Path = Field(Path(".cache/willowe/devices.sqlite3"))
    delivery_log_path: Path = Field(Path(".cache/willowe/delivery-log.sqlite3"))
    analytics_path: Path = Field(Path(".cache/willowe/analytics.jsonl"))

    # PostgreSQL for the registry and the ledger, shared by every host, instead
    # of the SQLite files above. Unset (or empty): SQLite.
    database_url: SecretStr | None = Field(
        None, description="postgresql://user:password@host:port/database; selects PostgreSQL.")
    database_pool_size: int = Field(
        10, ge=1, le=1000,
        description="Most connections one worker process holds; at least its threads + 1.")
    database_connect_timeout_s: float = Field(
        5.0, ge=2, le=300,
        description="Longest wait to connect at start-up, and for a free pooled connection.")

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

    # Riding out provider outages and quotas (README "Provider outages and
    # quotas"): a breaker per provider credential, deferral without spending
    # retries, a throttled device's backoff, FCM's quota shared by the fleet.
    provider_breaker_failures: int = Field(
        5, ge=0, le=10_000,
        description="Outage answers in a row (5xx, timeouts, connection errors) after which a"
                    " provider credential is down and its pushes are deferred; 0: never.")
    provider_probe_interval_s: float = Field(
        5.0, ge=0.1, le=600, description="While a provider is down, one push goes out as a"
                                         " probe this often (per worker process).")
    defer_initial_s: float = Field(
        1.0, ge=0.05, le=900,
        description="First wait of a notification deferred while its provider is down;"
                    " doubles with each deferral up to DEFER_MAX_S.")
    defer_max_s: float = Field(
        30.0, ge=0.05, le=900,
        description="Longest a deferred notification waits before it is looked at again"
                    " (it holds its delay topic's commit back that long).")
    device_backoff_initial_s: float = Field(
        5.0, gt=0, le=3600, description="First wait of a device its provider throttles"
                                        " (APNs 429 TooManyRequests); doubles with each 429.")
    device_backoff_max_s: float = Field(300.0, gt=0, le=86_400)
    fcm_quota_per_minute: int = Field(
        600_000, ge=0, le=1_000_000_000,
        description="FCM messages per minute for the whole fleet (the project's quota);"
                    " 0: no bucket.")
    fcm_quota_burst: int = Field(
        20_000, ge=1, le=1_000_000_000,
        description="What may go out beyond FCM_QUOTA_PER_MINUTE in any 60 s (the shared"
                    " bucket's capacity, and what processes hold).")
    push_quota_wait_ms: int = Field(
        200, ge=0, le=10_000,
        description="Longest a worker thread waits for a quota token before it defers the"
                    " device instead.")
    push_quota_path: Path = Field(
        Path(".cache/willowe/push-quota.sqlite3"),
        description="The quota buckets' SQLite file when there is no DATABASE_URL (the"
                    " processes of one host share it).")

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

    # Operator tools (willowe_tasks/ops): dead-letter replay, the audit log and
    # the dashboard.
    ops_audit_log_path: Path = Field(
        Path(".cache/willowe/ops-audit.jsonl"),
        description="JSON Lines file every operator action is appended to.")
    dlq_replay_log_path: Path = Field(
        Path(".cache/willowe/dlq-replays.sqlite3"),
        description="What `dlq replay` has replayed, so a second run skips it.")
    dlq_max_replays: int = Field(
        3, ge=1, le=100,
        description="Loop guard: a dead letter replayed this many times is not replayed again.")
    dashboard_host: str = Field("127.0.0.1", min_length=1,
                                description="Address the dashboard listens on.")
    dashboard_port: int = Field(8080, ge=1, le=65535)
    dashboard_operator_token: SecretStr | None = Field(
        None, description="Unset: the dashboard is read-only. Set: replay and purge ask for it.")
    dashboard_metrics_url: str | None = Field(
        None, description="The workers' Prometheus exposition the dashboard scrapes"
                          " (throughput, error rate, latency).")
    dashboard_scrape_interval_s: float = Field(5.0, ge=0.5, le=600)
    dashboard_window_s: float = Field(
        300.0, ge=10, le=86_400,
        description="How far back throughput, error rate and latency look.")

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

    # -- Security: Kafka clients' credentials, ACL principals, payload keys, audit.
    # Every Kafka client (producer, consumer, admin) gets the same settings;
    # willowe_tasks/kafka_clients.py turns them into kafka-python's options.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = \
        "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = Field(None, min_length=1)
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = None
    kafka_ssl_ca_file: Path | None = None
    kafka_ssl_cert_file: Path | None = None
    kafka_ssl_key_file: Path | None = None
    # The users the ACL table (willowe_tasks/acls.py) grants to.
    kafka_web_user: str = Field("web", pattern=r"^[A-Za-z0-9._@-]+$")
    kafka_worker_user: str = Field("worker", pattern=r"^[A-Za-z0-9._@-]+$")
    kafka_operator_user: str = Field("operator", pattern=r"^[A-Za-z0-9._@-]+$")
    # Message bodies are encrypted when keys are given (one of the two):
    # "id:base64key[,id:base64key…]", the first encrypts (broker/encryption.py).
    payload_keys: SecretStr | None = None
    payload_keys_file: Path | None = None
    # The audit trail (willowe_tasks/audit.py): always a file; also a topic if named.
    audit_log_path: Path = Field(Path(".cache/willowe/audit.jsonl"))
    audit_topic: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,249}$")

    @model_validator(mode="after")
    def _kafka_security_fits(self) -> Settings:
        protocol = self.kafka_security_protocol
        sasl = {"KAFKA_SASL_MECHANISM": self.kafka_sasl_mechanism,
                "KAFKA_SASL_USERNAME": self.kafka_sasl_username,
                "KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
                "KAFKA_SASL_PASSWORD_FILE": self.kafka_sasl_password_file}
        tls = {"KAFKA_SSL_CA_FILE": self.kafka_ssl_ca_file,
               "KAFKA_SSL_CERT_FILE": self.kafka_ssl_cert_file,
               "KAFKA_SSL_KEY_FILE": self.kafka_ssl_key_file}
        if protocol.startswith("SASL_"):
            missing = [name for name in ("KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME")
                       if sasl[name] is None]
            if self.kafka_sasl_password is None and self.kafka_sasl_password_file is None:
                missing.append("KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE")
            if missing:
                raise ValueError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs "
                                 + ", ".join(missing))
        else:
            given = [name for name, value in sasl.items() if value is not None]
            if given:
                raise ValueError(f"{', '.join(given)} set, but KAFKA_SECURITY_PROTOCOL="
                                 f"{protocol} does not log in with SASL (SASL_SSL does)")
        if self.kafka_sasl_password is not None and self.kafka_sasl_password_file is not None:
            raise ValueError("KAFKA_SASL_PASSWORD and KAFKA_SASL_PASSWORD_FILE are both set; "
                             "set one")
        if not protocol.endswith("SSL"):
            given = [name for name, value in tls.items() if value is not None]
            if given:
                raise ValueError(f"{', '.join(given)} set, but KAFKA_SECURITY_PROTOCOL="
                                 f"{protocol} does not use TLS (SSL or SASL_SSL do)")
        if bool(self.kafka_ssl_cert_file) != bool(self.kafka_ssl_key_file):
            raise ValueError("KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE go together; set both")
        for name, path in [("KAFKA_SASL_PASSWORD_FILE", self.kafka_sasl_password_file),
                           *tls.items(), ("PAYLOAD_KEYS_FILE", self.payload_keys_file)]:
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file: {path}")
        if self.kafka_sasl_password_file is not None and not self.kafka_sasl_secret():
            raise ValueError(f"KAFKA_SASL_PASSWORD_FILE: {self.kafka_sasl_password_file} is empty")
        return self

    @model_validator(mode="after")
    def _payload_keys_parse(self) -> Settings:
        if self.payload_keys is not None and self.payload_keys_file is not None:
            raise ValueError("PAYLOAD_KEYS and PAYLOAD_KEYS_FILE are both set; set one")
        text = self.payload_keys_text()
        if text is not None:
            from broker.encryption import KeyRing

            name = "PAYLOAD_KEYS" if self.payload_keys is not None else "PAYLOAD_KEYS_FILE"
            try:
                KeyRing.parse(text)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
        return self

    def kafka_sasl_secret(self) -> str | None:
        """The SASL password, from KAFKA_SASL_PASSWORD or its file."""
        if self.kafka_sasl_password is not None:
            return self.kafka_sasl_password.get_secret_value()
        if self.kafka_sasl_password_file is not None:
            return self.kafka_sasl_password_file.read_text(encoding="utf-8").strip()
        return None

    @property
    def compresses_bodies(self) -> bool:
        """Whether bodies are compressed before they are sent (PAYLOAD_COMPRESSION)."""
        if self.payload_compression == "auto":
            return self.payload_keys is not None or self.payload_keys_file is not None
        return self.payload_compression == "zstd"

    def payload_keys_text(self) -> str | None:
        """The payload keys as written, from PAYLOAD_KEYS or its file; None: off."""
        if self.payload_keys is not None:
            return self.payload_keys.get_secret_value()
        if self.payload_keys_file is not None:
            return self.payload_keys_file.read_text(encoding="utf-8")
        return None

    @field_validator("apns_endpoint")
    @classmethod
    def _apns_endpoint(cls, value: str) -> str:
        if value not in ("production", "sandbox") and not value.startswith("https://"):
            raise ValueError("expected 'production', 'sandbox' or an https:// URL")
        return value

    @model_validator(mode="after")
    def _spool_has_a_place(self) -> Settings:
        if self.send_fallback == "spool" and self.spool_path is None:
            raise ValueError("SEND_FALLBACK=spool needs SPOOL_PATH: a file that outlives the"
                             " process (the spool must survive a crash)")
        return self

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
    def _waits_in_order(self) -> Settings:
        if self.defer_max_s < self.defer_initial_s:
            raise ValueError(f"DEFER_MAX_S ({self.defer_max_s:g}) must be at least"
                             f" DEFER_INITIAL_S ({self.defer_initial_s:g})")
        if self.device_backoff_max_s < self.device_backoff_initial_s:
            raise ValueError(f"DEVICE_BACKOFF_MAX_S ({self.device_backoff_max_s:g}) must be at"
                             f" least DEVICE_BACKOFF_INITIAL_S"
                             f" ({self.device_backoff_initial_s:g})")
        return self

    @model_validator(mode="after")
    def _quota_burst_covers_what_processes_hold(self) -> Settings:
        from willowe_tasks.quota.gate import min_burst

        if self.fcm_quota_per_minute and self.fcm_quota_burst < min_burst(
                self.fcm_quota_per_minute):
            raise ValueError(
                f"FCM_QUOTA_BURST must be at least {min_burst(self.fcm_quota_per_minute)} for"
                f" FCM_QUOTA_PER_MINUTE={self.fcm_quota_per_minute} (got"
                f" {self.fcm_quota_burst}): worker processes hold up to half a second of the"
                " rate in tokens and have a push's trip of it on the way, which the burst must"
                " cover")
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

    @field_validator("dashboard_operator_token", mode="before")
    @classmethod
    def _operator_token(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(text, str) and len(text.strip()) < MIN_OPERATOR_TOKEN_CHARS:
            raise ValueError(f"must be at least {MIN_OPERATOR_TOKEN_CHARS} characters"
                             " (a token that can be guessed guards nothing)")
        return text.strip() if isinstance(text, str) else value

    @field_validator("dashboard_metrics_url", mode="before")
    @classmethod
    def _metrics_url(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, str) and not value.strip().startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL, such as"
                             " http://worker:9191/metrics")
        return value.strip() if isinstance(value, str) else value

    @field_validator("database_url", mode="before")
    @classmethod
    def _database_url(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(text, str):
            try:
                DatabaseUrl.parse(text.strip())
            except InvalidDatabaseUrl as e:
                raise ValueError(str(e)) from None
            return text.strip()
        return value

    @property
    def database(self) -> DatabaseUrl | None:
        """The PostgreSQL database to use, or None for the SQLite files."""
        if self.database_url is None:
            return None
        return DatabaseUrl.parse(self.database_url.get_secret_value())

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


#: Settings whose value is a credential: an error names them but never shows the value.
SECRET_SETTINGS = frozenset({"database_url", "dashboard_operator_token", "kafka_sasl_password",
                             "payload_keys"})


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:  # a rule across several variables names them itself
            lines.append(message)
            continue
        field = str(item["loc"][0])
        shown = "" if field in SECRET_SETTINGS else f" (got {item.get('input')!r})"
        lines.append(f"{field.upper()}: {message}{shown}")
    return "invalid settings:\n  " + "\n  ".join(lines)
