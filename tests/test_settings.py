"""Settings come from the guide's environment variables and fail loudly."""

from __future__ import annotations

from pathlib import Path

import pytest

from willowe_tasks.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("KAFKA_BROKER", "KAFKA_CLIENT_ID", "KAFKA_GROUP_ID",
                 "KAFKA_RETRY_INITIAL", "KAFKA_RETRY_RETRIES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env from the checkout


def test_defaults_are_the_guides() -> None:
    settings = load_settings()
    assert settings.kafka_broker == "localhost:9092"
    assert settings.kafka_client_id == "willowe-notifications"
    assert settings.kafka_group_id == "notifications-group"
    assert settings.kafka_retry_initial == 100
    assert settings.kafka_retry_retries == 8


def test_environment_overrides_and_broker_lists_split(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BROKER", "kafka-1:9092, kafka-2:9093")
    monkeypatch.setenv("KAFKA_RETRY_RETRIES", "3")
    settings = load_settings()
    assert settings.bootstrap_servers == ["kafka-1:9092", "kafka-2:9093"]
    assert settings.kafka_retry_retries == 3


def test_a_dotenv_file_is_read_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("KAFKA_GROUP_ID=from-dotenv\nKAFKA_CLIENT_ID=dotenv-client\n")
    monkeypatch.setenv("KAFKA_CLIENT_ID", "from-env")
    settings = load_settings()
    assert settings.kafka_group_id == "from-dotenv"
    assert settings.kafka_client_id == "from-env"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("KAFKA_BROKER", "localhost", "host:port"),
        ("KAFKA_BROKER", "localhost:99999", "host:port"),
        ("KAFKA_BROKER", " , ", "host:port"),
        ("KAFKA_RETRY_INITIAL", "fast", "integer"),
        ("KAFKA_RETRY_INITIAL", "0", "greater than or equal to 1"),
        ("KAFKA_RETRY_RETRIES", "-1", "greater than or equal to 0"),
        ("KAFKA_GROUP_ID", "", "at least 1 character"),
        ("KAFKA_COMPRESSION", "snappy", "'none', 'gzip', 'lz4' or 'zstd'"),
        ("PAYLOAD_COMPRESSION", "lz4", "'auto', 'none' or 'zstd'"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_it_expected(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert f"{variable}:" in message
    assert expected in message


def test_every_bad_variable_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BROKER", "nope")
    monkeypatch.setenv("KAFKA_RETRY_RETRIES", "many")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "KAFKA_BROKER:" in str(raised.value)
    assert "KAFKA_RETRY_RETRIES:" in str(raised.value)


def test_a_ledger_that_would_forget_a_live_notification_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEDGER_RETENTION_DAYS", "7")
    with pytest.raises(SettingsError, match="LEDGER_RETENTION_DAYS must be at least 30"):
        load_settings()
    monkeypatch.setenv("LEDGER_RETENTION_DAYS", "45")
    assert load_settings().ledger_retention_days == 45


# -- DATABASE_URL -------------------------------------------------------------

PASSWORD = "pa55-w0rd-never-shown"


def test_without_database_url_the_stores_are_sqlite_files(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert load_settings().database is None
    monkeypatch.setenv("DATABASE_URL", "  ")
    assert load_settings().database is None


def test_a_database_url_picks_postgresql_and_never_shows_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://willowe:{PASSWORD}@db.internal:6543/pushes")
    settings = load_settings()
    database = settings.database
    assert database is not None
    assert (database.host, database.port, database.database) == ("db.internal", 6543, "pushes")
    assert database.target == "db.internal:6543/pushes"
    for shown in (repr(settings), str(settings), repr(database), str(database),
                  settings.model_dump_json()):
        assert PASSWORD not in shown
    assert PASSWORD in database.secret  # what the driver gets


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"mysql://u:{PASSWORD}@db.internal/w", "not a mysql:// URL"),
        (f"db.internal:5432/w?password={PASSWORD}", "expected postgresql://"),
        (f"postgresql://u:{PASSWORD}@/w", "names no host"),
        (f"postgresql://u:{PASSWORD}@db.internal:port/w",
         "port must be 1-65535 (host db.internal)"),
        (f"postgresql://u:{PASSWORD}@db.internal:70000/w", "(host db.internal)"),
        # libpq would quote the bad password back: it is not passed on.
        (f"postgresql://u:{PASSWORD}%zz@db.internal/w", "percent-encoding (a password"),
        (f"postgresql://u:{PASSWORD}@db-1,db-2/w", "several hosts"),
    ],
)
def test_a_malformed_database_url_names_the_variable_and_host_but_not_the_password(
    monkeypatch: pytest.MonkeyPatch, url: str, expected: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert "DATABASE_URL:" in message
    assert expected in message
    assert PASSWORD not in message


def test_bodies_are_compressed_when_encrypted_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from willowe_tasks.kafka_clients import payload_codec

    key = "k1:" + "A" * 43 + "="
    cases = [({}, False), ({"PAYLOAD_KEYS": key}, True),
             ({"PAYLOAD_COMPRESSION": "zstd"}, True),
             ({"PAYLOAD_KEYS": key, "PAYLOAD_COMPRESSION": "none"}, False)]
    for variables, compressed in cases:
        for name in ("PAYLOAD_KEYS", "PAYLOAD_COMPRESSION"):
            monkeypatch.delenv(name, raising=False)
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        _, headers = payload_codec(load_settings()).encode("t", b'{"a": 1}')
        encoding = dict(headers).get("x-payload-encoding", b"").decode()
        assert encoding.startswith("zstd") is compressed, variables
