"""FakeFCM refuses what Google documents as refused: ttl over 28 days, messages
over 4096 bytes (keys and values of data and notification), reserved data keys,
mistyped AndroidNotification fields, images that are not URLs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from delivery_support import FCMWire, fcm_error, fcm_message

from willowe_tasks.testing import FakeFCM
from willowe_tasks.testing._fcm_messages import (
    MAX_MESSAGE_BYTES,
    MAX_TOPIC_MESSAGE_BYTES,
    MAX_TTL_S,
    payload_bytes,
)


@pytest.fixture
def wire(fake_fcm: FakeFCM) -> Iterator[FCMWire]:
    client = FCMWire(fake_fcm)
    yield client
    client.close()


def data_of_size(size: int, key: str = "k") -> dict[str, str]:
    """One data entry whose key and value together take ``size`` UTF-8 bytes."""
    return {key: "x" * (size - len(key.encode()))}


def invalid(wire: FCMWire, body: dict[str, Any]) -> tuple[int, str, str | None, str | None]:
    response = wire.send(body)
    assert response.status_code == 400, response.text
    return fcm_error(response)


@pytest.mark.parametrize("ttl", [f"{MAX_TTL_S}s", "0s", "3600.5s"])
def test_a_ttl_up_to_28_days_is_accepted(wire: FCMWire, ttl: str) -> None:
    assert wire.send(fcm_message(android={"ttl": ttl})).status_code == 200


@pytest.mark.parametrize("ttl", [f"{MAX_TTL_S + 1}s", f"{MAX_TTL_S}.5s", "31536000s"])
def test_a_ttl_over_28_days_is_invalid_and_names_the_field(wire: FCMWire, ttl: str) -> None:
    assert invalid(wire, fcm_message(android={"ttl": ttl})) == (
        400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "message.android.ttl")


def test_data_of_exactly_4096_bytes_of_keys_and_values_is_accepted(wire: FCMWire) -> None:
    data = {**data_of_size(2000, "a"), **data_of_size(MAX_MESSAGE_BYTES - 2000, "b")}
    assert payload_bytes({"data": data}) == MAX_MESSAGE_BYTES
    assert wire.send(fcm_message(data=data)).status_code == 200


def test_one_byte_more_is_too_big(wire: FCMWire) -> None:
    response = wire.send(fcm_message(data=data_of_size(MAX_MESSAGE_BYTES + 1)))
    assert fcm_error(response) == (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "message")
    assert response.json()["error"]["message"] == "Android message is too big"


def test_keys_count_as_well_as_values(wire: FCMWire) -> None:
    # 4096 bytes of values alone, plus the keys' bytes
    data = {"first": "x" * 2048, "second": "y" * 2048}
    assert invalid(wire, fcm_message(data=data))[3] == "message"


def test_bytes_are_counted_in_utf8_not_characters(wire: FCMWire) -> None:
    # 1400 Cyrillic letters are 2800 bytes; twice that is too big
    data = {"a": "ж" * 1400, "b": "ж" * 1400}
    assert invalid(wire, fcm_message(data=data))[3] == "message"


def test_the_notification_counts_towards_the_limit(wire: FCMWire) -> None:
    data = data_of_size(MAX_MESSAGE_BYTES - 100)
    assert wire.send(fcm_message(data=data, notification={"title": "Hi"})).status_code == 200
    body = fcm_message(data=data, notification={"title": "t" * 60, "body": "b" * 60})
    assert invalid(wire, body)[3] == "message"


def test_android_data_replaces_the_message_data_rather_than_adding_to_it(wire: FCMWire) -> None:
    half = data_of_size(MAX_MESSAGE_BYTES - 10)
    body = fcm_message(data=half, android={"data": half})
    assert wire.send(body).status_code == 200


def test_messages_to_a_topic_have_half_the_room(wire: FCMWire) -> None:
    data = data_of_size(MAX_TOPIC_MESSAGE_BYTES + 1)
    assert invalid(wire, {"message": {"topic": "news", "data": data}})[3] == "message"
    assert wire.send({"message": {"topic": "news", "data": data_of_size(2048)}}).status_code == 200


@pytest.mark.parametrize(
    "key", ["from", "message_type", "google.sent_time", "googleid", "gcm.notification.x", "gcmkey"]
)
def test_reserved_data_keys_are_invalid(wire: FCMWire, key: str) -> None:
    assert invalid(wire, fcm_message(data={key: "v"}))[3] == "message.data"
    assert invalid(wire, fcm_message(android={"data": {key: "v"}}))[3] == "message.android.data"


def test_collapse_key_is_an_allowed_data_key(wire: FCMWire) -> None:
    # "some words (such as collapse_key) are also used by FCM but are allowed"
    assert wire.send(fcm_message(data={"collapse_key": "v", "kind": "match"})).status_code == 200


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"notification": {"title": "Hi", "image": "photo.jpg"}}, "message.notification.image"),
        ({"notification": {"image": "ftp://example.com/a.png"}}, "message.notification.image"),
        ({"android": {"notification": {"image": "/a.png"}}}, "message.android.notification.image"),
        ({"android": {"notification": {"sound": 1}}}, "message.android.notification.sound"),
        ({"android": {"notification": {"default_sound": "true"}}},
         "message.android.notification.default_sound"),
        ({"android": {"notification": {"sticky": 1}}}, "message.android.notification.sticky"),
        ({"android": {"notification": {"color": "red"}}}, "message.android.notification.color"),
        ({"android": {"notification": {"visibility": "HIDDEN"}}},
         "message.android.notification.visibility"),
        ({"android": {"notification": {"notification_priority": "high"}}},
         "message.android.notification.notification_priority"),
        ({"android": {"notification": {"notification_count": "3"}}},
         "message.android.notification.notification_count"),
        ({"android": {"notification": {"body_loc_args": "x"}}},
         "message.android.notification.body_loc_args"),
        ({"android": {"notification": {"vibrate_timings": ["1"]}}},
         "message.android.notification.vibrate_timings"),
        ({"android": {"notification": {"event_time": "yesterday"}}},
         "message.android.notification.event_time"),
        ({"android": {"collapse_key": 5}}, "message.android.collapse_key"),
        ({"android": {"direct_boot_ok": "yes"}}, "message.android.direct_boot_ok"),
        ({"android": {"fcm_options": {"analytics_label": "has spaces"}}},
         "message.android.fcm_options.analytics_label"),
        ({"apns": []}, "message.apns"),
    ],
)
def test_mistyped_fields_are_invalid_and_named(
    wire: FCMWire, fields: dict[str, Any], field: str
) -> None:
    assert invalid(wire, fcm_message(**fields))[3] == field


def test_well_typed_android_notification_fields_are_accepted(wire: FCMWire) -> None:
    notification = {
        "title": "Hi", "image": "https://example.com/a.png", "sound": "default",
        "default_sound": True, "color": "#FF00aa", "visibility": "PRIVATE",
        "notification_priority": "PRIORITY_HIGH", "notification_count": 3,
        "body_loc_args": ["a"], "vibrate_timings": ["0.5s", "1s"],
        "event_time": "2026-01-02T03:04:05.5Z", "light_settings": {},
    }
    body = fcm_message(notification={"image": "http://example.com/b.png"},
                       android={"notification": notification})
    assert wire.send(body).status_code == 200


def test_validate_only_must_be_a_boolean(wire: FCMWire) -> None:
    body = {**fcm_message(), "validate_only": "yes"}
    assert invalid(wire, body)[3] == "validate_only"


def test_a_topic_is_named_without_the_topics_prefix(wire: FCMWire) -> None:
    assert invalid(wire, {"message": {"topic": "/topics/news"}})[3] == "message.topic"


def test_errors_do_not_echo_message_content(wire: FCMWire) -> None:
    response = wire.send(fcm_message(data={"secret": 12345}))
    assert "12345" not in response.text


def test_quota_mode_refuses_what_is_over_the_window_with_a_retry_after(
        service_account_key_pem: str) -> None:
    now = [1000.0]
    with FakeFCM(service_account_key_pem=service_account_key_pem, clock=lambda: now[0]) as fake:
        fake.enforce_quota(2, window_s=60)
        wire = FCMWire(fake)
        try:
            assert [wire.send(fcm_message()).status_code for _ in range(2)] == [200, 200]
            now[0] += 30
            over = wire.send(fcm_message())
            assert fcm_error(over) == (429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", None)
            assert over.headers["retry-after"] == "30"  # when the first leaves the window
            now[0] += 30
            assert wire.send(fcm_message()).status_code == 200
            assert [r.reason for r in fake.received] == [None, None, "QUOTA_EXCEEDED", None]
        finally:
            wire.close()
