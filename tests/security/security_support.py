"""What the security tests share: the application's users on the session's
secured Kafka, and readers of what Kafka keeps (records, log segments)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dramatiq
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import OffsetSpec
from kafka.consumer.fetcher import ConsumerRecord
from support import revoke_application_acls

from broker.encryption import KeyRing
from broker.localkafka.secure import SecureLocalKafka
from willowe_tasks.app import App
from willowe_tasks.settings import Settings, settings_from

HIGH = "high-priority-notifications"
IOS_TOKEN = "ab" * 32
ANDROID_TOKEN = "android-registration-token-security"

#: Longest wait for a worker to push what was sent, in seconds.
DELIVERY_TIMEOUT_S = 60.0


def key_line(key_id: str) -> str:
    """A fresh payload key, as PAYLOAD_KEYS takes it."""
    return KeyRing((KeyRing.new_key(key_id),)).render().strip()


@dataclass
class SecureRig:
    """The session's secured Kafka with the app's topics and a group of the
    test's own (ACLs granted for it), and the settings every app shares."""

    kafka: SecureLocalKafka
    group_id: str
    #: Settings besides the Kafka user's: fakes, files, group, keys.
    env: dict[str, str]
    apps: list[App] = field(default_factory=list)
    workers: list[dramatiq.Worker] = field(default_factory=list)

    def settings(self, user: str, **env: str) -> Settings:
        return settings_from({**self.kafka.client_env(user), **self.env, **env})

    def app(self, user: str, **env: str) -> App:
        """An application logged in as ``user`` (closed at the end of the test)."""
        app = App(self.settings(user, **env))
        self.apps.append(app)
        return app

    def web_and_worker(self, **env: str) -> tuple[App, App]:
        """A web app and a worker app with the same settings besides the user."""
        return self.app("web", **env), self.app("worker", **env)

    def worker(self, app: App, threads: int = 2) -> dramatiq.Worker:
        """A Dramatiq worker on ``app``'s broker, started (stopped at the end)."""
        worker = dramatiq.Worker(app.broker, worker_threads=threads, worker_timeout=100)
        worker.start()
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        for app in self.apps:
            app.close()
        revoke_application_acls(self.kafka)

    def admin_options(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.kafka.bootstrap_servers,
                **self.kafka.client_options("admin")}


def read_records(options: dict[str, Any], topic: str, *,
                 timeout_s: float = 20.0) -> list[ConsumerRecord]:
    """Every record now on ``topic``, read without a group with ``options``."""
    admin = KafkaAdminClient(**options)
    try:
        partitions = [TopicPartition(topic, p["partition_index"])
                      for t in admin.describe_topics([topic]) for p in t["partitions"]]
        ends = admin.list_partition_offsets(dict.fromkeys(partitions, OffsetSpec.LATEST))
    finally:
        admin.close()
    consumer = KafkaConsumer(group_id=None, enable_auto_commit=False, **options)
    records: list[ConsumerRecord] = []
    try:
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp].offset for tp in partitions):
            assert time.monotonic() < deadline, f"could not read all of {topic} in {timeout_s}s"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close(autocommit=False)
    return sorted(records, key=lambda r: (r.partition, r.offset))


def segment_sizes(kafka: SecureLocalKafka, topic: str) -> dict[Path, int]:
    """Each log segment file of ``topic`` and its size now."""
    return {path: path.stat().st_size
            for path in kafka.data_dir.glob(f"{topic}-*/*.log")}


def bytes_written_since(kafka: SecureLocalKafka, topic: str,
                        before: dict[Path, int]) -> bytes:
    """What Kafka appended to ``topic``'s log segment files since ``before``
    (segments are append-only; a new segment counts whole)."""
    appended = b""
    for path in segment_sizes(kafka, topic):
        with path.open("rb") as segment:
            segment.seek(before.get(path, 0))
            appended += segment.read()
    return appended
