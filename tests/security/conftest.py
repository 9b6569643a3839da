"""Fixtures of the security tests: the application's topics and ACLs on the
session's secured Kafka, for a consumer group of each test's own, and the
fakes its workers push to."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from security_support import SecureRig

from broker.acls import reconcile_acls
from broker.localkafka.secure import SecureLocalKafka
from broker.topics import reconcile
from willowe_tasks.acls import acl_specs, managed_principals
from willowe_tasks.app import App
from willowe_tasks.testing import FakeAPNs, FakeFCM, fake_provider_env
from willowe_tasks.topics import topic_specs

#: The audit topic of the tests' settings.
AUDIT_TOPIC = "audit-log"


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeAPNs, FakeFCM]]:
    with FakeAPNs() as apns, FakeFCM() as fcm:
        yield apns, fcm


@pytest.fixture
def rig(secure_kafka: SecureLocalKafka, fakes: tuple[FakeAPNs, FakeFCM],
        tmp_path: Path) -> Iterator[SecureRig]:
    """The app's topics (emptied) and the table's ACLs for a fresh group on
    the secured Kafka; apps made through it are closed afterwards."""
    apns, fcm = fakes
    apns.clear()
    fcm.clear()
    rig = SecureRig(secure_kafka, f"secure-{uuid.uuid4().hex[:8]}", {})
    rig.env = {**fake_provider_env(apns, fcm, tmp_path), "KAFKA_GROUP_ID": rig.group_id,
               "AUDIT_LOG_PATH": str(tmp_path / "audit.jsonl"), "AUDIT_TOPIC": AUDIT_TOPIC}
    admin_settings = rig.settings("admin")
    admin = KafkaAdminClient(**rig.admin_options())
    try:
        reconcile(admin, topic_specs(AUDIT_TOPIC))
        reconcile_acls(admin, acl_specs(admin_settings),
                       principals=managed_principals(admin_settings))
    finally:
        admin.close()
    # Earlier tests' records (sealed with their own keys) are not this one's business.
    flusher = App(admin_settings)
    flusher.broker.flush_all()
    flusher.close()
    try:
        yield rig
    finally:
        rig.close()

