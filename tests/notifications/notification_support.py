"""What the end-to-end notification tests share: constants, the app under
test, and readers of what landed where (fixtures are in conftest.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from broker import KafkaBroker
from broker.dead_letters import header_dict
from willowe_tasks.actors import Actors
from willowe_tasks.app import App
from willowe_tasks.services import Services
from willowe_tasks.testing import FakeAPNs, FakeFCM

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


