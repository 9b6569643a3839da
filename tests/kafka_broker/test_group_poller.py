"""One group member per process: a worker's consumers share one poller, a
full queue never holds the others back, the most urgent priority band's
records go ahead of a less urgent band's fetch, and a consumer closed beside
others hands its unfinished records to the next one."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import dramatiq
from broker_support import BrokerFactory, WorkerFactory, committed, stop_worker, wait_until
from kafka import KafkaAdminClient, TopicPartition
from test_broker_commits import send_numbered, take

from broker import KafkaBroker
from broker.consumer import KafkaMessageProxy
from broker.poller import PARTITION_READ_AHEAD, READ_AHEAD_RECORDS


def test_a_worker_consuming_several_queues_is_one_group_member(
    make_broker: BrokerFactory, queue_name: str, group_id: str, admin: KafkaAdminClient,
    start_worker: WorkerFactory,
) -> None:
    # Given three queues of one broker, each with an actor
    broker = make_broker()
    queues = [f"{queue_name}-{n}" for n in range(3)]
    ran: set[str] = set()
    actors = []
    for queue in queues:
        def work(queue: str = queue) -> None:
            ran.add(queue)
        actors.append(dramatiq.actor(broker=broker, queue_name=queue,
                                     actor_name=f"work_{queue[-1]}")(work))

    # When each queue gets a message and a worker starts
    for actor in actors:
        actor.send()
    earlier_threads = set(threading.enumerate())
    worker = start_worker(broker)
    wait_until(lambda: ran == set(queues), timeout_s=60, what="a message of every queue")

    # Then the worker is a single member of the group, reading all six topics
    # (the queues and their delay queues)
    group = admin.describe_groups([group_id])[group_id]
    assert len(group["members"]) == 1, group["members"]
    topics = set(group["members"][0]["member_metadata"]["topics"])
    assert topics == set(queues) | {f"{queue}.DQ" for queue in queues}

    # And once the worker stops, that member has left the group (the last
    # consumer to close closed it), and no poller thread is left behind
    stop_worker(worker)
    assert admin.describe_groups([group_id])[group_id]["members"] == []
    assert not [t for t in set(threading.enumerate()) - earlier_threads
                if t.name == "kafka-group-poller"]


def test_a_piled_up_partition_is_paused_and_another_queues_records_come_through(
    make_broker: BrokerFactory, queue_name: str,
) -> None:
    # Given a backlog several times a queue's read-ahead on a low queue (one
    # partition)
    broker = make_broker()
    low, high = f"{queue_name}-low", f"{queue_name}-high"
    send_numbered(broker, low, 4 * READ_AHEAD_RECORDS)
    broker.declare_queue(high)
    # and consumers of both on one poller, the low one never asked for a message
    low_consumer = broker.consume(low, prefetch=1, timeout=100)
    high_consumer = broker.consume(high, prefetch=1, timeout=100)
    try:
        assert high_consumer._poller is low_consumer._poller
        low_feed = low_consumer._feed
        wait_until(lambda: low_feed.waiting() >= PARTITION_READ_AHEAD, timeout_s=60,
                   what="the low queue's read-ahead to fill")

        # When a message arrives on the high queue
        send_numbered(broker, high, 1)

        # Then the high consumer gets it, and the low queue's buffer stays
        # bounded (its partitions were paused, not read to the end)
        message = None
        deadline = time.monotonic() + 30
        while message is None and time.monotonic() < deadline:
            message = next(high_consumer)
        assert message is not None and message.args == (0,)
        assert low_feed.waiting() < PARTITION_READ_AHEAD + READ_AHEAD_RECORDS
    finally:
        low_consumer.close()
        high_consumer.close()


def test_a_consumer_closed_beside_others_hands_its_unfinished_records_to_the_next(
    make_broker: BrokerFactory, queue_name: str, group_id: str, admin: KafkaAdminClient,
) -> None:
    # Given consumers of two queues on one poller, one holding three messages
    # of which only the first finished
    broker = make_broker()
    first_queue, other_queue = f"{queue_name}-a", f"{queue_name}-b"
    send_numbered(broker, first_queue, 3)
    broker.declare_queue(other_queue)
    old = broker.consume(first_queue, prefetch=10, timeout=100)
    other = broker.consume(other_queue, prefetch=10, timeout=100)
    try:
        # (The second queue's subscription makes the group rebalance; a
        # commit made during it is refused, and this one must go through.)
        wait_until(lambda: TopicPartition(other_queue, 0) in other._feed.trackers,
                   timeout_s=30, what="the group to settle with both queues")
        held = take(old, 3)
        old.ack(held[0])

        # When that consumer closes (as Dramatiq closes one after a connection
        # error) while the other stays
        old.close()

        # Then what it finished is committed, and late acks count for nothing
        assert committed(admin, group_id, first_queue) == {0: 1}
        old.ack(held[1])

        # And the next consumer of the queue, on the same poller, gets the
        # unfinished records again
        new = broker.consume(first_queue, prefetch=10, timeout=100)
        try:
            assert new._poller is other._poller
            again = take(new, 2)
            assert [m.kafka_record.offset for m in again] == [1, 2]
            assert all(isinstance(m, KafkaMessageProxy) for m in again)
            for message in again:
                new.ack(message)
            wait_until(lambda: committed(admin, group_id, first_queue) == {0: 3},
                       timeout_s=30, what="the redelivered records' commit")
        finally:
            new.close()
    finally:
        other.close()


def test_a_backlog_written_in_big_batches_is_worked_through_side_by_side(
    make_broker: BrokerFactory, queue_name: str,
) -> None:
    # Given a backlog on three partitions, written by batch() (whose batches
    # hold hundreds of records each: Kafka returns a partition's first batch
    # whole, far over the fetch's 64 KiB a partition)
    broker = make_broker(topic_partitions=3)
    send_numbered(broker, queue_name, 8 * READ_AHEAD_RECORDS)
    consumer = broker.consume(queue_name, prefetch=8, timeout=100)
    by_partition: Counter[int] = Counter()
    try:
        # When a consumer takes as many messages as one poll hands out, at a
        # worker's pace
        deadline = time.monotonic() + 60
        while sum(by_partition.values()) < READ_AHEAD_RECORDS and time.monotonic() < deadline:
            message = next(consumer)
            if message is not None:
                by_partition[message.kafka_record.partition] += 1
                time.sleep(0.002)
                consumer.ack(message)
    finally:
        consumer.close()

    # Then every partition gave its share of them, not one partition's
    # batch first and the others' after it
    assert sum(by_partition.values()) == READ_AHEAD_RECORDS
    assert min(by_partition[p] for p in range(3)) >= READ_AHEAD_RECORDS // 6, by_partition


def test_a_queue_paused_many_times_is_still_read_to_its_end(
    make_broker: BrokerFactory, queue_name: str,
) -> None:
    # Given a backlog many read-aheads long on three partitions, and an idle
    # queue beside it on the same poller (as the delay queue always is: its
    # fetches keep coming back, empty, while the busy queue is paused)
    broker = make_broker(topic_partitions=3)
    send_numbered(broker, queue_name, 8 * READ_AHEAD_RECORDS)
    idle_queue = f"{queue_name}-idle"
    broker.declare_queue(idle_queue)
    consumer = broker.consume(queue_name, prefetch=8, timeout=100)
    idle = broker.consume(idle_queue, prefetch=8, timeout=100)
    try:
        # When a consumer works through it (its feed fills, is paused and
        # resumed again and again, often while a fetch's records are only
        # partly handed out)
        got: set[int] = set()
        deadline = time.monotonic() + 90
        while len(got) < 8 * READ_AHEAD_RECORDS and time.monotonic() < deadline:
            message = next(consumer)
            if message is not None:
                got.add(message.args[0])
                time.sleep(0.002)  # (a worker's pace: the feed stays full)
                consumer.ack(message)
    finally:
        consumer.close()
        idle.close()

    # Then every message arrives: no paused partition is left behind
    assert len(got) == 8 * READ_AHEAD_RECORDS


#: Records one poll hands out in the precedence tests: a fetch of the bulk
#: queue (64 KiB, some 300 of these records) takes dozens of polls to hand out.
POLL_RECORDS = 5

#: How long each bulk record takes to open in the precedence test, seconds.
OPEN_BULK_S = 0.002


def bands_with_a_backlog(make_broker: BrokerFactory, queue_name: str, bands: Sequence[str], *,
                         backlog: int, partitions: int, poll_records: int
                         ) -> tuple[KafkaBroker, list[str]]:
    """A broker with a priority band for each of ``bands`` (most urgent
    first), the last holding ``backlog`` messages, whose first poller fetches
    them all (as a worker's does) and hands out ``poll_records`` per poll:
    the broker and the bands' queues."""
    queues = [f"{queue_name}-{band}" for band in bands]
    broker = make_broker(priority_queues=[(100 * i, queue) for i, queue in enumerate(queues)],
                         topic_partitions=partitions,
                         consumer_options={"heartbeat_interval_ms": 500,
                                           "max_poll_records": poll_records})
    send_numbered(broker, queues[-1], backlog)
    for queue in queues[:-1]:
        broker.declare_queue(queue)
    broker._pollers.expect(queues)  # (one group join for all)
    return broker, queues


def bulk_filed_ahead_of_a_record(broker: KafkaBroker, bulk: str, sent_to: str) -> int:
    """Send one record to ``sent_to`` while the first fetch of ``bulk``'s
    backlog is being filed; return how many bulk records were filed before it."""
    bulk_consumer = broker.consume(bulk, prefetch=1, timeout=100)
    consumer = broker.consume(sent_to, prefetch=1, timeout=100)
    try:
        bulk_feed, feed = bulk_consumer._feed, consumer._feed
        open_bulk, open_record = bulk_feed.decode, feed.decode
        assert open_bulk is not None and open_record is not None
        sent = threading.Event()
        bulk_filed_before: list[int] = []

        def sending_once(record: Any) -> bytes:
            # When the first bulk fetch is being filed, the record is sent
            # (and stored by Kafka before the poller goes on)
            if not sent.is_set():
                sent.set()
                send_numbered(broker, sent_to, 1)
            # (A bulk record takes a while to open, as a decryption might: the
            # poller gives kafka-python's IO thread room to bring the fetch.)
            time.sleep(OPEN_BULK_S)
            return open_bulk(record)

        def noting_bulk_filed(record: Any) -> bytes:
            bulk_filed_before.append(bulk_feed.waiting())
            return open_record(record)

        bulk_feed.decode, feed.decode = sending_once, noting_bulk_filed
        message = None
        deadline = time.monotonic() + 30
        while message is None and time.monotonic() < deadline:
            message = next(consumer)
        assert message is not None and message.args == (0,)
        assert sent.is_set() and len(bulk_filed_before) == 1
        return bulk_filed_before[0]
    finally:
        bulk_consumer.close()
        consumer.close()


def test_an_urgent_record_is_filed_ahead_of_the_rest_of_a_bulk_fetch(
    make_broker: BrokerFactory, queue_name: str,
) -> None:
    # Given two priority bands on one poller that hands out a few records per
    # poll, and a backlog on the bulk band
    broker, (urgent, bulk) = bands_with_a_backlog(
        make_broker, queue_name, ["urgent", "bulk"], backlog=4 * READ_AHEAD_RECORDS,
        partitions=1, poll_records=POLL_RECORDS)
    # When an urgent record comes while the first bulk fetch is being filed,
    # then it comes out ahead of most of the bulk records that fetch brought
    # (without precedence: all of them, and more)
    filed_before = bulk_filed_ahead_of_a_record(broker, bulk, urgent)
    assert filed_before < 20 * POLL_RECORDS, filed_before


def test_a_middle_band_record_is_filed_ahead_of_the_rest_of_a_bulk_fetch(
    make_broker: BrokerFactory, queue_name: str,
) -> None:
    # Given three priority bands on one poller (the first idle) that hands
    # out a few records per poll, and a backlog on the last band
    broker, (_, middle, bulk) = bands_with_a_backlog(
        make_broker, queue_name, ["urgent", "middle", "bulk"],
        backlog=4 * READ_AHEAD_RECORDS, partitions=1, poll_records=POLL_RECORDS)
    # When a middle band's record comes while the first bulk fetch is being
    # filed, then it too comes out ahead of most of that fetch (precedence
    # for the first band alone: all of it, and more)
    filed_before = bulk_filed_ahead_of_a_record(broker, bulk, middle)
    assert filed_before < 20 * POLL_RECORDS, filed_before


def test_urgent_polls_beside_a_draining_backlog_lose_and_repeat_nothing(
    make_broker: BrokerFactory, queue_name: str,
) -> None:
    # Given a bulk band's backlog on three partitions and an urgent band on
    # one poller (every poll that hands out bulk records is followed by one
    # with the bulk partitions paused, their fetched records parked)
    backlog, urgent_count = 4 * READ_AHEAD_RECORDS, 20
    broker, (urgent, bulk) = bands_with_a_backlog(
        make_broker, queue_name, ["urgent", "bulk"], backlog=backlog, partitions=3,
        poll_records=10 * POLL_RECORDS)
    consumers = {queue: broker.consume(queue, prefetch=8, timeout=1) for queue in (bulk, urgent)}
    got: dict[str, list[int]] = {bulk: [], urgent: []}
    try:
        # When the backlog drains while urgent messages keep arriving (one
        # every 100 bulk messages)
        sent_urgent = 0
        deadline = time.monotonic() + 90
        while (len(got[bulk]) < backlog or len(got[urgent]) < urgent_count) \
                and time.monotonic() < deadline:
            if sent_urgent < urgent_count and len(got[bulk]) >= 100 * sent_urgent:
                broker.enqueue(dramatiq.Message(queue_name=urgent, actor_name="work",
                                                args=(sent_urgent,), kwargs={}, options={}))
                sent_urgent += 1
            for queue, consumer in consumers.items():
                message = next(consumer)
                if message is not None:
                    got[queue].append(message.args[0])
                    consumer.ack(message)
    finally:
        for consumer in consumers.values():
            consumer.close()

    # Then every message of both arrived exactly once
    assert sorted(got[bulk]) == list(range(backlog))
    assert sorted(got[urgent]) == list(range(urgent_count))
