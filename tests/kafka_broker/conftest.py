"""Fixtures for the broker's tests: a KafkaBroker on the real Kafka with a
group and queues of its own, and Dramatiq workers that are always stopped.

Every test gets fresh names, so tests never see each other's messages or
committed offsets, and the topics they made are deleted afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import dramatiq
import dramatiq.broker
import pytest
from broker_support import (
    WORKER_TIMEOUT_MS,
    BrokerFactory,
    WorkerFactory,
    kafka_safe,
    stop_worker,
)
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from broker import KafkaBroker


@pytest.fixture
def queue_name(unique_name: str) -> str:
    """A queue (topic) name no other test uses."""
    return kafka_safe(unique_name)


@pytest.fixture
def group_id(unique_name: str) -> str:
    """A consumer group of the test's own: nothing committed yet."""
    return kafka_safe(f"group-{unique_name}")


@pytest.fixture
def make_broker(kafka_bootstrap: str, group_id: str) -> Iterator[BrokerFactory]:
    """Make KafkaBrokers on the test Kafka (in ``group_id`` unless told otherwise).

    The latest becomes Dramatiq's global broker while the test runs (results
    and pipelines look it up there); the previous one is put back afterwards,
    every broker is closed and every topic they declared is deleted.
    """
    made: list[KafkaBroker] = []
    previous = dramatiq.broker.global_broker

    def make(**options: Any) -> KafkaBroker:
        options.setdefault("bootstrap_servers", kafka_bootstrap)
        options.setdefault("group_id", group_id)
        options.setdefault("client_id", "broker-tests")
        options.setdefault("topic_partitions", 1)
        # Members learn of a rebalance from their next heartbeat (default every
        # 3 s); each worker start is a few rebalances, so this saves seconds.
        options.setdefault("consumer_options", {"heartbeat_interval_ms": 500})
        broker = KafkaBroker(**options)
        made.append(broker)
        dramatiq.set_broker(broker)
        return broker

    yield make

    dramatiq.broker.global_broker = previous
    topics: set[str] = set()
    for broker in made:
        for queue in broker.get_declared_queues():
            topics.update({queue, f"{queue}.DQ", f"{queue}.XQ"})
        broker.close()
    delete_topics(kafka_bootstrap, topics)


@pytest.fixture
def kafka_broker(make_broker: BrokerFactory) -> KafkaBroker:
    """A KafkaBroker with Dramatiq's default middleware and one partition per topic."""
    return make_broker()


@pytest.fixture
def start_worker(make_broker: BrokerFactory) -> Iterator[WorkerFactory]:
    """Start Dramatiq workers in this process; all are stopped at the end.

    (It depends on ``make_broker`` so that workers always stop before their
    brokers are closed, whatever order a test names the fixtures in.)
    """
    started: list[dramatiq.Worker] = []

    def start(broker: KafkaBroker, *, threads: int = 4, **options: Any) -> dramatiq.Worker:
        worker = dramatiq.Worker(broker, worker_threads=threads,
                                 worker_timeout=WORKER_TIMEOUT_MS, **options)
        worker.start()
        started.append(worker)
        return worker

    yield start

    for worker in reversed(started):
        stop_worker(worker)


@pytest.fixture
def worker(kafka_broker: KafkaBroker, start_worker: WorkerFactory) -> dramatiq.Worker:
    """A running worker (4 threads) on ``kafka_broker``. Actors may be declared
    before or after: the worker starts consuming each queue as it is declared."""
    return start_worker(kafka_broker)


def delete_topics(bootstrap: str, topics: set[str]) -> None:
    # Best effort: a leftover topic costs disk, not correctness (names are unique).
    if not topics:
        return
    with contextlib.suppress(KafkaError, OSError):
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="broker-tests-cleanup")
        try:
            doomed = sorted(topics & set(admin.list_topics()))
            if doomed:
                admin.delete_topics(doomed, timeout_ms=10_000, raise_errors=False)
        finally:
            admin.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_bootstrap: str) -> str:
    # The session's Kafka, always addressed as 127.0.0.1 (never a name that
    # might resolve elsewhere first); overrides the fixture of tests/conftest.py.
    return kafka_bootstrap.replace("localhost", "127.0.0.1")
