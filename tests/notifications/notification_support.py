"""What the end-to-end notification tests share: constants, the app under
test, and readers of what landed where (fixtures are in conftest.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dramatiq
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from broker import KafkaBroker
from broker.dead_letters import header_dict
from broker.topics import reconcile
from willowe_tasks import dispatch
from willowe_tasks.actors import Actors
from willowe_tasks.app import App
from willowe_tasks.services import Services
from willowe_tasks.settings import settings_from
from willowe_tasks.testing import FakeAPNs, FakeFCM, fake_provider_env
from willowe_tasks.topics import ALL_TOPIC_SPECS

IOS_TOKEN = "ab" * 32
IOS_TOKEN_2 = "cd" * 32
ANDROID_TOKEN = "android-registration-token-1"
HIGH = "high-priority-notifications"
MEDIUM = "medium-priority-notifications"
LOW = "low-priority-notifications"


@dataclass
class Rig:
    """An application of the test's own, on the test Kafka, delivering to the fakes."""

    app: App
    apns: FakeAPNs
    fcm: FakeFCM

    @property
    def broker(self) -> KafkaBroker:
        return self.app.broker

    @property
    def actors(self) -> Actors:
        return self.app.actors

    @property
    def services(self) -> Services:
        return self.app.services()

    @property
    def analytics_path(self) -> Path:
        return self.app.settings.analytics_path

    def join(self, *queues: str) -> None:
        for queue in queues or (HIGH, MEDIUM, LOW):
            self.broker.join(queue, timeout=60_000)


@contextmanager
def rig_on_fakes(kafka_bootstrap: str, fakes: tuple[FakeAPNs, FakeFCM], home: Path, *,
                 env: dict[str, str] | None = None, worker: bool = False) -> Iterator[Rig]:
    """An application of the test's own on the test Kafka, delivering to the
    (cleared) fakes, with a consumer group of its own and settings ``env``
    on top; with ``worker``, a worker runs in this process."""
    apns, fcm = fakes
    apns.clear()
    fcm.clear()
    app = App(settings_from({
        "KAFKA_BROKER": kafka_bootstrap,
        "KAFKA_GROUP_ID": f"test-app-{uuid.uuid4().hex[:8]}",
        **fake_provider_env(apns, fcm, home),
        **(env or {}),
    }))
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    reconcile(admin, ALL_TOPIC_SPECS)
    admin.close()
    # Earlier runs' messages are not this test's business.
    app.broker.flush_all()
    dispatch.stats.clear()
    running = dramatiq.Worker(app.broker, worker_threads=4, worker_timeout=100) if worker \
        else None
    if running is not None:
        running.start()
    try:
        yield Rig(app, apns, fcm)
    finally:
        if running is not None:
            running.stop()
        app.close()


def register_both(app: Rig, user_id: str = "user123") -> None:
    app.services.registry.register(user_id, "ios", IOS_TOKEN, app.apns.bundle_id)
    app.services.registry.register(user_id, "android", ANDROID_TOKEN, "com.willowe.android")


def end_offsets(bootstrap: list[str], topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    total = sum(consumer.end_offsets(partitions).values())
    consumer.close()
    return total


def read_dead_letters(app: Rig, topic: str, message_id: str) -> list[dict[str, str]]:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=app.broker.bootstrap_servers, auto_offset_reset="earliest",
        consumer_timeout_ms=5000, group_id=None,
    )
    found = []
    for record in consumer:
        try:
            body = json.loads(record.value)
        except ValueError:
            continue
        if body.get("message_id") == message_id:
            found.append(header_dict(record.headers))
    consumer.close()
    return found


