"""The per-topic consumer: prefetch limits, partitions worked through side
by side, and group membership (every queue's consumer gets its partitions,
whatever the others are doing)."""

from __future__ import annotations

import collections
import threading
import time

import dramatiq
from broker_support import BrokerFactory, end_offsets, wait_until
from kafka import KafkaAdminClient

from broker import KafkaBroker
from broker.consumer import KafkaMessageProxy
from broker.poller import PARTITION_FETCH_BYTES


def send_keyed(broker: KafkaBroker, queue_name: str, count: int) -> None:
    broker.declare_queue(queue_name)
    with broker.batch():
        for n in range(count):
            broker.enqueue(dramatiq.Message(queue_name=queue_name, actor_name="work",
                                            args=(n,), kwargs={},
                                            options={"partition_key": f"key-{n}"}))


def test_a_consumer_hands_out_no_more_than_its_prefetch(
    make_broker: BrokerFactory, queue_name: str,
) -> None:
    # Given ten waiting messages and a consumer allowed three at a time
    broker = make_broker()
    send_keyed(broker, queue_name, 10)
    consumer = broker.consume(queue_name, prefetch=3, timeout=100)
    try:
        held: list[dramatiq.MessageProxy] = []
        deadline = time.monotonic() + 30
        while len(held) < 3 and time.monotonic() < deadline:
            message = next(consumer)
            if message is not None:
                held.append(message)

        # When none of the three is finished, then no fourth comes, however
        # often the worker asks
        assert len(held) == 3
        for _ in range(10):
            assert next(consumer) is None

        # When one finishes, then exactly one more comes
        consumer.ack(held[0])
        more = None
        deadline = time.monotonic() + 30
        while more is None and time.monotonic() < deadline:
            more = next(consumer)
        assert more is not None and more.args == (3,)
        assert next(consumer) is None
    finally:
        consumer.close()


def test_a_consumer_works_through_a_backlog_on_all_its_partitions_side_by_side(
    make_broker: BrokerFactory, queue_name: str, admin: KafkaAdminClient,
) -> None:
    # Given a backlog of 6,000 messages over six partitions, each partition's
    # share (about 1,000 records, a few hundred KiB) well within what one
    # fetch of kafka-python's defaults takes of a partition (1 MiB), sent in
    # batches of at most 16 KiB (Kafka can't split a batch between fetches)
    broker = make_broker(topic_partitions=6, batch_producer_options={"batch_size": 16_384})
    send_keyed(broker, queue_name, 6_000)
    ends = end_offsets(admin, queue_name)
    assert min(ends.values()) > 500, f"every partition needs a backlog: {ends}"
    consumer = broker.consume(queue_name, prefetch=16, timeout=100)
    try:
        # When the consumer hands out the first third of it (each message
        # finished at once, as by a quick worker)
        handed_out: collections.Counter[int] = collections.Counter()
        deadline = time.monotonic() + 60
        while sum(handed_out.values()) < 2_000 and time.monotonic() < deadline:
            message = next(consumer)
            if isinstance(message, KafkaMessageProxy):
                handed_out[message.kafka_record.partition] += 1
                consumer.ack(message)
    finally:
        consumer.close()

    # Then every partition has been worked on. (Whole partitions one after
    # another would leave some untouched: a worker added now could be given
    # drained partitions only, and messages there wait behind all the rest.)
    assert sum(handed_out.values()) == 2_000
    assert set(handed_out) == set(ends), f"handed out by partition: {dict(handed_out)}"


