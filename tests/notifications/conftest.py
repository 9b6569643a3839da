"""Fixtures of the end-to-end notification tests: the app's broker pointed at
the test Kafka and the fakes, and a worker in this process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from notification_support import Rig, rig_on_fakes

from willowe_tasks.testing import FakeAPNs, FakeFCM


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
    with rig_on_fakes(kafka_bootstrap, fakes, tmp_path) as rig:
        yield rig


@pytest.fixture
def app(sender: Rig) -> Iterator[Rig]:
    """The sending side plus a worker running in this process."""
    worker = dramatiq.Worker(sender.broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        yield sender
    finally:
        worker.stop()


