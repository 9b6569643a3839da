"""The device registry's contract, on SQLite and on PostgreSQL alike:
validation, token ownership, soft removal, concurrent writers."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import secrets
import threading
import time
from multiprocessing.synchronize import Barrier as BarrierType

import pytest
from stores_support import Store, open_registry

from willowe_tasks.registry import Device, DeviceRegistry, DeviceValidationError
from willowe_tasks.tokens import token_hash

IOS_TOKEN = "a1" * 32
IOS_TOKEN_2 = "b2" * 32
ANDROID_TOKEN = "dXk3:APA91bH-_example_Token_1234567890"

#: Bound on every wait in this module, in seconds.
WAIT_S = 60.0


def test_user_with_devices_on_both_platforms_in_registration_order(
    registry: DeviceRegistry,
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


def test_register_is_idempotent_and_updates_app_id(registry: DeviceRegistry) -> None:
    registry.register("u1", "ios", IOS_TOKEN, "app.willowe.ios")
    registry.register("u1", "android", ANDROID_TOKEN, "app.willowe.android")
    registry.register("u1", "ios", IOS_TOKEN, "app.willowe.ios.beta")

    assert registry.count() == 2
    devices = registry.devices_for("u1")
    # Re-registering keeps the device's place in the order.
    assert [d.token for d in devices] == [IOS_TOKEN, ANDROID_TOKEN]
    assert devices[0].app_id == "app.willowe.ios.beta"


def test_token_moves_to_new_user(registry: DeviceRegistry) -> None:
    registry.register("alice", "ios", IOS_TOKEN, "app.willowe.ios")
    registry.register("bob", "android", ANDROID_TOKEN, "app.willowe.android")

    moved = registry.register("bob", "ios", IOS_TOKEN, "app.willowe.ios")

    assert registry.devices_for("alice") == []
    assert registry.devices_for("bob")[-1] == moved  # newest device of its new owner
    assert registry.count() == 2


def test_ios_tokens_are_case_insensitive_android_tokens_are_not(
    registry: DeviceRegistry,
) -> None:
    device = registry.register("u1", "ios", IOS_TOKEN.upper(), "app.willowe.ios")
    assert device.token == IOS_TOKEN
    registry.register("u1", "ios", IOS_TOKEN, "app.willowe.ios")
    assert registry.count() == 1

    registry.register("u1", "android", ANDROID_TOKEN, "app.willowe.android")
    assert registry.unregister(ANDROID_TOKEN.lower()) is False
    assert registry.unregister(IOS_TOKEN.upper()) is True
    assert [d.platform for d in registry.devices_for("u1")] == ["android"]


def test_the_longest_token_a_provider_accepts_is_kept_whole(registry: DeviceRegistry) -> None:
    # FCM tokens may be 4096 characters: longer than a database index entry may be.
    # Random, so no compression squeezes it under the limit.
    longest = secrets.token_urlsafe(4096)[:4096]
    registry.register("u1", "android", longest, "app.willowe.android")
    registry.register("u2", "android", longest, "app.willowe.android")
    assert [d.token for d in registry.devices_for("u2")] == [longest]
    assert registry.mark_invalid(longest, "fcm:UNREGISTERED")
    assert registry.invalid_counts() == {"fcm:UNREGISTERED": 1}
    assert registry.unregister(longest) is True
    assert registry.count() == 0


def test_unregister(registry: DeviceRegistry) -> None:
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
    registry: DeviceRegistry, args: tuple[object, ...], field: str, fragment: str
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
    registry: DeviceRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="willowe_tasks")
    caplog.set_level(logging.DEBUG, logger="psycopg")
    device = registry.register("alice", "android", ANDROID_TOKEN, "app.willowe.android")
    registry.register("bob", "android", ANDROID_TOKEN, "app.willowe.android")
    registry.unregister(ANDROID_TOKEN)

    assert "moved" in caplog.text and "unregistered" in caplog.text
    assert token_hash(ANDROID_TOKEN) in caplog.text
    assert ANDROID_TOKEN not in caplog.text
    assert ANDROID_TOKEN not in repr(device)
    assert device.token_hash in repr(device)
    assert ANDROID_TOKEN not in repr(registry)


# -- soft removal ---------------------------------------------------------------


def test_a_rejected_token_is_marked_not_deleted_and_gets_no_pushes(
    registry: DeviceRegistry,
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
    registry: DeviceRegistry,
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


def test_restore_at_the_exact_time_of_a_mark_includes_it(registry: DeviceRegistry) -> None:
    registry.register("u1", "ios", IOS_TOKEN, "app")
    marked_at = 1_700_000_123.456789
    registry.mark_invalid(IOS_TOKEN, "apns:BadDeviceToken", at=marked_at)
    assert registry.invalid_counts(since=marked_at) == {"apns:BadDeviceToken": 1}
    assert registry.restore(since=marked_at + 0.001) == 0
    assert registry.restore(since=marked_at) == 1


def test_registering_a_marked_token_again_makes_it_live(registry: DeviceRegistry) -> None:
    registry.register("u1", "ios", IOS_TOKEN, "app")
    registry.mark_invalid(IOS_TOKEN, "apns:Unregistered")
    registry.register("u1", "ios", IOS_TOKEN, "app")
    assert [d.token for d in registry.devices_for("u1")] == [IOS_TOKEN]
    assert registry.invalid_counts() == {}


def test_a_marked_token_registered_by_another_user_moves_and_is_live(
    registry: DeviceRegistry,
) -> None:
    registry.register("alice", "ios", IOS_TOKEN, "app")
    registry.mark_invalid(IOS_TOKEN, "apns:Unregistered")
    registry.register("bob", "ios", IOS_TOKEN, "app")
    assert registry.devices_for("alice") == []
    assert [d.token for d in registry.devices_for("bob")] == [IOS_TOKEN]
    assert registry.invalid_counts() == {}


def test_a_registration_after_the_providers_verdict_wins(registry: DeviceRegistry) -> None:
    registry.register("u1", "ios", IOS_TOKEN, "app")
    registered = time.time()
    # APNs says the token has been invalid since an hour before it was registered
    assert not registry.mark_invalid(IOS_TOKEN, "apns:Unregistered",
                                     invalid_since=registered - 3600)
    assert len(registry.devices_for("u1")) == 1
    # and a verdict from after the registration counts
    assert registry.mark_invalid(IOS_TOKEN, "apns:Unregistered", invalid_since=registered + 1)
    assert registry.devices_for("u1") == []


def test_purge_deletes_only_marks_older_than_the_retention(registry: DeviceRegistry) -> None:
    registry.register("u1", "ios", IOS_TOKEN, "app")
    registry.register("u1", "ios", IOS_TOKEN_2, "app")
    registry.mark_invalid(IOS_TOKEN, "apns:Unregistered", at=time.time() - 100)
    registry.mark_invalid(IOS_TOKEN_2, "apns:Unregistered", at=time.time() - 10)
    assert registry.purge_invalid(older_than_s=50) == 1
    assert registry.invalid_counts() == {"apns:Unregistered": 1}
    assert registry.purge_invalid(older_than_s=50) == 0


def test_a_second_registry_on_the_same_store_sees_every_change(store: Store) -> None:
    # Two processes' (or hosts') registries share the store, not a cache.
    writer, reader = store.registry(), store.registry()
    writer.register("u1", "ios", IOS_TOKEN, "app")
    assert [d.token for d in reader.devices_for("u1")] == [IOS_TOKEN]
    reader.register("u2", "ios", IOS_TOKEN, "app")
    assert writer.devices_for("u1") == []
    writer.mark_invalid(IOS_TOKEN, "apns:Unregistered")
    assert reader.invalid_counts() == {"apns:Unregistered": 1}


def test_a_closed_registry_refuses_use(store: Store) -> None:
    registry = store.registry()
    registry.close()
    registry.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        registry.count()


# -- concurrent writers ---------------------------------------------------------


def _token(worker: str, i: int) -> str:
    return f"fcm:{worker}-{i}"


def _register_in_process(backend: str, location: str, worker: str, count: int,
                         start: BarrierType) -> None:
    """Child process: register own tokens and keep grabbing one contested token."""
    registry = open_registry(backend, location)
    try:
        registry.count()  # connect before the race starts
        start.wait()
        for i in range(count):
            registry.register(f"user-{worker}", "android", _token(worker, i), "app.android")
            registry.register(f"user-{worker}", "ios", IOS_TOKEN, "app.willowe.ios")
    finally:
        registry.close()


def test_threads_and_processes_register_concurrently(store: Store) -> None:
    per_worker = 30
    ctx = multiprocessing.get_context("spawn")
    workers = [f"t{n}" for n in range(6)]
    # Everyone waits for everyone: spawned processes take a while to import.
    start = ctx.Barrier(len(workers) + 2, timeout=WAIT_S)
    processes = [
        ctx.Process(target=_register_in_process,
                    args=(store.backend, store.location, f"p{n}", per_worker, start))
        for n in range(2)
    ]
    for process in processes:
        process.start()
    # Threads share one registry object, as a worker process's threads do.
    shared = store.registry()
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
