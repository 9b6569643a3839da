"""Commits: only the contiguous prefix of finished offsets is ever committed,
so whatever was not finished is delivered again, never skipped."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import dramatiq
from broker_support import (
    BrokerFactory,
    WorkerFactory,
    committed,
    end_offsets,
    stop_worker,
    wait_until,
)
from kafka import KafkaAdminClient

from broker import KafkaBroker
from broker.consumer import KafkaMessageProxy


def send_numbered(broker: KafkaBroker, queue_name: str, count: int) -> None:
    broker.declare_queue(queue_name)
    with broker.batch():
        for n in range(count):
            broker.enqueue(dramatiq.Message(queue_name=queue_name, actor_name="work",
                                            args=(n,), kwargs={}, options={}))


def take(consumer: dramatiq.Consumer, count: int, timeout_s: float = 30) -> list[KafkaMessageProxy]:
    """The next ``count`` messages from ``consumer`` (which must be polled to commit)."""
    taken: list[KafkaMessageProxy] = []
    deadline = time.monotonic() + timeout_s
    while len(taken) < count:
        assert time.monotonic() < deadline, f"got {len(taken)} of {count} messages"
        message = next(consumer)
        if message is not None:
            assert isinstance(message, KafkaMessageProxy)
            taken.append(message)
    return taken


def pump_until(consumer: dramatiq.Consumer, condition: Callable[[], object],
               timeout_s: float) -> bool:
    """Keep the consumer polling (that is when it commits) until ``condition()``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert next(consumer) is None, "no new message was expected"
        if condition():
            return True
    return False


def test_out_of_order_acks_commit_only_the_finished_prefix(
    make_broker: BrokerFactory, queue_name: str, group_id: str, admin: KafkaAdminClient,
) -> None:
    # Given five messages on one partition, all handed out by a consumer
    broker = make_broker()
    send_numbered(broker, queue_name, 5)
    consumer = broker.consume(queue_name, prefetch=10, timeout=100)
    try:
        messages = take(consumer, 5)
        assert [m.kafka_record.offset for m in messages] == [0, 1, 2, 3, 4]

        # When all but the first are acked, and the consumer keeps polling for
        # several commit intervals
        for message in messages[1:]:
            consumer.ack(message)
        samples = []
        pump_until(consumer, lambda: samples.append(committed(admin, group_id, queue_name)[0]),
                   timeout_s=1.0)

        # Then nothing was ever committed: offset 0 is unfinished
        assert samples and set(samples) == {None}

        # When the first is acked too, then the commit jumps past all five
        consumer.ack(messages[0])
        assert pump_until(consumer, lambda: committed(admin, group_id, queue_name)[0] == 5,
                          timeout_s=10)
    finally:
        consumer.close()


def test_closing_commits_the_prefix_and_a_new_consumer_redelivers_the_rest(
    make_broker: BrokerFactory, queue_name: str, group_id: str, admin: KafkaAdminClient,
) -> None:
    # Given six messages handed out, of which 0, 1, 3 and 5 finished
    broker = make_broker()
    send_numbered(broker, queue_name, 6)
    first = broker.consume(queue_name, prefetch=10, timeout=100)
    messages = take(first, 6)
    for n in (0, 1, 3, 5):
        first.ack(messages[n])

    # When the consumer closes (as a worker's does when it stops)
    first.close()

    # Then the commit stops at the first unfinished offset
    assert committed(admin, group_id, queue_name) == {0: 2}

    # And acks arriving after the close are ignored, not committed
    first.ack(messages[2])
    first.ack(messages[4])
    assert committed(admin, group_id, queue_name) == {0: 2}

    # When a new consumer of the group starts, it gets everything from offset 2 on:
    # the unfinished 2 and 4, and (at least once) the finished 3 and 5 after them
    second = broker.consume(queue_name, prefetch=10, timeout=100)
    try:
        again = take(second, 4)
        assert [m.kafka_record.offset for m in again] == [2, 3, 4, 5]
        assert [m.args for m in again] == [(2,), (3,), (4,), (5,)]
    finally:
        second.close()


