"""End to end: actors → real Kafka → worker → fake APNs / FCM."""

from __future__ import annotations

import time
from collections.abc import Callable

import dramatiq
import pytest
from kafka import KafkaProducer
from notification_support import (
    ANDROID_TOKEN,
    HIGH,
    IOS_TOKEN,
    IOS_TOKEN_2,
    LOW,
    MEDIUM,
    Rig,
    end_offsets,
    read_dead_letters,
    register_both,
)
from pydantic import ValidationError

import willowe_tasks
from willowe_tasks import dispatch
from willowe_tasks.actors import Actors
from willowe_tasks.analytics import read_events


def test_a_match_reaches_every_device_of_the_user_with_high_priority(app: Rig) -> None:
    # Given a user with an iPhone and an Android phone
    register_both(app)
    # When a match is sent, in the guide's words
    app.actors.send_match.send(
        "user123", {"name": "Анна", "age": 25, "photo_url": "https://example.com/photo.jpg"})
    app.join(HIGH)
    # Then each phone got it once, with the right priority and wording
    [ios] = app.apns.wait_for(1)
    [android] = app.fcm.wait_for(1)
    assert ios.token == IOS_TOKEN
    assert ios.headers["apns-priority"] == "10"
    assert ios.headers["apns-push-type"] == "alert"
    assert ios.headers["apns-topic"] == app.apns.bundle_id
    assert int(ios.headers["apns-expiration"]) > time.time() + 23 * 3600
    assert ios.json["aps"]["alert"]["body"] == "Анна, 25"
    assert "💘" in ios.json["aps"]["alert"]["title"]
    message = android.json["message"]
    assert message["token"] == ANDROID_TOKEN
    assert message["android"]["priority"] == "high"
    assert message["notification"]["body"] == "Анна, 25"
    # The collapse id and tag come from the notification id, the same on both.
    assert ios.headers["apns-collapse-id"] == message["android"]["notification"]["tag"]
    assert message["data"]["kind"] == "match"


def test_a_like_goes_on_the_medium_topic_with_normal_android_priority(app: Rig) -> None:
    register_both(app, "user456")
    sent = app.actors.send_like.send("user456", {"name": "Мария", "age": 28})
    assert sent.queue_name == MEDIUM
    app.join(MEDIUM)
    [ios] = app.apns.wait_for(1)
    [android] = app.fcm.wait_for(1)
    assert ios.headers["apns-priority"] == "10"
    assert android.json["message"]["android"]["priority"] == "normal"
    assert ios.json["aps"]["alert"]["body"] == "Мария, 28"


def test_a_custom_notification_takes_the_topic_of_its_priority_word(app: Rig) -> None:
    register_both(app)
    notification = {"type": "custom-notification", "targetUserId": "user123",
                    "title": "Новое сообщение", "body": "У вас новое сообщение 💬"}
    assert app.actors.send_notification.send(notification, "high").queue_name == HIGH
    assert app.actors.send_notification.send(notification, "low").queue_name == LOW
    app.join(HIGH, LOW)
    pushes = app.apns.wait_for(2)
    assert sorted(p.headers["apns-priority"] for p in pushes) == ["10", "5"]
    assert {p.json["aps"]["alert"]["title"] for p in pushes} == {"Новое сообщение"}
    with pytest.raises(ValueError, match="priority must be one of"):
        app.actors.send_notification.send(notification, "urgent")  # type: ignore[arg-type]


def test_analytics_go_to_the_sink_not_to_phones(app: Rig) -> None:
    register_both(app)
    app.actors.track_event.send("user_login", {"userId": "user123", "timestamp": 1732450000000})
    app.join(LOW)
    [event] = read_events(app.analytics_path)
    assert event["event"] == "user_login"
    assert event["properties"] == {"userId": "user123", "timestamp": 1732450000000}
    assert app.apns.received == [] and app.fcm.received == []


@pytest.mark.parametrize(
    ("send", "field"),
    [
        (lambda a: a.send_match.send("user123", {"name": "Анна", "age": "old"}),
         "payload.age"),
        (lambda a: a.send_match.send("user123", {"name": "Анна", "age": 12}),
         "payload.age"),
        (lambda a: a.send_like.send("", {"name": "Мария", "age": 28}), "user_id"),
        (lambda a: a.send_like.send("u1", {"age": 28}), "payload.name"),
        (lambda a: a.send_match.send("u1", {"name": "A", "age": 30, "photo_url": "x"}),
         "payload.photo_url"),
        (lambda a: a.send_notification.send({"type": "x", "title": "t", "body": "b"}),
         "notification.targetUserId"),
        (lambda a: a.track_event.send("User Login!", {}), "event"),
    ],
)
def test_invalid_input_is_rejected_at_send_before_it_reaches_kafka(
    sender: Rig, send: Callable[[Actors], object], field: str
) -> None:
    app = sender
    before = {t: end_offsets(app.broker.bootstrap_servers, t) for t in (HIGH, MEDIUM, LOW)}
    with pytest.raises(ValidationError) as raised:
        send(app.actors)
    assert field in str(raised.value)
    after = {t: end_offsets(app.broker.bootstrap_servers, t) for t in (HIGH, MEDIUM, LOW)}
    assert after == before


