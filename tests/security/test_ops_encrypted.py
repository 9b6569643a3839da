"""The operator's dead-letter tools on the secured Kafka with encryption on:
as ``operator`` they read ``.XQ``, open a sealed dead letter only with the
key, and a replay seals its copy again for the topic the workers read and
goes into the audit trail."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka import KafkaProducer
from security_support import DELIVERY_TIMEOUT_S, HIGH, IOS_TOKEN, SecureRig, key_line, read_records
from support import wait_until

from broker.dead_letters import dead_letter_headers, header_dict
from willowe_tasks.__main__ import main
from willowe_tasks.audit import read_trail
from willowe_tasks.ops.clients import OpsKafka
from willowe_tasks.testing import FakeAPNs, FakeFCM

MATCH = {"name": "Анна", "age": 25}


def test_a_sealed_dead_letter_is_shown_and_replayed_with_the_key_and_only_with_it(
    rig: SecureRig, fakes: tuple[FakeAPNs, FakeFCM], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    apns, _ = fakes
    keys = key_line("k1")
    web, worker = rig.web_and_worker(PAYLOAD_KEYS=keys)
    worker.services().registry.register("user123", "ios", IOS_TOKEN, apns.bundle_id)
    # Given a match that died, sealed as it was on its topic, in that topic's .XQ
    message = web.actors.send_match.message("user123", MATCH)
    value, sealed = web.broker.payload_codec.encode(HIGH, message.encode())
    headers = dead_letter_headers(
        [("dramatiq-message-id", message.message_id.encode()),
         ("dramatiq-actor", b"send_match"), *sealed],
        reason="failed", error_type="PermanentDeliveryError", error_message="NotConfigured",
        source_topic=HIGH, source_partition=0, source_offset=0)
    producer = KafkaProducer(**rig.admin_options())
    producer.send(f"{HIGH}.XQ", value=value, headers=headers).get(timeout=30)
    producer.close()

    # When the operator reads it without the key, it stays sealed
    without_key = OpsKafka(rig.settings("operator"))
    try:
        [letter] = without_key.dead_letters.read([HIGH])
        assert letter.message is None and letter.message_id == message.message_id
    finally:
        without_key.close()
    # and with the key it is the match,
    ops = OpsKafka(rig.settings("operator", PAYLOAD_KEYS=keys))
    try:
        [letter] = ops.dead_letters.read([HIGH])
        assert letter.message is not None and letter.actor == "send_match"
        assert letter.message["args"] == ["user123", {"name": "Анна", "age": 25}]
    finally:
        ops.close()
    # which `dlq replay` sends back, sealed again for its topic.
    env = {**rig.kafka.client_env("operator"), **rig.env, "PAYLOAD_KEYS": keys,
           "DLQ_REPLAY_LOG_PATH": str(tmp_path / "replays.sqlite3"),
           "OPS_AUDIT_LOG_PATH": str(tmp_path / "ops-audit.jsonl")}
    for name, env_value in env.items():
        monkeypatch.setenv(name, env_value)
    assert main(["dlq", "replay", "--topic", "high"]) == 0

    [copy] = read_records(rig.admin_options(), HIGH)
    assert header_dict(copy.headers)["x-payload-key-id"] == "k1"
    assert "Анна".encode() not in copy.value
    # Then the worker opens the copy and pushes it
    rig.worker(worker)
    assert wait_until(lambda: bool(apns.delivered), DELIVERY_TIMEOUT_S)
    assert apns.delivered[0].json["aps"]["alert"]["body"] == "Анна, 25"
    # The replay is in the application's audit trail, as the operator did it.
    [replayed] = [e for e in read_trail(rig.env["AUDIT_LOG_PATH"])
                  if e["what"] == "dead_letters.replay"]
    assert replayed["who"]["principal"] == "User:operator"
    assert replayed["outcome"] == "ok" and replayed["details"]["count"] == 1
