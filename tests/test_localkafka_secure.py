"""The secured local Kafka: only SCRAM users over TLS get in, and only as far
as their ACLs let them."""

from __future__ import annotations

import logging
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    NewTopic,
    ResourcePattern,
    ResourceType,
)
from kafka.errors import (
    GroupAuthorizationFailedError,
    KafkaTimeoutError,
    SaslAuthenticationFailedError,
    TopicAuthorizationFailedError,
)

from broker.localkafka.secure import ADMIN_USER, APP_USERS, SecureLocalKafka

ROOT = Path(__file__).resolve().parents[1]

#: How long a refused client may try before it gives up, in ms. kafka-python
#: retries a failed bootstrap until bootstrap_timeout_ms, 30 s by default
#: (an authentication failure ends it at once: broker._kafka_python_fixes).
REFUSED_BOOTSTRAP_TIMEOUT_MS = 3_000

#: The broker's reason for turning down a SCRAM exchange.
SCRAM_REJECTED = "Authentication failed during authentication due to invalid credentials"


@pytest.fixture
def topic(secure_admin: KafkaAdminClient, unique_name: str) -> str:
    secure_admin.create_topics([NewTopic(unique_name, num_partitions=1, replication_factor=1)])
    return unique_name


def allow(admin: KafkaAdminClient, user: str, operation: ACLOperation,
          resource_type: ResourceType, name: str) -> None:
    result = admin.create_acls([ACL(f"User:{user}", "*", operation, ACLPermissionType.ALLOW,
                                    ResourcePattern(resource_type, name))])
    assert result["failed"] == []


def test_a_user_with_acls_produces_and_another_consumes(
    secure_kafka: SecureLocalKafka, secure_admin: KafkaAdminClient, topic: str,
) -> None:
    # Given web may write the topic, and worker may read it in its group
    group = f"{topic}-group"
    allow(secure_admin, "web", ACLOperation.WRITE, ResourceType.TOPIC, topic)
    allow(secure_admin, "worker", ACLOperation.READ, ResourceType.TOPIC, topic)
    allow(secure_admin, "worker", ACLOperation.READ, ResourceType.GROUP, group)
    # When web sends (acks=all, idempotent: kafka-python's defaults)
    producer = KafkaProducer(bootstrap_servers=secure_kafka.bootstrap_servers,
                             **secure_kafka.client_options("web"))
    producer.send(topic, b"match for 42").get(timeout=30)
    producer.close()
    # Then worker reads it in its group
    consumer = KafkaConsumer(topic, bootstrap_servers=secure_kafka.bootstrap_servers,
                             group_id=group, auto_offset_reset="earliest",
                             consumer_timeout_ms=20_000, **secure_kafka.client_options("worker"))
    record = next(iter(consumer), None)  # None after 20 s without a record
    consumer.close()
    assert record is not None and record.value == b"match for 42"


def test_a_user_without_acls_is_denied(secure_kafka: SecureLocalKafka, topic: str) -> None:
    options = {"bootstrap_servers": secure_kafka.bootstrap_servers,
               **secure_kafka.client_options("operator")}
    producer = KafkaProducer(max_block_ms=20_000, **options)
    with pytest.raises(TopicAuthorizationFailedError):
        producer.send(topic, b"not allowed").get(timeout=30)
    producer.close()

    consumer = KafkaConsumer(topic, group_id=f"{topic}-group", consumer_timeout_ms=10_000,
                             **options)
    with pytest.raises(GroupAuthorizationFailedError):
        list(consumer)
    consumer.close()

    admin = KafkaAdminClient(**options)
    with pytest.raises(TopicAuthorizationFailedError):
        admin.create_topics([NewTopic(f"{topic}-2", num_partitions=1, replication_factor=1)])
    # Topics it may not describe are not even listed.
    assert topic not in admin.list_topics()
    admin.close()


def _producer(**options: Any) -> KafkaProducer:
    return KafkaProducer(**options)


def _consumer(**options: Any) -> KafkaConsumer:
    return KafkaConsumer(group_id="wrong-password", **options)


def _admin(**options: Any) -> KafkaAdminClient:
    return KafkaAdminClient(**options)


@pytest.mark.parametrize("make_client", [_producer, _consumer, _admin],
                         ids=["producer", "consumer", "admin"])
def test_a_wrong_password_is_rejected_and_the_client_says_so(
    secure_kafka: SecureLocalKafka, make_client: Callable[..., object],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Upstream kafka-python 3.0 retries a rejected SCRAM exchange until
    # bootstrap_timeout_ms; broker._kafka_python_fixes (in force once broker
    # is imported) ends the bootstrap with the broker's refusal instead.
    options = {**secure_kafka.client_options("web"), "sasl_plain_password": "not-the-password"}
    rejected_before = _failed_authentications(secure_kafka)
    caplog.set_level(logging.WARNING, logger="kafka")
    with pytest.raises(SaslAuthenticationFailedError, match="invalid credentials"):
        make_client(bootstrap_servers=secure_kafka.bootstrap_servers,
                    bootstrap_timeout_ms=REFUSED_BOOTSTRAP_TIMEOUT_MS, **options)
    # The broker saw the attempt, and turned it down for the password.
    assert _failed_authentications(secure_kafka) > rejected_before
    assert "not-the-password" not in caplog.text


def _failed_authentications(kafka: SecureLocalKafka) -> int:
    log = kafka.log_file.read_text(errors="replace")
    return sum("Failed authentication with" in line and SCRAM_REJECTED in line
               for line in log.splitlines())


def test_a_plaintext_client_is_refused(secure_kafka: SecureLocalKafka) -> None:
    # Neither the client port nor the controller's speaks PLAINTEXT.
    for port in (secure_kafka.port, secure_kafka.controller_port):
        with pytest.raises(KafkaTimeoutError, match="Unable to bootstrap"):
            KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}",
                             bootstrap_timeout_ms=REFUSED_BOOTSTRAP_TIMEOUT_MS)


