"""Fixtures of the end-to-end notification tests: the app's broker pointed at
the test Kafka and the fakes, and a worker in this process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from kafka import KafkaAdminClient
from notification_support import App

import willowe_tasks
from broker.topics import reconcile
from willowe_tasks import dispatch
from willowe_tasks.services import build_services, reset_services
from willowe_tasks.settings import load_settings
from willowe_tasks.testing import FakeAPNs, FakeFCM, fake_provider_env
from willowe_tasks.topics import ALL_TOPIC_SPECS


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeAPNs, FakeFCM]]:
    with FakeAPNs() as apns, FakeFCM() as fcm:
        yield apns, fcm


@pytest.fixture
def sender(
    kafka_bootstrap: str, fakes: tuple[FakeAPNs, FakeFCM], tmp_path: Path
) -> Iterator[App]:
    """Settings, services and the app's broker pointed at the test Kafka and fakes."""
    apns, fcm = fakes
    apns.clear()
    fcm.clear()
    # The same settings a worker process gets from fake_provider_env, read in-process.
    provider_settings = {k.lower(): v for k, v in fake_provider_env(apns, fcm, tmp_path).items()}
    settings = load_settings(kafka_broker=kafka_bootstrap, **provider_settings)
    broker = willowe_tasks.broker
    broker.close()
    broker.bootstrap_servers = [kafka_bootstrap]
    # A group of its own, starting where the topics end now: earlier runs'
    # messages are not this test's business.
    broker.group_id = f"test-app-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    reconcile(admin, ALL_TOPIC_SPECS)
    admin.close()
    broker.flush_all()
    services = build_services(settings)
    reset_services(services)
    dispatch.stats.clear()
    try:
        yield App(broker, apns, fcm, services, settings.analytics_path)
    finally:
        reset_services()
        broker.close()


@pytest.fixture
def app(sender: App) -> Iterator[App]:
    """The sending side plus a worker running in this process."""
    worker = dramatiq.Worker(sender.broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        yield sender
    finally:
        worker.stop()


