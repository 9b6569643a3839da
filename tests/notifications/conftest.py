"""Fixtures of the end-to-end notification tests: the app's broker pointed at
the test Kafka and the fakes, and a worker in this process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from kafka import KafkaAdminClient
from notification_support import Rig

from broker.topics import reconcile
from willowe_tasks import dispatch
from willowe_tasks.app import App
from willowe_tasks.settings import settings_from
from willowe_tasks.testing import FakeAPNs, FakeFCM, fake_provider_env
from willowe_tasks.topics import ALL_TOPIC_SPECS


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeAPNs, FakeFCM]]:
    with FakeAPNs() as apns, FakeFCM() as fcm:
        yield apns, fcm


@pytest.fixture
def sender(
    kafka_bootstrap: str, fakes: tuple[FakeAPNs, FakeFCM], tmp_path: Path
) -> Iterator[Rig]:
    """An application of the test's own on the test Kafka, delivering to the fakes,
    with a consumer group of its own."""
    apns, fcm = fakes
    apns.clear()
    fcm.clear()
    app = App(settings_from({
        "KAFKA_BROKER": kafka_bootstrap,
        "KAFKA_GROUP_ID": f"test-app-{uuid.uuid4().hex[:8]}",
        **fake_provider_env(apns, fcm, tmp_path),
    }))
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    reconcile(admin, ALL_TOPIC_SPECS)
    admin.close()
    # Earlier runs' messages are not this test's business.
    app.broker.flush_all()
    dispatch.stats.clear()
    try:
        yield Rig(app, apns, fcm)
    finally:
        app.close()


@pytest.fixture
def app(sender: Rig) -> Iterator[Rig]:
    """The sending side plus a worker running in this process."""
    worker = dramatiq.Worker(sender.broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        yield sender
    finally:
        worker.stop()