def test_a_client_that_does_not_trust_the_ca_is_refused(
    secure_kafka: SecureLocalKafka, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    caplog.set_level(logging.WARNING, logger="kafka")
    with pytest.raises(KafkaTimeoutError, match="Unable to bootstrap"):
        KafkaAdminClient(bootstrap_servers=secure_kafka.bootstrap_servers,
                         bootstrap_timeout_ms=REFUSED_BOOTSTRAP_TIMEOUT_MS,
                         **{**secure_kafka.client_options("web"), "ssl_cafile": str(other_ca)})
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text


def test_secrets_are_owner_only_and_stay_out_of_logs_and_settings(
    secure_kafka: SecureLocalKafka,
) -> None:
    private = [secure_kafka.keystore_file, secure_kafka.properties_file,
               secure_kafka.admin_config_file]
    private += [secure_kafka.password_file(user) for user in (ADMIN_USER, *APP_USERS)]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((secure_kafka.home / "users").stat().st_mode) == 0o700

    passwords = {user: secure_kafka.password(user) for user in (ADMIN_USER, *APP_USERS)}
    assert len(set(passwords.values())) == len(passwords)
    assert all(len(p) >= 32 for p in passwords.values())
    printed = secure_kafka.describe_clients()
    log = secure_kafka.log_file.read_text(errors="replace")
    for password in passwords.values():
        assert password not in printed
        assert password not in log
    assert "password" not in repr(secure_kafka).lower()


def test_the_client_env_names_settings_that_connect(secure_kafka: SecureLocalKafka) -> None:
    env = secure_kafka.client_env("worker")
    assert env == {
        "KAFKA_BROKER": secure_kafka.bootstrap_servers,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "worker",
        "KAFKA_SASL_PASSWORD_FILE": str(secure_kafka.home / "users" / "worker.password"),
        "KAFKA_SSL_CA_FILE": str(secure_kafka.ca_file),
    }
    # What an application would build from those variables gets in.
    admin = KafkaAdminClient(
        bootstrap_servers=env["KAFKA_BROKER"],
        security_protocol=env["KAFKA_SECURITY_PROTOCOL"],
        sasl_mechanism=env["KAFKA_SASL_MECHANISM"],
        sasl_plain_username=env["KAFKA_SASL_USERNAME"],
        sasl_plain_password=Path(env["KAFKA_SASL_PASSWORD_FILE"]).read_text().strip(),
        ssl_cafile=env["KAFKA_SSL_CA_FILE"],
    )
    assert isinstance(admin.list_topics(), list)
    admin.close()


def test_an_unknown_user_is_named_in_the_error(secure_kafka: SecureLocalKafka) -> None:
    with pytest.raises(ValueError, match="unknown Kafka user 'mallory'; known: admin, web"):
        secure_kafka.client_options("mallory")


def test_a_user_name_that_cannot_be_a_scram_user_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="users: 'web,admin' is not a name"):
        SecureLocalKafka(tmp_path, users=("web,admin",))


def test_the_cli_tools_run_as_admin(secure_kafka: SecureLocalKafka, topic: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "broker.localkafka", "--secure", "--home", str(secure_kafka.home),
         "--port", str(secure_kafka.port), "--controller-port", str(secure_kafka.controller_port),
         "--jars", str(secure_kafka.libs), "tool", "kafka-topics", "--list"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert topic in result.stdout.split()


@pytest.mark.slow
def test_it_comes_back_after_a_crash_with_its_users(
    secure_kafka: SecureLocalKafka, tmp_path: Path, free_ports: Callable[[int], list[int]],
) -> None:
    # A private one (secure_kafka first: the jars are there by then), since
    # its controller listener authenticating with SCRAM after a restart is
    # what this checks.
    port, controller_port = free_ports(2)
    # (384 MiB, as the session's secured Kafka: one started with 256 MiB ran
    # out of heap while starting, its TLS and SCRAM set up, on a loaded machine.)
    kafka = SecureLocalKafka(tmp_path / "kafka", port=port, controller_port=controller_port,
                             jars=secure_kafka.libs, heap="384m")
    try:
        assert kafka.start() is True
        password = kafka.password("web")
        kafka.kill()
        assert not kafka.answers(timeout_s=1.0)
        assert kafka.start() is True
        # The same users, with the same passwords.
        assert kafka.password("web") == password
        admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers,
                                 **kafka.client_options("web"))
        assert isinstance(admin.list_topics(), list)
        admin.close()
    finally:
        kafka.kill()
