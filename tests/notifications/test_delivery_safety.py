"""What a production team would hit in its first week: provider limits, pushes
the app can act on, rolling deploys. End to end on the real Kafka and fakes."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import dramatiq
import pytest
from kafka import KafkaProducer
from notification_support import (
    ANDROID_TOKEN,
    HIGH,
    IOS_TOKEN,
    LOW,
    MEDIUM,
    Rig,
    end_offsets,
    register_both,
)
from pydantic import ValidationError
from support import wait_until

from willowe_tasks.app import App
from willowe_tasks.providers.fcm.message import MAX_TTL_S

PHOTO = "https://example.com/photo.jpg"


def test_a_match_carries_who_and_which_match_with_a_sound_and_the_photo(app: Rig) -> None:
    register_both(app)
    app.actors.send_match.send("user123", {
        "name": "Анна", "age": 25, "photoUrl": PHOTO, "senderId": "user777", "matchId": "m-9"})
    app.join(HIGH)
    [ios] = app.apns.wait_for(1)
    [android] = app.fcm.wait_for(1)
    # The app opens the right screen from the data, on both platforms alike
    assert ios.data["sender_id"] == android.data["sender_id"] == "user777"
    assert ios.data["match_id"] == android.data["match_id"] == "m-9"
    assert ios.data["kind"] == android.data["kind"] == "match"
    # A sound, and the photo as a rich notification
    assert ios.json["aps"]["sound"] == "default"
    assert ios.json["aps"]["mutable-content"] == 1
    assert ios.json["image_url"] == PHOTO
    message = android.json["message"]
    assert message["notification"]["image"] == PHOTO
    assert message["android"]["notification"]["sound"] == "default"
    # Non-collapsible: no collapse key; the tag hides a redelivery on screen
    assert "collapse_key" not in message["android"]
    assert message["android"]["notification"]["tag"] == ios.headers["apns-collapse-id"]


def test_a_like_leaves_out_what_it_was_not_given(app: Rig) -> None:
    register_both(app, "user456")
    app.actors.send_like.send("user456", {"name": "Мария", "age": 28})
    app.join(MEDIUM)
    [ios] = app.apns.wait_for(1)
    assert set(ios.data) == {"kind", "notification_id"}
    assert "mutable-content" not in ios.json["aps"]
    assert ios.json["aps"]["sound"] == "default"


def test_a_custom_low_priority_notification_reaches_android_within_fcms_ttl(app: Rig) -> None:
    # Given a custom notification whose deadline is its topic's 30 days
    register_both(app)
    app.actors.send_notification.send(
        {"type": "custom-notification", "targetUserId": "user123", "title": "Новое сообщение",
         "body": "У вас новое сообщение", "data": {"chat_id": "c-1"}}, "low")
    app.join(LOW)
    # Then Android gets it, asked to keep it for FCM's longest, 28 days
    [android] = app.fcm.wait_for(1)
    assert android.ok, android.reason
    assert android.json["message"]["android"]["ttl"] == f"{MAX_TTL_S}s"
    assert android.data["chat_id"] == "c-1"
    # and iOS is told the whole deadline (Apple documents no maximum)
    [ios] = app.apns.wait_for(1)
    assert ios.ok
    assert int(ios.headers["apns-expiration"]) > android.received_at + MAX_TTL_S


@pytest.mark.parametrize(
    ("notification", "field", "provider"),
    [
        # 2,000 Cyrillic letters pass the 2,000-character limit: 4,000 bytes
        ({"body": "ж" * 2000}, "notification.body", "FCM"),
        # 1,000 emoji are 1,000 characters and 4,000 bytes
        ({"body": "💘" * 1000}, "notification.body", "FCM"),
        # data counts too
        ({"body": "ok", "data": {f"k{n}": "ж" * 500 for n in range(5)}}, "notification.data",
         "FCM"),
    ],
)
def test_a_notification_too_big_for_a_provider_is_refused_at_send(
    sender: Rig, notification: dict[str, object], field: str, provider: str
) -> None:
    before = end_offsets(sender.broker.bootstrap_servers, HIGH)
    with pytest.raises(ValidationError) as raised:
        sender.actors.send_notification.send(
            {"type": "custom-notification", "targetUserId": "user123", "title": "Привет",
             **notification}, "high")
    text = str(raised.value)
    assert field in text
    assert f"for {provider}, over its limit of 4096 bytes" in text
    assert "UTF-8 bytes" in text
    assert "жжж" not in text  # the text itself is not echoed
    assert end_offsets(sender.broker.bootstrap_servers, HIGH) == before


def test_a_notification_just_under_the_limits_is_accepted(sender: Rig) -> None:
    # 1,800 Cyrillic letters: 3,600 bytes of body leave room for the rest
    sender.actors.send_notification.send(
        {"type": "custom-notification", "targetUserId": "nobody-here", "title": "Привет",
         "body": "ж" * 1800}, "low")


def test_a_record_with_a_field_this_version_does_not_know_is_still_delivered(
    app: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a producer one version ahead that adds a field (send() itself refuses it)
    register_both(app)
    with pytest.raises(ValidationError, match="payload.mood"):
        app.actors.send_match.send("user123", {"name": "Анна", "age": 25, "mood": "😊"})
    message = app.actors.send_match.message("user123", {"name": "Анна", "age": 25})
    newer = message.copy(args=("user123", {"name": "Анна", "age": 25, "mood": "😊"}))
    second = message.copy(message_id=message.message_id + "-2",
                          args=("user123", {"name": "Анна", "age": 26, "mood": "🙂"}))
    producer = KafkaProducer(bootstrap_servers=app.broker.bootstrap_servers)
    with caplog.at_level(logging.WARNING, logger="willowe_tasks.lenient"):
        for record in (newer, second):
            producer.send(HIGH, record.encode()).get(timeout=30)
        producer.close()
        app.join(HIGH)
    # Then both are pushed to both phones, and the field is logged once, by name only
    assert len(app.apns.wait_for(2)) == 2
    assert {p.token for p in app.fcm.wait_for(2)} == {ANDROID_TOKEN}
    assert {p.token for p in app.apns.delivered} == {IOS_TOKEN}
    warnings = [r.getMessage() for r in caplog.records if "payload.mood" in r.getMessage()]
    assert len(warnings) <= 1  # once per process (an earlier test may have logged it)
    assert not any("😊" in r.getMessage() for r in caplog.records)


def test_an_android_phone_offline_overnight_gets_all_ten_likes(app: Rig) -> None:
    # Given an Android phone that is off
    token = f"offline-phone-{uuid.uuid4().hex[:8]}"
    app.services.registry.register("user-night", "android", token, "com.willowe.android")
    app.fcm.set_offline(token)
    # When ten people like its owner during the night
    for n in range(10):
        app.actors.send_like.send("user-night", {"name": f"Мария {n}", "age": 20 + n})
    app.join(MEDIUM)
    assert wait_until(lambda: len(app.fcm.delivered) == 10, 30)
    # Then in the morning FCM hands over all ten, and all ten show
    app.fcm.set_online(token)
    shown = app.fcm.phone(token).shown
    assert sorted(r.json["message"]["notification"]["body"] for r in shown) == sorted(
        f"Мария {n}, {20 + n}" for n in range(10))


#: Users in the misconfiguration test, one iPhone each.
MISCONFIGURED_USERS = 50


def test_a_worker_on_the_wrong_apns_environment_removes_no_token(
    sender: Rig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given 50 iPhones whose tokens belong to APNs' sandbox
    tokens = {f"user-env-{n}": uuid.uuid4().hex * 2 for n in range(MISCONFIGURED_USERS)}
    for user, token in tokens.items():
        sender.apns.register_token(token, environment="sandbox")
        sender.services.registry.register(user, "ios", token, sender.apns.bundle_id)
    # and a worker deployed with APNS_ENDPOINT pointing at production
    wrong = App(sender.app.settings.model_copy(
        update={"apns_endpoint": sender.apns.production_url}))
    worker = dramatiq.Worker(wrong.broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        # When 50 matches are sent
        with caplog.at_level(logging.ERROR, logger="willowe_tasks.token_guard"):
            for user in tokens:
                sender.actors.send_match.send(user, {"name": "Анна", "age": 25})
            # every token is refused at least once, and the guard trips
            assert wait_until(lambda: len({r.token for r in sender.apns.received
                                           if r.reason == "BadDeviceToken"})
                              == MISCONFIGURED_USERS, 60)
    finally:
        worker.stop()
        wrong.close()
    assert any("APNS_ENDPOINT" in r.getMessage() for r in caplog.records)
    assert sender.apns.delivered == []
    # Then, the setting fixed, every token is still there and every phone gets
    # its match once, from the retries the guard kept
    assert all(sender.services.registry.devices_for(user) for user in tokens)
    assert sender.services.registry.invalid_counts() == {}
    worker = dramatiq.Worker(sender.broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        sender.join(HIGH)
        assert wait_until(lambda: len(sender.apns.delivered) == MISCONFIGURED_USERS, 60)
    finally:
        worker.stop()
    assert sorted(str(r.token) for r in sender.apns.delivered) == sorted(tokens.values())
