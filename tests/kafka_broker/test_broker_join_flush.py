"""join, flush and flush_all: what tests of Dramatiq apps lean on."""

from __future__ import annotations

import threading
import time

import dramatiq
import pytest
from broker_support import BrokerFactory, WorkerFactory, record_count
from dramatiq.common import dq_name, xq_name
from dramatiq.errors import QueueJoinTimeout, QueueNotFound
from kafka import KafkaAdminClient

from broker import KafkaBroker


def test_join_returns_only_once_every_message_was_processed(
    kafka_broker: KafkaBroker, queue_name: str, start_worker: WorkerFactory,
) -> None:
    # Given twenty messages that take a while each, and a two-thread worker
    done: list[int] = []

    @dramatiq.actor(broker=kafka_broker, queue_name=queue_name)
    def slowish(n: int) -> None:
        threading.Event().wait(0.05)
        done.append(n)

    with kafka_broker.batch():
        for n in range(20):
            slowish.send(n)
    start_worker(kafka_broker, threads=2)

    # When the queue is joined
    kafka_broker.join(queue_name, timeout=60_000)

    # Then, by the time join returned, all twenty had run
    assert sorted(done) == list(range(20))
    assert kafka_broker.backlog(queue_name) == 0


def test_join_times_out_while_a_message_never_finishes(
    kafka_broker: KafkaBroker, queue_name: str, worker: dramatiq.Worker,
) -> None:
    # Given a message that blocks until released
    release = threading.Event()
    started = threading.Event()

    @dramatiq.actor(broker=kafka_broker, queue_name=queue_name)
    def stuck() -> None:
        started.set()
        release.wait(timeout=60)

    stuck.send()
    try:
        assert started.wait(timeout=60)

        # When the queue is joined with a timeout, then it raises QueueJoinTimeout
        with pytest.raises(QueueJoinTimeout):
            kafka_broker.join(queue_name, timeout=1_500)
        assert kafka_broker.backlog(queue_name) == 1
    finally:
        release.set()

    # And once the message is let go, join returns
    kafka_broker.join(queue_name, timeout=30_000)


def test_joining_an_undeclared_queue_is_an_error(kafka_broker: KafkaBroker) -> None:
    with pytest.raises(QueueNotFound):
        kafka_broker.join("no-such-queue-declared", timeout=1_000)


def test_flush_discards_the_queue_its_delays_and_its_dead_letters(
    kafka_broker: KafkaBroker, queue_name: str, admin: KafkaAdminClient,
    start_worker: WorkerFactory,
) -> None:
    # Given waiting messages, a delayed one, and a dead letter, on one queue
    ran: list[str] = []

    @dramatiq.actor(broker=kafka_broker, queue_name=queue_name)
    def task(label: str) -> None:
        ran.append(label)

    with kafka_broker.batch():
        for n in range(5):
            task.send(f"flushed {n}")
    task.send_with_options(args=("flushed delayed",), delay=60_000)
    kafka_broker._produce_and_wait(xq_name(queue_name), b"an old dead letter", None, [])
    assert kafka_broker.backlog(queue_name) == 5
    assert kafka_broker.backlog(dq_name(queue_name)) == 1
    assert record_count(admin, xq_name(queue_name)) == 1

    # When the queue is flushed
    kafka_broker.flush(queue_name)

    # Then nothing is left on any of its three topics
    assert kafka_broker.backlog(queue_name) == 0
    assert kafka_broker.backlog(dq_name(queue_name)) == 0
    assert record_count(admin, xq_name(queue_name)) == 0

    # And a worker started afterwards sees only what is sent after the flush
    start_worker(kafka_broker)
    task.send("after the flush")
    kafka_broker.join(queue_name, timeout=30_000)
    assert ran == ["after the flush"]


def test_flush_all_discards_every_declared_queue(
    make_broker: BrokerFactory, queue_name: str, admin: KafkaAdminClient,
) -> None:
    # Given two queues with waiting messages
    broker = make_broker()
    queues = [f"{queue_name}-a", f"{queue_name}-b"]
    for queue in queues:
        broker.declare_queue(queue)
        for n in range(3):
            broker.enqueue(dramatiq.Message(queue_name=queue, actor_name="any", args=(n,),
                                            kwargs={}, options={}))
    assert [broker.backlog(queue) for queue in queues] == [3, 3]

    # When everything is flushed
    broker.flush_all()

    # Then both are empty
    assert [broker.backlog(queue) for queue in queues] == [0, 0]
    assert [record_count(admin, queue) for queue in queues] == [0, 0]


def test_lag_counts_unfinished_messages_and_the_age_of_the_oldest(
    kafka_broker: KafkaBroker, queue_name: str, start_worker: WorkerFactory,
) -> None:
    # Given three messages sent a while ago, and no worker yet
    @dramatiq.actor(broker=kafka_broker, queue_name=queue_name)
    def noop() -> None:
        pass

    before = time.time()
    for _ in range(3):
        noop.send()
    time.sleep(1.5)

    # Then the group's lag is read from Kafka alone: 3 messages, over 1.5 s old
    [lag] = kafka_broker.queue_admin.lag([queue_name])
    assert (lag.messages, lag.committed, lag.end_offset) == (3, None, 3)
    assert lag.oldest_timestamp_ms is not None
    assert before * 1000 - 1000 <= lag.oldest_timestamp_ms <= time.time() * 1000
    assert lag.seconds() >= 1.4

    # and once a worker has done them, there is none
    start_worker(kafka_broker)
    kafka_broker.join(queue_name, timeout=60_000)
    [lag] = kafka_broker.queue_admin.lag([queue_name])
    assert (lag.messages, lag.committed, lag.seconds()) == (0, 3, 0.0)
