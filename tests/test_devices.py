"""The SQLite device registry's own concerns: its file, WAL, locking and
upgrades of older files. The rules every registry follows are in
tests/stores/test_registry_contract.py, run on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from willowe_tasks.registry import DeviceRegistry, DeviceValidationError, SQLiteDeviceRegistry

IOS_TOKEN = "a1" * 32


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[SQLiteDeviceRegistry]:
    reg = SQLiteDeviceRegistry(tmp_path / "devices.sqlite3")
    yield reg
    reg.close()


def test_conforms_to_protocol(registry: SQLiteDeviceRegistry) -> None:
    typed: DeviceRegistry = registry
    assert typed.count() == 0


def test_creates_parent_folder_uses_wal_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "devices.sqlite3"
    with SQLiteDeviceRegistry(path) as reg:
        reg.register("u1", "ios", IOS_TOKEN, "app.willowe.ios")

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with SQLiteDeviceRegistry(path) as reopened:
        assert [d.token for d in reopened.devices_for("u1")] == [IOS_TOKEN]


def test_in_memory_path_is_rejected() -> None:
    with pytest.raises(ValueError, match="path"):
        SQLiteDeviceRegistry(":memory:")


def test_write_lock_held_too_long_raises_and_registry_recovers(tmp_path: Path) -> None:
    path = tmp_path / "devices.sqlite3"
    with SQLiteDeviceRegistry(path, busy_timeout_s=0.05) as reg:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process mid-write
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            reg.register("u1", "ios", IOS_TOKEN, "app.willowe.ios")
        other.execute("COMMIT")
        other.close()

        reg.register("u1", "ios", IOS_TOKEN, "app.willowe.ios")
        assert reg.count() == 1


def test_a_registry_file_of_the_first_version_is_upgraded_in_place(tmp_path: Path) -> None:
    # Given a file written before soft removal existed
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE devices (id INTEGER PRIMARY KEY AUTOINCREMENT, token TEXT NOT NULL UNIQUE,"
        " user_id TEXT NOT NULL, platform TEXT NOT NULL, app_id TEXT NOT NULL,"
        " registered_at REAL NOT NULL, last_seen_at REAL NOT NULL);"
        f"INSERT INTO devices VALUES (1, '{IOS_TOKEN}', 'u1', 'ios', 'app', 1.0, 1.0);")
    conn.close()
    # When the registry opens it, its devices are kept and can be marked
    with SQLiteDeviceRegistry(path) as registry:
        assert [d.token for d in registry.devices_for("u1")] == [IOS_TOKEN]
        assert registry.mark_invalid(IOS_TOKEN, "apns:Unregistered")
    with SQLiteDeviceRegistry(path) as registry:  # and opening it again migrates nothing twice
        assert registry.devices_for("u1") == []


def test_a_platform_error_never_echoes_what_was_given(registry: SQLiteDeviceRegistry) -> None:
    # Arguments in the wrong order put the token where the platform goes
    with pytest.raises(DeviceValidationError) as caught:
        registry.register("u1", IOS_TOKEN, "ios", "app")
    assert caught.value.field == "platform"
    assert IOS_TOKEN not in str(caught.value)