def test_an_unregistered_token_is_removed_and_the_other_device_still_gets_it(app: Rig) -> None:
    register_both(app)
    app.services.registry.register("user123", "ios", IOS_TOKEN_2, app.apns.bundle_id)
    app.apns.fail(410, "Unregistered", token=IOS_TOKEN)
    app.actors.send_match.send("user123", {"name": "Анна", "age": 25})
    app.join(HIGH)
    assert {d.token for d in app.services.registry.devices_for("user123")} == {
        IOS_TOKEN_2, ANDROID_TOKEN}
    assert {p.token for p in app.apns.delivered} == {IOS_TOKEN_2}
    assert len(app.fcm.delivered) == 1


def test_a_429_with_retry_after_is_retried_after_that_delay_without_repushing_others(
    app: Rig,
) -> None:
    register_both(app)
    app.apns.fail(429, "TooManyRequests", retry_after=2)
    app.actors.send_match.send("user123", {"name": "Анна", "age": 25})
    app.join(HIGH)
    first, second = app.apns.wait_for(2)
    assert (first.status, second.status) == (429, 200)
    assert second.received_at - first.received_at >= 2.0
    # Android got it on the first attempt and is not pushed again by the retry.
    assert len(app.fcm.received) == 1


def test_a_500_is_retried_then_dead_lettered_with_the_providers_reason(app: Rig) -> None:
    app.services.registry.register("user789", "ios", IOS_TOKEN, app.apns.bundle_id)
    app.apns.fail(500, "InternalServerError", times=10)
    message = app.actors.send_match.send_with_options(
        args=("user789", {"name": "Анна", "age": 25}), max_retries=2)
    app.join(HIGH)
    assert [p.status for p in app.apns.received] == [500, 500, 500]
    [dead] = read_dead_letters(app, f"{HIGH}.XQ", message.message_id)
    assert dead["x-dead-letter-exception"] == "Retry"
    assert "InternalServerError" in dead["x-dead-letter-error"]
    assert dead["x-dead-letter-retries"] == "3"


def test_an_expired_notification_is_dropped_and_counted(app: Rig) -> None:
    register_both(app)
    message = app.actors.send_fast_match.message("user123", {"name": "Анна", "age": 25})
    stale = message.copy(message_timestamp=message.message_timestamp - 16 * 60 * 1000)
    app.broker.enqueue(stale)
    app.join(HIGH)
    assert dispatch.stats["expired"] == 1
    assert app.apns.received == [] and app.fcm.received == []


def test_a_record_that_fails_validation_in_the_worker_is_dead_lettered_with_the_reason(
    app: Rig,
) -> None:
    register_both(app)
    # Another producer skipped send()'s validation.
    bad = app.actors.send_match.message("user123", {"name": "Анна", "age": 25})
    bad = bad.copy(args=("user123", {"name": "Анна", "age": -1}))
    producer = KafkaProducer(bootstrap_servers=app.broker.bootstrap_servers)
    producer.send(HIGH, bad.encode()).get(timeout=30)
    producer.close()
    app.join(HIGH)
    [dead] = read_dead_letters(app, f"{HIGH}.XQ", bad.message_id)
    assert dead["x-dead-letter-exception"] == "InvalidPayload"
    assert "payload.age" in dead["x-dead-letter-error"]
    assert app.apns.received == []


def test_failed_messages_are_logged_without_their_arguments(
    app: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    register_both(app, "secret-user-42")
    bad = app.actors.send_match.message("secret-user-42", {"name": "Тайна", "age": 25})
    bad = bad.copy(args=("secret-user-42", {"name": "Тайна", "age": -1}))
    with caplog.at_level("DEBUG"):
        app.broker.enqueue(bad)
        app.join(HIGH)
    # kafka-python's own DEBUG lines dump the wire; everything above it must not.
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("kafka"))
    assert f"send_match[{bad.message_id}]" in ours
    assert "Тайна" not in ours
    assert "secret-user-42" not in ours


@pytest.mark.parametrize(
    ("actor", "topic"),
    [(willowe_tasks.send_match, HIGH), (willowe_tasks.send_fast_match, HIGH),
     (willowe_tasks.send_like, MEDIUM), (willowe_tasks.send_one_night, MEDIUM),
     (willowe_tasks.track_event, LOW)],
)
def test_each_actor_of_the_package_sends_to_the_topic_of_its_priority(
    actor: dramatiq.Actor, topic: str
) -> None:
    assert actor.queue_name == topic
