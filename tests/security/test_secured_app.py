"""The application on a secured Kafka: SASL_SSL with SCRAM users, the ACL
table applied for the test's group, and payload encryption.

Each web app logs in as ``web`` and each worker as ``worker``, as in
production; topics are emptied before each test."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import dramatiq
import pytest
from dramatiq.errors import ConnectionFailed
from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import SaslAuthenticationFailedError
from security_support import (
    ANDROID_TOKEN,
    DELIVERY_TIMEOUT_S,
    HIGH,
    IOS_TOKEN,
    SecureRig,
    bytes_written_since,
    key_line,
    read_records,
    segment_sizes,
)
from support import wait_until

from broker import KafkaBroker
from broker.access import AuthenticationFailed, AuthorizationFailed
from broker.dead_letters import header_dict
from broker.encryption import AesGcmCipher, KeyRing
from broker.payload_codec import PayloadCodec
from willowe_tasks.app import App
from willowe_tasks.kafka_clients import client_options
from willowe_tasks.settings import settings_from
from willowe_tasks.testing import FakeAPNs, FakeFCM, worker_command

MEDIUM = "medium-priority-notifications"
ROOT = Path(__file__).resolve().parents[2]

#: The issue's bound on failing with a wrong password, in seconds.
WRONG_PASSWORD_BOUND_S = 10.0

MATCH = {"name": "Анна", "age": 25, "photo_url": "https://example.com/photo.jpg"}


def register_phones(app: App, apns: FakeAPNs, user_id: str = "user123") -> None:
    registry = app.services().registry
    registry.register(user_id, "ios", IOS_TOKEN, apns.bundle_id)
    registry.register(user_id, "android", ANDROID_TOKEN, "com.willowe.android")


def bodies(apns: FakeAPNs) -> list[str]:
    return sorted(push.json["aps"]["alert"]["body"] for push in apns.delivered)


def test_a_match_reaches_both_phones_over_sasl_ssl_encrypted_and_retried_through_the_dq(
    rig: SecureRig, fakes: tuple[FakeAPNs, FakeFCM],
) -> None:
    apns, fcm = fakes
    web, worker = rig.web_and_worker(PAYLOAD_KEYS=key_line("k1"))
    register_phones(worker, apns)
    # APNs fails the first push: the worker sends the message to .DQ and,
    # when it is due, back onto its topic; both writes are the worker's.
    apns.fail(500, "InternalServerError", times=1)
    rig.worker(worker)

    web.actors.send_match.send("user123", MATCH)

    assert wait_until(lambda: apns.delivered and fcm.delivered, DELIVERY_TIMEOUT_S)
    assert bodies(apns) == ["Анна, 25"]
    assert fcm.delivered[0].json["message"]["notification"]["body"] == "Анна, 25"
    assert [r.status for r in apns.received] == [500, 200]
    # What Kafka holds is sealed: the original and the retry written back.
    records = read_records(rig.admin_options(), HIGH)
    assert len(records) == 2
    for record in records:
        headers = header_dict(record.headers)
        # (Compressed first: ciphertext doesn't compress.)
        assert headers["x-payload-encoding"] == "zstd,aes-256-gcm"
        assert headers["x-payload-key-id"] == "k1"
        assert "Анна".encode() not in record.value and b"user123" not in record.value


@pytest.fixture
def wrong_password_file(tmp_path: Path) -> str:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    return str(wrong)


def test_a_wrong_password_fails_send_at_once_naming_the_user(
    rig: SecureRig, wrong_password_file: str,
) -> None:
    web = rig.app("web", KAFKA_SASL_PASSWORD_FILE=wrong_password_file)

    started = time.monotonic()
    with pytest.raises(AuthenticationFailed) as raised:
        web.actors.send_match.send("user123", MATCH)
    elapsed = time.monotonic() - started

    # Kafka's own refusal, not a bootstrap that timed out.
    assert isinstance(raised.value.__cause__, SaslAuthenticationFailedError)
    assert elapsed < WRONG_PASSWORD_BOUND_S
    message = str(raised.value)
    assert f"Kafka at {rig.kafka.bootstrap_servers} rejected user 'web' (SCRAM-SHA-512): " \
           "authentication failed" in message
    assert "invalid credentials" in message
    assert "not-the-password" not in message


def test_a_wrong_password_stops_a_worker_from_starting(
    rig: SecureRig, wrong_password_file: str,
) -> None:
    app = rig.app("worker", KAFKA_SASL_PASSWORD_FILE=wrong_password_file)
    worker = dramatiq.Worker(app.broker, worker_threads=1)

    started = time.monotonic()
    with pytest.raises(AuthenticationFailed,
                       match="rejected user 'worker' .*authentication failed"):
        worker.start()
    assert time.monotonic() - started < WRONG_PASSWORD_BOUND_S

    # `dramatiq willowe_tasks` exits (status 3: "broker connection failed")
    # instead of running consumers that retry for ever.
    env = {**os.environ, **rig.kafka.client_env("worker"), **rig.env,
           "KAFKA_SASL_PASSWORD_FILE": wrong_password_file}
    result = subprocess.run(worker_command(processes=1, threads=1), env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "AuthenticationFailed" in result.stderr
    assert "rejected user 'worker' (SCRAM-SHA-512): authentication failed" in result.stderr
    assert "not-the-password" not in result.stderr + result.stdout


def test_a_client_without_tls_is_refused(rig: SecureRig) -> None:
    env = {**rig.kafka.client_env("web"), **rig.env, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}
    del env["KAFKA_SSL_CA_FILE"]  # (a CA file with SASL_PLAINTEXT is refused by the settings)
    app = App(settings_from(env))
    handshakes_before = _failed_tls_handshakes(rig)
    try:
        with pytest.raises(ConnectionFailed, match="can't send to 'high-priority-notifications'"):
            app.actors.send_match.send("user123", MATCH)
    finally:
        app.close()
    # The broker saw a client speak plain bytes to its TLS listener.
    assert _failed_tls_handshakes(rig) > handshakes_before


def _failed_tls_handshakes(rig: SecureRig) -> int:
    log = rig.kafka.log_file.read_text(errors="replace")
    return sum("SSL handshake failed" in line for line in log.splitlines())


def test_the_web_principal_cannot_consume_or_write_dead_letters(rig: SecureRig) -> None:
    web = rig.app("web")
    consumer = web.broker.consume(HIGH, timeout=1_000)
    try:
        with pytest.raises(AuthorizationFailed,
                           match=r"denied user 'web' \(SCRAM-SHA-512\) consuming "
                                 r"'high-priority-notifications': not authorized "
                                 r"\(GroupAuthorizationFailedError"):
            for _ in range(30):  # each call returns within its 1 s timeout
                next(consumer)
    finally:
        consumer.close()

    dead_letter = web.actors.send_match.message("user123", MATCH).copy(queue_name=f"{HIGH}.XQ")
    with pytest.raises(AuthorizationFailed,
                       match=r"denied user 'web' .* sending to 'high-priority-notifications.XQ': "
                             r"not authorized \(TopicAuthorizationFailedError"):
        web.broker.enqueue(dead_letter)


def test_the_worker_principal_cannot_create_topics(rig: SecureRig, unique_name: str) -> None:
    settings = rig.settings("worker")
    broker = KafkaBroker(bootstrap_servers=settings.bootstrap_servers, group_id=rig.group_id,
                         create_topics=True, **client_options(settings))

    @dramatiq.actor(broker=broker, queue_name=unique_name)
    def task() -> None:
        pass

    try:
        with pytest.raises(AuthorizationFailed,
                           match=rf"denied user 'worker' .* creating topics for '{unique_name}'"):
            task.send()
    finally:
        broker.close()
    admin = KafkaAdminClient(**rig.admin_options())
    try:
        assert unique_name not in admin.list_topics()
    finally:
        admin.close()


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
def test_kafka_log_segments_hold_no_personal_data_with_encryption_on(
    rig: SecureRig, encrypted: bool,
) -> None:
    # (The plain control turns Kafka's compression off, or zstd would hide the text too.)
    web = rig.app("web", **({"PAYLOAD_KEYS": key_line("k1")} if encrypted
                            else {"KAFKA_COMPRESSION": "none"}))
    user_id = f"user-{uuid.uuid4().hex}"
    photo_url = f"https://example.com/photos/{uuid.uuid4().hex}.jpg"
    before = segment_sizes(rig.kafka, HIGH)

    web.actors.send_match.send(user_id, {"name": "Анна", "age": 25, "photo_url": photo_url})

    written = bytes_written_since(rig.kafka, HIGH, before)
    assert written, "nothing reached the log segments"
    found = {text: any(form in written for form in _spellings(text))
             for text in ("Анна", user_id, photo_url)}
    if encrypted:
        assert found == {"Анна": False, user_id: False, photo_url: False}
        assert b"aes-256-gcm" in written  # the record is there, sealed
    else:
        # The same reading finds them when nothing is encrypted.
        assert found == {"Анна": True, user_id: True, photo_url: True}


def _spellings(text: str) -> list[bytes]:
    """``text`` as UTF-8 and as JSON escapes it (Dramatiq's encoder escapes non-ASCII)."""
    return [text.encode(), json.dumps(text)[1:-1].encode(), json.dumps(text)[1:-1]
            .replace("/", "\\/").encode()]


def test_after_a_key_rotation_messages_sealed_with_the_old_key_are_still_processed(
    rig: SecureRig, fakes: tuple[FakeAPNs, FakeFCM],
) -> None:
    apns, _ = fakes
    old, new = key_line("k1"), key_line("k2")
    before = rig.app("web", PAYLOAD_KEYS=old)
    before.actors.send_match.send("user123", MATCH)  # sealed with k1, waiting in Kafka
    # The rotation: k2 encrypts from now on, k1 still decrypts.
    after = rig.app("web", PAYLOAD_KEYS=f"{new},{old}")
    after.actors.send_like.send("user123", {"name": "Мария", "age": 28})
    worker = rig.app("worker", PAYLOAD_KEYS=f"{new},{old}")
    register_phones(worker, apns)
    rig.worker(worker)

    assert wait_until(lambda: len(apns.delivered) >= 2, DELIVERY_TIMEOUT_S)
    assert bodies(apns) == ["Анна, 25", "Мария, 28"]
    key_ids = {topic: {header_dict(r.headers)["x-payload-key-id"]
                       for r in read_records(rig.admin_options(), topic)}
               for topic in (HIGH, MEDIUM)}
    assert key_ids == {HIGH: {"k1"}, MEDIUM: {"k2"}}


def test_records_that_cannot_be_decrypted_go_to_the_xq_and_the_worker_goes_on(
    rig: SecureRig, fakes: tuple[FakeAPNs, FakeFCM],
) -> None:
    apns, _ = fakes
    web, worker = rig.web_and_worker(PAYLOAD_KEYS=key_line("k1"))
    body = web.actors.send_match.message("user123", MATCH).encode()
    codec = web.broker.payload_codec
    sealed, headers = codec.encode(HIGH, body)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    other_topic, other_topic_headers = codec.encode(MEDIUM, body)
    stranger = PayloadCodec(AesGcmCipher(KeyRing.parse(key_line("k9"))))
    unknown_key, unknown_key_headers = stranger.encode(HIGH, body)
    bad = {"tampered": (tampered, headers), "wrong topic": (other_topic, other_topic_headers),
           "unknown key": (unknown_key, unknown_key_headers)}
    producer = KafkaProducer(**rig.admin_options())
    for value, record_headers in bad.values():
        producer.send(HIGH, value=value, headers=record_headers).get(timeout=30)
    producer.close()
    web.actors.send_match.send("user123", MATCH)
    register_phones(worker, apns)
    rig.worker(worker)

    assert wait_until(lambda: len(apns.delivered) >= 1, DELIVERY_TIMEOUT_S)
    dead = read_records(rig.admin_options(), f"{HIGH}.XQ")
    assert len(dead) == 3
    assert all(header_dict(r.headers)["x-dead-letter-reason"] == "undecryptable" for r in dead)
    errors = sorted(header_dict(r.headers)["x-dead-letter-error"] for r in dead)
    assert errors[0].startswith("authentication tag mismatch under key 'k1'")
    assert errors[1].startswith("authentication tag mismatch under key 'k1'")
    assert errors[2].startswith("unknown key id 'k9'")
    # Each keeps the bytes it came with, for a replay once the key is found.
    assert sorted(r.value for r in dead) == sorted(value for value, _ in bad.values())
    assert bodies(apns) == ["Анна, 25"]
