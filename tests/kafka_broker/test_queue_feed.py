"""QueueFeed: what a queue's consumer may take, and what counts against prefetch.

Pure logic (no Kafka): the poller opens what it files without ever raising
for a bad record, and the feed counts the records it handed out until each
is finished, whatever became of its partition meanwhile, and wakes a
consumer waiting for room only when an ack makes some.
"""

from __future__ import annotations

import threading

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from broker.payload_codec import UNDECRYPTABLE, PayloadDecodeError
from broker.poller import QueueFeed, _opened

TOPIC = "orders"

#: Longest a test waits for a thread it started, in seconds.
JOIN_TIMEOUT_S = 10.0


def record(partition: int, offset: int) -> ConsumerRecord:
    return ConsumerRecord(TOPIC, partition, None, offset, 0, 0, None, b"{}", [], None,
                          -1, 2, -1)


def feed_with(*records: ConsumerRecord) -> QueueFeed:
    feed = QueueFeed(TOPIC)
    feed.track({TopicPartition(TOPIC, r.partition) for r in records})
    with feed.changed:
        for r in records:
            feed.file(TopicPartition(TOPIC, r.partition), [(r, None)])
    return feed


def start_waiting(feed: QueueFeed, prefetch: int) -> tuple[threading.Thread, threading.Event]:
    """A consumer thread waiting on ``feed`` far longer than any test waits,
    and the event it sets once it stops waiting."""
    woken = threading.Event()

    def consumer() -> None:
        feed.wait(JOIN_TIMEOUT_S * 3, prefetch=prefetch)
        woken.set()

    thread = threading.Thread(target=consumer)
    thread.start()
    return thread, woken


def test_records_count_in_flight_from_take_until_finished() -> None:
    # Given a feed holding three records of two partitions
    feed = feed_with(record(0, 5), record(1, 7), record(0, 6))

    # When two are taken, then both count in flight
    first = feed.take()
    second = feed.take()
    assert first is not None and second is not None
    assert feed.in_flight == 2

    # When one is finished, only the other counts, and its commit moves
    assert feed.finish(first[1], first[0][0].offset) is True
    assert feed.in_flight == 1
    assert first[1].committable() == 6


def test_a_record_of_a_revoked_partition_counts_until_its_late_ack() -> None:
    # Given a taken record whose partition was then revoked
    feed = feed_with(record(0, 5), record(0, 6))
    taken = feed.take()
    assert taken is not None
    final = feed.retire([TopicPartition(TOPIC, 0)])

    # Then nothing of it is committed, its buffered record is dropped,
    # and the worker still running it counts against prefetch
    assert final == {}
    assert feed.take() is None
    assert feed.in_flight == 1

    # When its ack comes late, it is refused but stops counting
    assert feed.finish(taken[1], taken[0][0].offset) is False
    assert feed.in_flight == 0


def test_a_consumer_waiting_for_room_is_woken_by_an_ack() -> None:
    # Given a consumer whose one slot of prefetch is taken, waiting for room
    feed = feed_with(record(0, 1), record(0, 2))
    taken = feed.take()
    assert taken is not None
    thread, woken = start_waiting(feed, prefetch=1)
    # (It asks for room under the feed's lock before it waits.)
    for _ in range(1000):
        with feed.changed:
            if feed.room_wanted:
                break
        woken.wait(0.01)
    assert feed.room_wanted and not woken.is_set()

    # When the worker finishes the record, the consumer wakes (long before its timeout)
    feed.finish(taken[1], taken[0][0].offset)
    thread.join(JOIN_TIMEOUT_S)
    assert woken.is_set()
    assert not feed.room_wanted


def test_a_consumer_with_room_and_records_waiting_does_not_wait() -> None:
    # Given a record that arrived after the consumer last looked
    feed = feed_with(record(0, 1))

    # When it waits with room under prefetch, it returns at once (no timeout wait)
    thread, woken = start_waiting(feed, prefetch=4)
    thread.join(JOIN_TIMEOUT_S)
    assert woken.is_set()
    assert not feed.room_wanted


def test_a_record_that_cannot_be_opened_is_filed_with_why_and_the_rest_still_opened() -> None:
    # Given a poll's records, the middle one of which the decoder refuses
    records = [record(0, 1), record(0, 2), record(0, 3)]

    def decode(r: ConsumerRecord) -> bytes:
        if r.offset == 2:
            raise PayloadDecodeError(UNDECRYPTABLE, "no key")
        return f"body {r.offset}".encode()

    # When the poller opens them
    filed = _opened(records, decode)

    # Then each keeps its record; the refused one carries the error (for the
    # consumer to dead-letter it with), and the ones after it were opened
    assert [f[0] for f in filed] == records
    assert filed[0][1] == b"body 1" and filed[2][1] == b"body 3"
    assert isinstance(filed[1][1], PayloadDecodeError)
    assert filed[1][1].reason == UNDECRYPTABLE


def test_records_filed_before_the_consumer_set_a_decoder_are_left_for_it() -> None:
    # Given no decoder yet (the consumer sets it once it is made)
    filed = _opened([record(0, 1)], None)

    # Then the record is filed unopened, for the consumer to open itself
    assert filed == [(record(0, 1), None)]
