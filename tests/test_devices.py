"""Device registry: validation, token ownership, and concurrent writers."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier as BarrierType
from pathlib import Path

import pytest

from willowe_tasks.registry import (
    Device,
    DeviceRegistry,
    DeviceValidationError,
    SQLiteDeviceRegistry,
)
from willowe_tasks.tokens import token_hash

IOS_TOKEN = "a1" * 32
IOS_TOKEN_2 = "b2" * 32
ANDROID_TOKEN = "dXk3:APA91bH-_example_Token_1234567890"

#: Bound on every wait in this module, in seconds.
WAIT_S = 30.0


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[SQLiteDeviceRegistry]:
    reg = SQLiteDeviceRegistry(tmp_path / "devices.sqlite3")
    yield reg
    reg.close()


def test_conforms_to_protocol(registry: SQLiteDeviceRegistry) -> None:
    typed: DeviceRegistry = registry
    assert typed.count() == 0


def test_user_with_devices_on_both_platforms_in_registration_order(
    registry: SQLiteDeviceRegistry,
) -> None:
    first = registry.register("u1", "ios", IOS_TOKEN, "app.willowe.ios")
    second = registry.register("u1", "android", ANDROID_TOKEN, "app.willowe.android")
    third = registry.register("u1", "ios", IOS_TOKEN_2, "app.willowe.ios")
    registry.register("u2", "ios", "c3" * 32, "app.willowe.ios")

    assert registry.devices_for("u1") == [first, second, third]
    assert registry.devices_for("nobody") == []
    assert registry.count() == 4
    assert first == Device("u1", "ios", IOS_TOKEN, "app.willowe.ios")
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.user_id = "u2"  # type: ignore[misc]


def test_register_is_idempotent_and_updates_app_id(registry: SQLiteDeviceRegistry) -> None:
    registry.register("u1", "ios", IOS_TOKEN, "app.willowe.ios")
    registry.register("u1", "android", ANDROID_TOKEN, "app.willowe.android")
    registry.register("u1", "ios", IOS_TOKEN, "app.willowe.ios.beta")

    assert registry.count() == 2
    devices = registry.devices_for("u1")
    # Re-registering keeps the device's place in the order.
    assert [d.token for d in devices] == [IOS_TOKEN, ANDROID_TOKEN]
    assert devices[0].app_id == "app.willowe.ios.beta"


def test_token_moves_to_new_user(registry: SQLiteDeviceRegistry) -> None:
    registry.register("alice", "ios", IOS_TOKEN, "app.willowe.ios")
    registry.register("bob", "android", ANDROID_TOKEN, "app.willowe.android")

    moved = registry.register("bob", "ios", IOS_TOKEN, "app.willowe.ios")

    assert registry.devices_for("alice") == []
    assert registry.devices_for("bob")[-1] == moved  # newest device of its new owner
    assert registry.count() == 2


def test_ios_tokens_are_case_insensitive_android_tokens_are_not(
    registry: SQLiteDeviceRegistry,
) -> None:
    device = registry.register("u1", "ios", IOS_TOKEN.upper(), "app.willowe.ios")
    assert device.token == IOS_TOKEN
    registry.register("u1", "ios", IOS_TOKEN, "app.willowe.ios")
    assert registry.count() == 1

    registry.register("u1", "android", ANDROID_TOKEN, "app.willowe.android")
    assert registry.unregister(ANDROID_TOKEN.lower()) is False
    assert registry.unregister(IOS_TOKEN.upper()) is True
    assert [d.platform for d in registry.devices_for("u1")] == ["android"]


def test_unregister(registry: SQLiteDeviceRegistry) -> None:
    registry.register("u1", "android", ANDROID_TOKEN, "app.willowe.android")
    assert registry.unregister(ANDROID_TOKEN) is True
    assert registry.unregister(ANDROID_TOKEN) is False
    assert registry.unregister("") is False
    assert registry.count() == 0


@pytest.mark.parametrize(
    ("args", "field", "fragment"),
    [
        (("", "ios", IOS_TOKEN, "app"), "user_id", "empty"),
        (("   ", "ios", IOS_TOKEN, "app"), "user_id", "empty"),
        (("u" * 129, "ios", IOS_TOKEN, "app"), "user_id", "at most 128"),
        (("u\x00", "ios", IOS_TOKEN, "app"), "user_id", "control"),
        (("u1", "windows", IOS_TOKEN, "app"), "platform", "ios, android"),
        (("u1", "IOS", IOS_TOKEN, "app"), "platform", "ios, android"),
        (("u1", "ios", IOS_TOKEN, ""), "app_id", "empty"),
        (("u1", "ios", IOS_TOKEN, "app id"), "app_id", "whitespace"),
        (("u1", "ios", IOS_TOKEN, "a" * 256), "app_id", "at most 255"),
        (("u1", "ios", "", "app"), "token", "empty"),
        (("u1", "ios", "zz" * 32, "app"), "token", "hex"),
        (("u1", "ios", "<" + IOS_TOKEN + ">", "app"), "token", "hex"),
        (("u1", "ios", "a" * 65, "app"), "token", "even"),
        (("u1", "ios", "ab" * 15, "app"), "token", "32-200"),
        (("u1", "ios", "ab" * 101, "app"), "token", "32-200"),
        (("u1", "android", "", "app"), "token", "empty"),
        (("u1", "android", "abc def", "app"), "token", "whitespace"),
        (("u1", "android", "abc\ndef", "app"), "token", "whitespace"),
        (("u1", "android", "x" * 4097, "app"), "token", "at most 4096"),
        (("u1", "android", 12345, "app"), "token", "string"),
    ],
)
def test_validation_errors_name_the_field(
    registry: SQLiteDeviceRegistry, args: tuple[object, ...], field: str, fragment: str
) -> None:
    with pytest.raises(DeviceValidationError) as excinfo:
        registry.register(*args)  # type: ignore[arg-type]

    assert excinfo.value.field == field
    assert str(excinfo.value).startswith(f"{field}: ")
    assert fragment in str(excinfo.value)
    assert isinstance(excinfo.value, ValueError)
    token = args[2]
    if isinstance(token, str) and len(token) > 8:
        assert token not in str(excinfo.value)
    assert registry.count() == 0


def test_tokens_never_reach_logs_or_repr(
    registry: SQLiteDeviceRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="willowe_tasks.registry")
    device = registry.register("alice", "android", ANDROID_TOKEN, "app.willowe.android")
    registry.register("bob", "android", ANDROID_TOKEN, "app.willowe.android")
    registry.unregister(ANDROID_TOKEN)

    assert "moved" in caplog.text and "unregistered" in caplog.text
    assert token_hash(ANDROID_TOKEN) in caplog.text
    assert ANDROID_TOKEN not in caplog.text
    assert ANDROID_TOKEN not in repr(device)
    assert device.token_hash in repr(device)


def test_creates_parent_folder_uses_wal_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "devices.sqlite3"
    with SQLiteDeviceRegistry(path) as reg:
        reg.register("u1", "ios", IOS_TOKEN, "app.willowe.ios")

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with SQLiteDeviceRegistry(path) as reopened:
        assert [d.token for d in reopened.devices_for("u1")] == [IOS_TOKEN]


def test_closed_registry_refuses_use(tmp_path: Path) -> None:
    reg = SQLiteDeviceRegistry(tmp_path / "devices.sqlite3")
    reg.close()
    reg.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        reg.count()


def test_in_memory_path_is_rejected() -> None:
    with pytest.raises(ValueError, match="path"):
        SQLiteDeviceRegistry(":memory:")


def _token(worker: str, i: int) -> str:
    return f"fcm:{worker}-{i}"


def _register_in_process(path: str, worker: str, count: int, start: BarrierType) -> None:
    """Child process: register own tokens and keep grabbing one contested token."""
    with SQLiteDeviceRegistry(path) as reg:
        start.wait()
        for i in range(count):
            reg.register(f"user-{worker}", "android", _token(worker, i), "app.android")
            reg.register(f"user-{worker}", "ios", IOS_TOKEN, "app.willowe.ios")


def test_threads_and_processes_register_concurrently(tmp_path: Path) -> None:
    path = str(tmp_path / "shared" / "devices.sqlite3")
    per_worker = 40
    ctx = multiprocessing.get_context("spawn")
    workers = [f"t{n}" for n in range(6)]
    # Everyone waits for everyone: spawned processes take a while to import.
    start = ctx.Barrier(len(workers) + 2, timeout=WAIT_S)
    processes = [
        ctx.Process(target=_register_in_process, args=(path, f"p{n}", per_worker, start))
        for n in range(2)
    ]
    for process in processes:
        process.start()
    # Threads share one registry object, as a worker process's threads do.
    shared = SQLiteDeviceRegistry(path)
    errors: list[BaseException] = []

    def run(worker: str) -> None:
        try:
            start.wait()
            for i in range(per_worker):
                shared.register(f"user-{worker}", "android", _token(worker, i), "app.android")
                shared.register(f"user-{worker}", "ios", IOS_TOKEN, "app.willowe.ios")
        except BaseException as exc:  # surfaced below; a thread can't fail the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    for process in processes:
        process.join(WAIT_S)

    assert not errors
    assert [p.exitcode for p in processes] == [0, 0]
    all_workers = workers + ["p0", "p1"]
    assert shared.count() == len(all_workers) * per_worker + 1
    owners = [
        w for w in all_workers if IOS_TOKEN in {d.token for d in shared.devices_for(f"user-{w}")}
    ]
    assert len(owners) == 1  # the contested token belongs to exactly one user
    for worker in all_workers:
        android = [d.token for d in shared.devices_for(f"user-{worker}") if d.platform == "android"]
        assert android == [_token(worker, i) for i in range(per_worker)]
    shared.close()


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


# -- soft removal ---------------------------------------------------------------


def test_a_rejected_token_is_marked_not_deleted_and_gets_no_pushes(
    registry: SQLiteDeviceRegistry,
) -> None:
    registry.register("u1", "ios", IOS_TOKEN, "app")
    registry.register("u1", "android", ANDROID_TOKEN, "app")
    # When a provider rejects the iOS token (given in upper case, as APNs may echo it)
    assert registry.mark_invalid(IOS_TOKEN.upper(), "apns:BadDeviceToken", at=1000.0)
    # Then the user's pushes skip it, but the registry still holds it, with why
    assert [d.platform for d in registry.devices_for("u1")] == ["android"]
    assert registry.count() == 1
    assert registry.invalid_counts() == {"apns:BadDeviceToken": 1}
    # and marking it again changes nothing
    assert not registry.mark_invalid(IOS_TOKEN, "apns:BadDeviceToken")


def test_restore_brings_back_tokens_marked_after_a_time_for_a_reason(
    registry: SQLiteDeviceRegistry,
) -> None:
    for n, token in enumerate((IOS_TOKEN, IOS_TOKEN_2, "c3" * 32)):
        registry.register(f"u{n}", "ios", token, "app")
    registry.mark_invalid(IOS_TOKEN, "apns:Unregistered", at=100.0)  # long ago: a real one
    registry.mark_invalid(IOS_TOKEN_2, "apns:BadDeviceToken", at=500.0)
    registry.mark_invalid("c3" * 32, "apns:DeviceTokenNotForTopic", at=600.0)

    assert registry.restore(since=400.0, reason="apns:BadDeviceToken") == 1
    assert registry.restore(since=400.0) == 1
    assert registry.invalid_counts() == {"apns:Unregistered": 1}
    assert registry.invalid_counts(since=400.0) == {}
    assert [d.token for d in registry.devices_for("u1")] == [IOS_TOKEN_2]
    assert registry.devices_for("u0") == []


def test_registering_a_marked_token_again_makes_it_live(registry: SQLiteDeviceRegistry) -> None:
    registry.register("u1", "ios", IOS_TOKEN, "app")
    registry.mark_invalid(IOS_TOKEN, "apns:Unregistered")
    registry.register("u1", "ios", IOS_TOKEN, "app")
    assert [d.token for d in registry.devices_for("u1")] == [IOS_TOKEN]


def test_a_registration_after_the_providers_verdict_wins(
    registry: SQLiteDeviceRegistry,
) -> None:
    registry.register("u1", "ios", IOS_TOKEN, "app")
    registered = time.time()
    # APNs says the token has been invalid since an hour before it was registered
    assert not registry.mark_invalid(IOS_TOKEN, "apns:Unregistered",
                                     invalid_since=registered - 3600)
    assert len(registry.devices_for("u1")) == 1
    # and a verdict from after the registration counts
    assert registry.mark_invalid(IOS_TOKEN, "apns:Unregistered", invalid_since=registered + 1)
    assert registry.devices_for("u1") == []


def test_purge_deletes_only_marks_older_than_the_retention(
    registry: SQLiteDeviceRegistry,
) -> None:
    registry.register("u1", "ios", IOS_TOKEN, "app")
    registry.register("u1", "ios", IOS_TOKEN_2, "app")
    registry.mark_invalid(IOS_TOKEN, "apns:Unregistered", at=time.time() - 100)
    registry.mark_invalid(IOS_TOKEN_2, "apns:Unregistered", at=time.time() - 10)
    assert registry.purge_invalid(older_than_s=50) == 1
    assert registry.invalid_counts() == {"apns:Unregistered": 1}


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
