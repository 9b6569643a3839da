"""The Node.js client against the secured Kafka (SASL_SSL, SCRAM-SHA-512, ACLs),
configured only by the security settings' environment names, as the web
principal."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ACL, ACLOperation, ACLPermissionType, ResourcePattern, ResourceType
from node_support import (
    FIRST_FAILURE_SLACK_MS,
    TOPICS,
    NodeDriver,
    end_offsets,
    node_env,
    read_records,
)

from broker.localkafka.secure import ADMIN_USER, SecureLocalKafka
from broker.topics import reconcile
from willowe_tasks.topics import ALL_TOPIC_SPECS

MATCH = ("sendMatchNotification", "user123", {"name": "Анна", "age": 25})


@pytest.fixture(scope="module")
def web_may_write(secure_kafka: SecureLocalKafka) -> Iterator[SecureLocalKafka]:
    """The notification topics on the secured Kafka, and `web` allowed to write them."""
    admin = KafkaAdminClient(bootstrap_servers=secure_kafka.bootstrap_servers,
                             **secure_kafka.client_options(ADMIN_USER))
    try:
        reconcile(admin, ALL_TOPIC_SPECS)
        result = admin.create_acls([
            ACL("User:web", "*", ACLOperation.WRITE, ACLPermissionType.ALLOW,
                ResourcePattern(ResourceType.TOPIC, topic)) for topic in TOPICS])
        assert result["failed"] == []
    finally:
        admin.close()
    yield secure_kafka


def secure_env(kafka: SecureLocalKafka, user: str, **overrides: str) -> dict[str, str]:
    return node_env(**{**kafka.client_env(user), "KAFKA_LOG_LEVEL": "NOTHING", **overrides})


def test_the_web_principal_sends_over_sasl_ssl(web_may_write: SecureLocalKafka) -> None:
    kafka = web_may_write
    admin_options = kafka.client_options(ADMIN_USER)
    start = end_offsets(kafka.bootstrap_servers, admin_options)
    with NodeDriver(secure_env(kafka, "web")) as driver:
        answer = driver.send(*MATCH)
        assert answer["ok"], answer
    message_id = answer["result"]["messageId"]
    record = read_records(kafka.bootstrap_servers, start, {message_id},
                          client_options=admin_options)[message_id]
    assert record["topic"] == "high-priority-notifications"
    assert record["headers"]["dramatiq-actor"] == "send_match"


def test_a_wrong_password_fails_fast_with_the_reason(web_may_write: SecureLocalKafka,
                                                     tmp_path: Path) -> None:
    wrong = tmp_path / "web.password"
    wrong.write_text(f"not-{uuid.uuid4().hex}\n")
    with NodeDriver(secure_env(web_may_write, "web", KAFKA_SASL_PASSWORD_FILE=str(wrong))
                    ) as driver:
        first = driver.send(*MATCH)
        later = driver.send(*MATCH)
    assert not first["ok"] and first["error"]["circuitOpen"] is False
    assert first["ms"] < 2000 + FIRST_FAILURE_SLACK_MS, first
    assert "SASL" in first["error"]["message"] or "uthentication" in first["error"]["message"]
    assert wrong.read_text().strip() not in first["error"]["message"] + driver.stderr
    assert later["error"]["circuitOpen"] is True


def test_a_principal_without_acls_is_refused(web_may_write: SecureLocalKafka) -> None:
    # `operator` authenticates, but may write no topic.
    with NodeDriver(secure_env(web_may_write, "operator")) as driver:
        answer = driver.send(*MATCH)
    assert not answer["ok"], answer
    assert "uthoriz" in answer["error"]["message"], answer
