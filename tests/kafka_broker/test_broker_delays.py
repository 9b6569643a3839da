"""Delays and retries: both go through ``<queue>.DQ`` and come back when due."""

from __future__ import annotations

import threading
import time
from collections import Counter

import dramatiq
from broker_support import record_count
from dramatiq.common import dq_name, xq_name
from kafka import KafkaAdminClient

from broker import KafkaBroker


def test_retries_back_off_through_the_delay_topic_and_then_succeed(
    kafka_broker: KafkaBroker, queue_name: str, worker: dramatiq.Worker,
    admin: KafkaAdminClient,
) -> None:
    # Given an actor that fails twice per key before it succeeds, with short backoffs
    attempts: Counter[str] = Counter()
    succeeded: list[str] = []

    @dramatiq.actor(broker=kafka_broker, queue_name=queue_name,
                    max_retries=5, min_backoff=100, max_backoff=300)
    def flaky(key: str) -> None:
        attempts[key] += 1
        if attempts[key] < 3:
            raise RuntimeError(f"attempt {attempts[key]} of {key} fails")
        succeeded.append(key)

    # When two messages are sent and the queue is joined
    flaky.send("a")
    flaky.send("b")
    kafka_broker.join(queue_name, timeout=60_000)

    # Then (join having waited through the retries) each ran three times and succeeded once
    assert attempts == {"a": 3, "b": 3}
    assert sorted(succeeded) == ["a", "b"]
    # And every retry was a record on .DQ, re-enqueued to the queue when due
    assert record_count(admin, dq_name(queue_name)) == 4
    assert record_count(admin, queue_name) == 2 + 4
    assert record_count(admin, xq_name(queue_name)) == 0


def test_a_delayed_message_runs_no_earlier_than_its_delay(
    kafka_broker: KafkaBroker, queue_name: str, worker: dramatiq.Worker,
    admin: KafkaAdminClient,
) -> None:
    # Given an actor that notes when and in what order it ran
    ran: list[tuple[str, float]] = []
    lock = threading.Lock()

    @dramatiq.actor(broker=kafka_broker, queue_name=queue_name)
    def note(label: str) -> None:
        with lock:
            ran.append((label, time.time()))

    # When a message is sent with a 1.5 s delay, then one without
    sent_at = time.time()
    note.send_with_options(args=("delayed",), delay=1_500)
    note.send("immediate")
    kafka_broker.join(queue_name, timeout=60_000)

    # Then the undelayed one ran first, and the delayed one not before its delay
    assert [label for label, _ in ran] == ["immediate", "delayed"]
    delayed_at = dict(ran)["delayed"]
    assert delayed_at - sent_at >= 1.5
    # And the delayed one went through .DQ
    assert record_count(admin, dq_name(queue_name)) == 1