def test_batches_larger_than_a_partition_fetch_are_consumed_all_the_same(
    make_broker: BrokerFactory, queue_name: str, admin: KafkaAdminClient,
) -> None:
    # Given three partitions of messages of 4 KiB, sent in batches of up to
    # 512 KiB: each batch is many times what one fetch takes of a partition
    broker = make_broker(topic_partitions=3,
                         batch_producer_options={"batch_size": 512 * 1024, "linger_ms": 200})
    assert 4 * PARTITION_FETCH_BYTES < 512 * 1024
    broker.declare_queue(queue_name)
    with broker.batch():
        for n in range(900):
            broker.enqueue(dramatiq.Message(queue_name=queue_name, actor_name="work",
                                            args=(n, "x" * 4096), kwargs={},
                                            options={"partition_key": f"key-{n}"}))
    ends = end_offsets(admin, queue_name)
    consumer = broker.consume(queue_name, prefetch=50, timeout=100)
    try:
        # When a consumer works through them
        got: set[int] = set()
        deadline = time.monotonic() + 60
        while len(got) < 900 and time.monotonic() < deadline:
            message = next(consumer)
            if message is not None:
                got.add(message.args[0])
                consumer.ack(message)
    finally:
        consumer.close()

    # Then every message arrives (no partition waits forever for a fetch
    # big enough, and the consumer never fails on a batch it cannot take)
    assert len(got) == 900, f"{len(got)} of 900 arrived; partition ends: {ends}"


def test_a_consumer_with_full_prefetch_still_lets_a_rebalance_finish(
    make_broker: BrokerFactory, queue_name: str, admin: KafkaAdminClient,
) -> None:
    # Given a consumer holding as many unfinished messages as its prefetch
    # allows, on a queue with two partitions and more messages waiting
    broker = make_broker(topic_partitions=2)
    send_keyed(broker, queue_name, 20)
    ends = end_offsets(admin, queue_name)
    assert all(ends.values()), f"both partitions need messages: {ends}"
    full = broker.consume(queue_name, prefetch=2, timeout=100)
    second = broker.consume(queue_name, prefetch=100, timeout=100)
    got: list[KafkaMessageProxy] = []
    held: list[KafkaMessageProxy] = []
    stop = threading.Event()

    def poll(consumer: dramatiq.Consumer, into: list[KafkaMessageProxy]) -> None:
        while not stop.is_set():
            message = next(consumer)
            if isinstance(message, KafkaMessageProxy):
                into.append(message)

    first_thread = threading.Thread(target=poll, args=(full, held), daemon=True)
    first_thread.start()
    second_thread = None
    try:
        wait_until(lambda: len(held) == 2, timeout_s=60, what="the first consumer to fill up")

        # When a second consumer joins the group (the full one never acks meanwhile)
        second_thread = threading.Thread(target=poll, args=(second, got), daemon=True)
        second_thread.start()

        # Then the rebalance completes: the newcomer gets a partition and its messages
        wait_until(lambda: got and len(got) >= ends[got[0].kafka_record.partition] - 2,
                   timeout_s=60, what="the second consumer to get a partition")
        assert len(held) == 2
    finally:
        stop.set()
        for thread in (first_thread, second_thread):
            if thread is not None:
                thread.join(timeout=10)
        full.close()
        second.close()


def test_consumers_of_different_queues_in_one_group_all_get_their_partitions(
    make_broker: BrokerFactory, queue_name: str,
) -> None:
    # Given four queues of one broker (one group), one message waiting on each
    broker = make_broker()
    queues = [f"{queue_name}-{n}" for n in range(4)]
    for queue in queues:
        broker.declare_queue(queue)
        broker.enqueue(dramatiq.Message(queue_name=queue, actor_name="any", args=(),
                                        kwargs={}, options={}))

    # When a consumer per queue starts at once, each polling as a worker's would
    # (short timeouts), and all keep polling until every one got its message
    consumers = {queue: broker.consume(queue, prefetch=2, timeout=100) for queue in queues}
    received: dict[str, str] = {}
    deadline = time.monotonic() + 45

    def consume(queue: str) -> None:
        consumer = consumers[queue]
        while len(received) < len(queues) and time.monotonic() < deadline:
            message = next(consumer)
            if message is not None:
                received[queue] = message.queue_name
                consumer.ack(message)

    threads = [threading.Thread(target=consume, args=(queue,)) for queue in queues]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        for consumer in consumers.values():
            consumer.close()

    # Then every consumer got its own queue's message: none was left without
    # partitions by a rebalance that never finished
    assert received == {queue: queue for queue in queues}
