"""``python -m willowe_tasks db migrate|status`` (``make db``), and the
operator commands on the database DATABASE_URL picks."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from willowe_tasks.__main__ import EXIT_ERROR, main
from willowe_tasks.migrations import SCHEMA_VERSION
from willowe_tasks.services import build_registry
from willowe_tasks.settings import settings_from

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def database_url(postgres_database_url: str, monkeypatch: pytest.MonkeyPatch,
                 tmp_path: Path) -> str:
    monkeypatch.chdir(tmp_path)  # no stray .env from the checkout
    monkeypatch.setenv("DATABASE_URL", postgres_database_url)
    return postgres_database_url


def test_migrate_applies_the_schema_once_and_status_follows(
    database_url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["db", "status"]) == 1
    assert f"schema version 0, this code's {SCHEMA_VERSION} (behind" in capsys.readouterr().out

    assert main(["db", "migrate"]) == 0
    out = capsys.readouterr().out
    assert "applied 1: device registry and delivery ledger" in out
    assert main(["db", "migrate"]) == 0
    assert f"no change: schema version {SCHEMA_VERSION} is current" in capsys.readouterr().out

    assert main(["db", "status"]) == 0
    out = capsys.readouterr().out
    assert f"schema version {SCHEMA_VERSION}, this code's {SCHEMA_VERSION} (current)" in out
    password = urlsplit(database_url).password
    assert password and password not in out


def test_without_database_url_there_is_nothing_to_migrate(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["db", "migrate"]) == 0
    assert "DATABASE_URL is not set" in capsys.readouterr().out


def test_an_unreachable_database_is_an_error_naming_the_variable_and_host(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"postgresql://u:cli-secret-pw@127.0.0.1:{port}/w")
    assert main(["db", "migrate"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: DATABASE_URL: cannot connect to PostgreSQL at ")
    assert f"127.0.0.1:{port}/w" in err
    assert "cli-secret-pw" not in err


def test_the_devices_commands_use_the_database(
    database_url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["db", "migrate"]) == 0
    registry = build_registry(settings_from({}))
    try:
        registry.register("u1", "ios", "ab" * 32, "com.willowe.app")
        registry.mark_invalid("ab" * 32, "apns:BadDeviceToken")
    finally:
        registry.close()
    capsys.readouterr()
    assert main(["devices", "invalid"]) == 0
    assert "apns:BadDeviceToken" in capsys.readouterr().out
    assert main(["devices", "restore", "--since", "1h"]) == 0
    assert "Restored 1 device(s)" in capsys.readouterr().out


def test_python_m_willowe_tasks_db_runs_from_a_shell(database_url: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "willowe_tasks", "db", "migrate"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Migrating the schema of 127.0.0.1:" in done.stdout