def test_a_slow_message_holds_the_commit_and_is_redelivered_after_a_stop(
    make_broker: BrokerFactory, queue_name: str, group_id: str, admin: KafkaAdminClient,
    start_worker: WorkerFactory,
) -> None:
    # Given ten messages on one partition, the first of which is slow
    release = threading.Event()
    first_run: list[int] = []

    broker = make_broker()

    @dramatiq.actor(broker=broker, queue_name=queue_name, actor_name="work")
    def work(n: int) -> None:
        if n == 0:
            release.wait(timeout=60)
        first_run.append(n)

    with broker.batch():
        for n in range(10):
            work.send(n)

    try:
        # When a worker has finished the nine fast ones behind the slow one
        worker = start_worker(broker, threads=3)
        wait_until(lambda: sorted(first_run) == list(range(1, 10)), timeout_s=60,
                   what="the nine fast messages")

        # Then, however long it keeps committing, the commit never passes offset 0
        samples = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            samples.append(committed(admin, group_id, queue_name)[0])
            time.sleep(0.1)
        assert set(samples) == {None}

        # When the worker is stopped while the slow message still runs
        stop_worker(worker, timeout_ms=1_000)

        # Then its final commit still stops before the unfinished message
        assert committed(admin, group_id, queue_name)[0] is None
    finally:
        release.set()  # the stopped worker's thread finishes; its ack is ignored

    # When a new worker of the same group starts
    second_run: list[int] = []
    broker2 = make_broker()

    @dramatiq.actor(broker=broker2, queue_name=queue_name, actor_name="work")
    def work_again(n: int) -> None:
        second_run.append(n)

    start_worker(broker2, threads=3)
    broker2.join(queue_name, timeout=60_000)

    # Then everything from the unfinished message on was delivered again
    assert sorted(second_run) == list(range(10))
    assert committed(admin, group_id, queue_name) == {0: 10}


def test_acks_from_a_replaced_consumer_do_not_count_for_its_replacement(
    make_broker: BrokerFactory, queue_name: str, group_id: str, admin: KafkaAdminClient,
) -> None:
    # Given three messages handed out by a consumer that is then replaced,
    # as Dramatiq replaces one after a connection error
    broker = make_broker()
    send_numbered(broker, queue_name, 3)
    old = broker.consume(queue_name, prefetch=10, timeout=100)
    stale = take(old, 3)
    old.close()
    new = broker.consume(queue_name, prefetch=10, timeout=100)
    try:
        redelivered = take(new, 3)
        assert [m.message_id for m in redelivered] == [m.message_id for m in stale]

        # When the old copies finish, and Dramatiq hands their acks to the new consumer
        for message in stale:
            new.ack(message)

        # Then they do not count: the redelivered copies are still running
        samples = []
        pump_until(new, lambda: samples.append(committed(admin, group_id, queue_name)[0]),
                   timeout_s=1.0)
        assert set(samples) == {None}

        # And once the redelivered copies finish, all three are committed
        for message in redelivered:
            new.ack(message)
        assert pump_until(new, lambda: committed(admin, group_id, queue_name)[0] == 3,
                          timeout_s=10)
    finally:
        new.close()


def test_a_revoked_partition_is_redelivered_to_its_new_owner_and_late_acks_ignored(
    make_broker: BrokerFactory, queue_name: str, group_id: str, admin: KafkaAdminClient,
) -> None:
    # Given twelve messages over two partitions, all handed out by one consumer
    broker = make_broker(topic_partitions=2)
    broker.declare_queue(queue_name)
    with broker.batch():
        for n in range(12):
            broker.enqueue(dramatiq.Message(queue_name=queue_name, actor_name="work",
                                            args=(n,), kwargs={}, options={
                                                "partition_key": f"key-{n}"}))
    ends = end_offsets(admin, queue_name)
    assert all(ends.values()), f"both partitions need messages: {ends}"
    first = broker.consume(queue_name, prefetch=100, timeout=100)
    held = take(first, 12)

    # When a second consumer joins the group, both polling as workers would
    second = broker.consume(queue_name, prefetch=100, timeout=100)
    got: list[KafkaMessageProxy] = []
    stop = threading.Event()

    surprises: list[KafkaMessageProxy] = []

    def poll(consumer: dramatiq.Consumer, into: list[KafkaMessageProxy]) -> None:
        while not stop.is_set():
            message = next(consumer)
            if isinstance(message, KafkaMessageProxy):
                into.append(message)

    threads = [threading.Thread(target=poll, args=(first, surprises), daemon=True),
               threading.Thread(target=poll, args=(second, got), daemon=True)]
    for thread in threads:
        thread.start()
    try:
        # Then the second gets one whole partition again: nothing of it was committed
        wait_until(lambda: got and len(got) == ends[got[0].kafka_record.partition],
                   timeout_s=60, what="the second consumer to get a partition")
        moved = got[0].kafka_record.partition
        kept = 1 - moved
        assert sorted(m.kafka_record.offset for m in got) == list(range(ends[moved]))
        assert {m.kafka_record.partition for m in got} == {moved}

        # When the first consumer finishes everything it held, both partitions' messages
        for message in held:
            first.ack(message)

        # Then only its remaining partition is committed; its acks for the
        # moved one are ignored, since that partition's new owner is not done
        wait_until(lambda: committed(admin, group_id, queue_name)[kept] == ends[kept],
                   timeout_s=30, what="the kept partition's commit")
        assert committed(admin, group_id, queue_name)[moved] is None

        # And the moved partition is committed once its new owner finishes it
        for message in got:
            second.ack(message)
        wait_until(lambda: committed(admin, group_id, queue_name)[moved] == ends[moved],
                   timeout_s=30, what="the moved partition's commit")
        # (and the first consumer was never handed anything twice)
        assert surprises == []
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        first.close()
        second.close()
