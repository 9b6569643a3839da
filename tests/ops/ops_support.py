"""What the operator tools' tests share: the rig, ways to make dead letters of
each cause, and readers of what landed where."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from support import wait_until

from broker import KafkaBroker
from broker.dead_letters import dead_letter_headers
from willowe_tasks.__main__ import main
from willowe_tasks.app import App
from willowe_tasks.registration import REGISTER_ACTOR
from willowe_tasks.testing import FakeAPNs, FakeFCM

HIGH = "high-priority-notifications"
HIGH_XQ = HIGH + ".XQ"
MEDIUM = "medium-priority-notifications"

#: How long a test waits for the worker to settle a batch of messages.
JOIN_TIMEOUT_MS = 120_000

#: How long a new worker's consumers may take to join the group.
GROUP_SETTLE_TIMEOUT_S = 60.0


def ios_token(seed: str) -> str:
    """An APNs-shaped token (64 hex digits), different for each seed."""
    return hashlib.sha256(seed.encode()).hexdigest()


@dataclass
class OpsRig:
    """An application of the test's own on the test Kafka, delivering to the fakes."""

    app: App
    apns: FakeAPNs
    fcm: FakeFCM
    home: Path
    _worker: dramatiq.Worker | None = field(default=None, repr=False)

    @property
    def broker(self) -> KafkaBroker:
        return self.app.broker

    @property
    def audit_path(self) -> Path:
        return self.home / "audit.jsonl"

    def worker(self, threads: int = 8) -> None:
        """Start a worker in this process (stopped at the test's end) and wait
        until its consumers own their partitions: a record handled while the
        group still rebalances may be handled twice (delivery is at least
        once), and a test counting dead letters wants each once."""
        assert self._worker is None
        self._worker = dramatiq.Worker(self.broker, worker_threads=threads, worker_timeout=100)
        self._worker.start()
        topics = self.broker.queues | self.broker.delay_queues
        assert wait_until(lambda: self._group_settled(topics), GROUP_SETTLE_TIMEOUT_S), \
            "the worker did not settle in the group with all its topics"

    def _group_settled(self, topics: set[str]) -> bool:
        """The worker process is the group's one member, and owns partitions
        of every topic it consumes."""
        group = self.broker.group_id
        described = self.broker.admin.describe_groups([group]).get(group) or {}
        members = described.get("members", [])
        if described.get("group_state") != "Stable" or len(members) != 1:
            return False
        assigned = (members[0].get("member_assignment") or {}).get("assigned_partitions") or []
        return {a["topic"] for a in assigned if a["partitions"]} == topics

    def stop_worker(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def join(self, *queues: str) -> None:
        for queue in queues or (HIGH,):
            self.broker.join(queue, timeout=JOIN_TIMEOUT_MS)

    def register_ios(self, user_id: str, token: str) -> None:
        self.app.services().registry.register(user_id, "ios", token, self.apns.bundle_id)

    def register_android(self, user_id: str, token: str) -> None:
        self.app.services().registry.register(user_id, "android", token, "com.willowe.android")

    def send_matches(self, users: list[str]) -> list[str]:
        """A match to each user; their message (notification) ids."""
        ids = []
        with self.broker.batch():
            for user in users:
                ids.append(self.app.actors.send_match.send(
                    user, {"name": "Анна", "age": 25}).message_id)
        return ids

    def raw(self, topic: str, value: bytes, headers: list[tuple[str, bytes]] | None = None
            ) -> None:
        producer = KafkaProducer(bootstrap_servers=self.broker.bootstrap_servers)
        producer.send(topic, value, headers=headers or []).get(timeout=30)
        producer.close()

    def retry_exhausted(self, count: int, *, prefix: str = "user") -> tuple[list[str], list[str]]:
        """``count`` matches to as many iPhones, each refused (APNs 500) until it
        ran out of retries: all on the .XQ. Returns (message ids, tokens)."""
        users = [f"{prefix}-{n}" for n in range(count)]
        tokens = [ios_token(user) for user in users]
        for user, token in zip(users, tokens, strict=True):
            self.register_ios(user, token)
        self.apns.fail(500, "InternalServerError", times=1_000_000)
        ids = self.send_matches(users)
        self.join()
        assert dead_letter_count(self) >= count
        return ids, tokens


def dead_letters_carrying_a_token(rig: OpsRig, token: str) -> None:
    """Two dead letters a token could leak from: a registration the worker
    refuses (an unknown platform) with the token among its arguments, and a
    push refused with an error that quotes the token. Starts the worker."""
    registration = rig.app.broker.get_actor(REGISTER_ACTOR).message(
        "user-r", "ios", token, "com.willowe.app")
    rig.raw(HIGH, registration.copy(args=("user-r", "pager", token, "com.willowe.app")).encode())
    rig.register_ios("quoted", token)
    rig.apns.fail(400, f"BadPriority for {token}", token=token)
    rig.worker()
    rig.send_matches(["quoted"])
    rig.join()
    assert dead_letter_count(rig) == 2


def dead_letter_count(rig: OpsRig, topic: str = HIGH_XQ) -> int:
    consumer = KafkaConsumer(bootstrap_servers=rig.broker.bootstrap_servers)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    starts, ends = consumer.beginning_offsets(partitions), consumer.end_offsets(partitions)
    consumer.close()
    return sum(ends[tp] - starts[tp] for tp in partitions)


def end_offsets(rig: OpsRig, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=rig.broker.bootstrap_servers)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    ends = {tp.partition: o for tp, o in consumer.end_offsets(partitions).items()}
    consumer.close()
    return ends


def forge_dead_letter(rig: OpsRig, message: dramatiq.Message, *, topic: str = HIGH,
                      reason: str = "failed", exception: str = "Retry",
                      retries: int = 2) -> None:
    """A dead letter as the broker writes one, for a message the worker never ran
    (one already past its deadline, say)."""
    headers = dead_letter_headers(
        [("dramatiq-message-id", message.message_id.encode()),
         ("dramatiq-actor", message.actor_name.encode())],
        reason=reason, error_type=exception, error_message="forged for a test",
        source_topic=topic, source_partition=0, source_offset=0, retries=retries)
    rig.raw(topic + ".XQ", message.encode(), headers)


def pushes_by_notification(fake: FakeAPNs | FakeFCM) -> dict[str, int]:
    counts: dict[str, int] = {}
    for request in fake.received:
        nid = request.data.get("notification_id")
        if nid:
            counts[nid] = counts.get(nid, 0) + 1
    return counts


def wait_for_pushes(fake: FakeAPNs | FakeFCM, count: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while len(fake.received) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``python -m willowe_tasks ARGS`` in this process: (exit status, out, err)."""
    capsys.readouterr()
    try:
        status = main(list(args))
    except SystemExit as e:  # argparse refusing the arguments
        status = int(e.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def audit_lines(rig: OpsRig) -> list[dict[str, Any]]:
    if not rig.audit_path.exists():
        return []
    return [json.loads(line) for line in rig.audit_path.read_text().splitlines()]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
