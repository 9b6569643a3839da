"""Kafka going away under running workers: nothing is lost, and processing
picks up again when it is back. Runs against a private Kafka (own folder, free
ports) so the shared one that other tests use is never stopped."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from broker_support import (
    FAST_SESSION_OPTIONS,
    ROOT,
    BrokerFactory,
    WorkerFactory,
    free_port,
    stop_worker,
    wait_until,
)

from broker import KafkaBroker
from broker.localkafka import LocalKafka


@pytest.fixture(scope="module")
def private_kafka(tmp_path_factory: pytest.TempPathFactory,
                  kafka_bootstrap: str) -> Iterator[LocalKafka]:
    # kafka_bootstrap first: by then the shared jars have been fetched.
    kafka = LocalKafka(tmp_path_factory.mktemp("kafka"), port=free_port(),
                       controller_port=free_port(), jars=ROOT / ".cache" / "kafka" / "libs",
                       heap="256m")
    try:
        kafka.start()
    except subprocess.CalledProcessError:
        # The random KRaft cluster id starts with "-" one time in 64 and the
        # storage formatter reads it as an option; a second id is all it takes.
        kafka.start()
    yield kafka
    kafka.kill()


@pytest.fixture
def up(private_kafka: LocalKafka) -> LocalKafka:
    """The private Kafka, answering (a test before may have left it stopped)."""
    private_kafka.start()
    return private_kafka


def recording_actor(broker: KafkaBroker, queue_name: str, processed: list[int],
                    seconds: float) -> dramatiq.Actor:
    lock = threading.Lock()

    @dramatiq.actor(broker=broker, queue_name=queue_name, actor_name="record", max_retries=0)
    def record(n: int) -> None:
        threading.Event().wait(seconds)
        with lock:
            processed.append(n)

    return record


def on(kafka: LocalKafka, make_broker: BrokerFactory, **options: Any) -> KafkaBroker:
    return make_broker(
        bootstrap_servers=kafka.bootstrap_servers, topic_partitions=2,
        # Members that could not leave while Kafka was down hold their
        # partitions until their session expires: 6 s (the minimum), not 45 s.
        consumer_options={**FAST_SESSION_OPTIONS, "heartbeat_interval_ms": 500},
        **options,
    )


@pytest.mark.slow
def test_a_kafka_restart_under_a_running_worker_loses_nothing(
    up: LocalKafka, make_broker: BrokerFactory, queue_name: str, start_worker: WorkerFactory,
) -> None:
    # Given a worker on the private Kafka, busy with 2,000 messages (about
    # five seconds of work: more than the consumer reads ahead, so it needs
    # Kafka again before it is done)
    broker = on(up, make_broker)
    processed: list[int] = []
    record = recording_actor(broker, queue_name, processed, seconds=0.01)
    with broker.batch():
        for n in range(2_000):
            record.send(n)
    start_worker(broker, threads=4)
    wait_until(lambda: len(processed) >= 50, timeout_s=90, what="processing to start")

    # When Kafka is stopped under it
    up.stop()
    assert not up.answers(timeout_s=1.0)
    stopped_at = len(processed)
    # (a send meanwhile fails with Dramatiq's ConnectionFailed, within the
    # sender's timeouts: it does not hang)
    impatient = on(up, make_broker, send_timeout_ms=5_000, producer_options={
        "max_block_ms": 2_000, "request_timeout_ms": 1_000, "delivery_timeout_ms": 2_000})
    impatient.declare_queue(queue_name)
    with pytest.raises(dramatiq.errors.ConnectionFailed):
        impatient.enqueue(record.message(-1))

    # And started again, and more messages are sent once it is back
    up.start()
    with broker.batch():
        for n in range(2_000, 2_100):
            record.send(n)
    broker.join(queue_name, timeout=180_000)

    # Then every message, from before and after the restart, was processed
    # (and the send that failed while Kafka was down was not)
    assert set(processed) == set(range(2_100))
    assert stopped_at < 2_000, "the restart came too late to test anything"


@pytest.mark.slow
def test_a_worker_stopped_while_kafka_is_down_loses_nothing(
    up: LocalKafka, make_broker: BrokerFactory, queue_name: str, start_worker: WorkerFactory,
) -> None:
    # Given a worker on the private Kafka, busy with 1,000 slowish messages (five
    # seconds of work: more than it reads ahead)
    broker = on(up, make_broker)
    first_run: list[int] = []
    record = recording_actor(broker, queue_name, first_run, seconds=0.02)
    with broker.batch():
        for n in range(1_000):
            record.send(n)
    worker = start_worker(broker, threads=4)
    wait_until(lambda: len(first_run) >= 30, timeout_s=90, what="processing to start")

    # When Kafka goes away, and the worker is stopped meanwhile (its final
    # commits cannot reach Kafka)
    up.stop()
    stop_worker(worker)
    assert len(first_run) < 1_000, "the stop came too late to test anything"

    # And Kafka comes back and a new worker of the same group starts
    up.start()
    second_run: list[int] = []
    broker2 = on(up, make_broker)
    recording_actor(broker2, queue_name, second_run, seconds=0.0)
    start_worker(broker2, threads=4)
    broker2.join(queue_name, timeout=180_000)

    # Then everything the first worker had not finished was processed by the second
    assert set(first_run) | set(second_run) == set(range(1_000))
    assert set(range(1_000)) - set(first_run) <= set(second_run)
