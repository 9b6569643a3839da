"""Fixtures of the operator tools' tests: an application of the test's own on
the test Kafka (few, fast retries, so dead letters come quickly), the fakes,
and the environment the operator commands read their settings from."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from ops_support import OpsRig

from broker.topics import reconcile
from willowe_tasks.app import App
from willowe_tasks.settings import settings_from
from willowe_tasks.testing import FakeAPNs, FakeFCM, fake_provider_env
from willowe_tasks.topics import ALL_TOPIC_SPECS

#: Retries before a dead letter: each notification is tried this many times + 1.
RETRIES = 2


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeAPNs, FakeFCM]]:
    with FakeAPNs() as apns, FakeFCM() as fcm:
        yield apns, fcm


@pytest.fixture
def rig(kafka_bootstrap: str, fakes: tuple[FakeAPNs, FakeFCM], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[OpsRig]:
    """The app (no worker yet: ``rig.worker()`` starts one), with the operator
    commands pointed at its Kafka, group, replay log and audit log."""
    apns, fcm = fakes
    apns.clear()
    fcm.clear()
    env = {
        "KAFKA_BROKER": kafka_bootstrap,
        "KAFKA_GROUP_ID": f"test-ops-{uuid.uuid4().hex[:8]}",
        "KAFKA_RETRY_RETRIES": str(RETRIES),
        "KAFKA_RETRY_INITIAL": "10",
        # The dead letters here come from a provider answering 500 until a
        # message runs out of retries; a breaker would defer them instead.
        "PROVIDER_BREAKER_FAILURES": "0",
        "OPS_AUDIT_LOG_PATH": str(tmp_path / "audit.jsonl"),
        "DLQ_REPLAY_LOG_PATH": str(tmp_path / "replays.sqlite3"),
        **fake_provider_env(apns, fcm, tmp_path / "state"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    app = App(settings_from(env))
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    reconcile(admin, ALL_TOPIC_SPECS)
    admin.close()
    # Earlier tests' messages and dead letters are not this test's business.
    app.broker.flush_all()
    rig = OpsRig(app, apns, fcm, tmp_path)
    try:
        yield rig
    finally:
        rig.stop_worker()
        app.close()
