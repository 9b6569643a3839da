"""Helpers for the broker's tests: bounded waiting and reading Kafka directly.

Imported as a top-level module (pytest puts this folder on ``sys.path``), so
the tests don't depend on what the folder is called.

Tests look at Kafka itself (records, end offsets, committed offsets) rather
than at the broker's own view, so a broker that lies about what it did
cannot pass them.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from pathlib import Path

import dramatiq
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import OffsetSpec
from kafka.consumer.fetcher import ConsumerRecord

from broker import KafkaBroker

ROOT = Path(__file__).resolve().parents[2]

#: The ``make_broker`` fixture: KafkaBroker options in, a broker on the test Kafka out.
BrokerFactory = Callable[..., KafkaBroker]

#: The ``start_worker`` fixture: a broker (and Worker options) in, a running Worker out.
WorkerFactory = Callable[..., dramatiq.Worker]

#: Dramatiq's worker wakes this often (ms) when idle; small keeps stops fast.
WORKER_TIMEOUT_MS = 100

#: Longest a test waits for a worker to stop before leaving it behind.
WORKER_STOP_TIMEOUT_MS = 15_000

#: A dead member's partitions go to the others after this long; 6 s is the
#: broker's minimum (group.min.session.timeout.ms), the default is 45 s.
FAST_SESSION_OPTIONS = {"session_timeout_ms": 6_000, "heartbeat_interval_ms": 1_000}


def kafka_safe(name: str) -> str:
    """``name`` with only the characters Kafka allows in topic and group names."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)[:120]


def wait_until(condition: Callable[[], object], *, timeout_s: float, what: str,
               interval_s: float = 0.05) -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


_stopped: set[int] = set()


def stop_worker(worker: dramatiq.Worker, timeout_ms: int = WORKER_STOP_TIMEOUT_MS) -> None:
    """Stop ``worker``; a second call does nothing (Dramatiq's stop is not idempotent)."""
    if id(worker) in _stopped:
        return
    _stopped.add(id(worker))
    worker.stop(timeout=timeout_ms)


def partitions_of(admin: KafkaAdminClient, topic: str) -> list[TopicPartition]:
    return sorted(TopicPartition(topic, p["partition_index"])
                  for t in admin.describe_topics([topic]) for p in t["partitions"])


def end_offsets(admin: KafkaAdminClient, topic: str) -> dict[int, int]:
    """Partition → offset the next record written there will get."""
    partitions = partitions_of(admin, topic)
    ends = admin.list_partition_offsets(dict.fromkeys(partitions, OffsetSpec.LATEST))
    return {tp.partition: ends[tp].offset for tp in partitions}


def start_offsets(admin: KafkaAdminClient, topic: str) -> dict[int, int]:
    partitions = partitions_of(admin, topic)
    starts = admin.list_partition_offsets(dict.fromkeys(partitions, OffsetSpec.EARLIEST))
    return {tp.partition: starts[tp].offset for tp in partitions}


def record_count(admin: KafkaAdminClient, topic: str) -> int:
    """How many records the topic holds (end minus start, over partitions)."""
    ends, starts = end_offsets(admin, topic), start_offsets(admin, topic)
    return sum(ends[p] - starts[p] for p in ends)


def committed(admin: KafkaAdminClient, group_id: str, topic: str) -> dict[int, int | None]:
    """Partition → offset the group committed (None: never committed)."""
    partitions = partitions_of(admin, topic)
    found = admin.list_group_offsets({group_id: partitions}).get(group_id, {})
    result: dict[int, int | None] = {}
    for tp in partitions:
        meta = found.get(tp)
        result[tp.partition] = meta.offset if meta is not None and meta.offset >= 0 else None
    return result


def read_records(bootstrap: str, topic: str, *, timeout_s: float = 20.0,
                 from_offset: int | None = None,
                 prepare: Callable[[KafkaConsumer], object] | None = None,
                 **consumer_options: object) -> list[ConsumerRecord]:
    """Every record now on ``topic`` (from ``from_offset`` on, if given), read
    without a group (commits nothing) by a consumer ``prepare`` may change first."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="broker-tests-reader")
    try:
        ends = end_offsets(admin, topic)
    finally:
        admin.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, client_id="broker-tests-reader",
                             **consumer_options)
    try:
        if prepare is not None:
            prepare(consumer)
        partitions = [TopicPartition(topic, p) for p in ends]
        consumer.assign(partitions)
        if from_offset is None:
            consumer.seek_to_beginning(*partitions)
        else:
            for tp in partitions:
                consumer.seek(tp, from_offset)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp.partition] for tp in partitions):
            if time.monotonic() >= deadline:
                raise AssertionError(f"could not read {topic} up to {ends} in {timeout_s}s")
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(r for r in batch if r.offset < ends[r.partition])
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close(autocommit=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
