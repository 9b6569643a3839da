"""The kafka-python workarounds (broker/_kafka_python_fixes.py) still apply,
and what they work around does not come back."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import dramatiq
import pytest
from broker_support import BrokerFactory, WorkerFactory
from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from broker import KafkaBroker
from broker._kafka_python_fixes import (
    ADMIN_FIXES,
    FIXES,
    PRODUCER_FIXES,
    apply_admin_fixes,
    apply_fixes,
    apply_producer_fixes,
)
from broker.topics import TopicSpec, create_missing

#: How long a send of an unfixed producer is given, in seconds: a fixed one
#: takes milliseconds.
PLAIN_PRODUCER_WAIT_S = 5.0

#: How long the metadata fetch of a new subscription may take, in seconds:
#: far above what it takes, far below the backoff the test sets.
METADATA_WAIT_S = 20.0

#: A broker id no test Kafka has.
UNKNOWN_BROKER_ID = 4242

#: ``max.message.bytes`` of a topic that refuses the test's big record, and
#: that record's size: far over it, far under the producer's own 1 MiB
#: ``max_request_size`` (so Kafka refuses it, not the client).
TIGHT_TOPIC_MAX_BYTES = 1024
BIG_RECORD_BYTES = 10_000

#: Threads sending at once to queues new to the process: more than the five
#: requests kafka-python lets one connection have in flight.
CONCURRENT_FIRST_SENDS = 12


def test_every_workaround_still_finds_the_internals_it_patches(kafka_bootstrap: str) -> None:
    # If kafka-python moves them, a fix turns itself off: this says which one
    # to check against its upstream behaviour again.
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id="fixes-probe",
                             enable_auto_commit=False)
    consumer.subscribe(["fixes-probe"])
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert apply_fixes(consumer) == list(FIXES)
        assert apply_producer_fixes(producer) == list(PRODUCER_FIXES)
        assert apply_admin_fixes(admin) == list(ADMIN_FIXES)
    finally:
        consumer.close()
        producer.close()
        admin.close()


def test_threads_sending_to_new_queues_while_a_worker_starts_all_get_through(
    make_broker: BrokerFactory, start_worker: WorkerFactory, queue_name: str,
) -> None:
    # Given a broker with a dozen queues it has not made topics for yet
    broker: KafkaBroker = make_broker()
    ran: list[int] = []

    def declare(i: int) -> dramatiq.Actor[[int], None]:
        @dramatiq.actor(broker=broker, queue_name=f"{queue_name}-{i}",
                        actor_name=f"{queue_name}-{i}")
        def note(n: int) -> None:
            ran.append(n)
        return note

    actors = [declare(i) for i in range(CONCURRENT_FIRST_SENDS)]
    failures: list[BaseException] = []
    ready = threading.Barrier(CONCURRENT_FIRST_SENDS + 1)

    def send(i: int) -> None:
        ready.wait(30)
        try:
            actors[i].send(i)
        except Exception as e:  # every failure is the test's finding
            failures.append(e)

    senders = [threading.Thread(target=send, args=(i,), daemon=True)
               for i in range(CONCURRENT_FIRST_SENDS)]
    for sender in senders:
        sender.start()
    # When a worker starts its consumers (each checks its queue's topics)
    # while every thread makes its first send at the same moment
    ready.wait(30)
    start_worker(broker)
    for sender in senders:
        sender.join(60)
    # Then every send got through (upstream, the admin requests beyond the
    # connection's five in flight failed at once: NodeNotReadyError)...
    assert not failures, [repr(e) for e in failures]
    # ...and every message ran
    deadline = time.monotonic() + 60
    while len(ran) < CONCURRENT_FIRST_SENDS and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(ran) == list(range(CONCURRENT_FIRST_SENDS))


def test_a_worker_on_new_topics_starts_without_metadata_warnings_and_works(
    make_broker: BrokerFactory, start_worker: WorkerFactory, queue_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a broker with two queues (four consumers, one group) on topics it
    # has just created
    broker: KafkaBroker = make_broker()
    done = {"first": threading.Event(), "second": threading.Event()}

    @dramatiq.actor(broker=broker, queue_name=f"{queue_name}-a")
    def first() -> None:
        done["first"].set()

    @dramatiq.actor(broker=broker, queue_name=f"{queue_name}-b")
    def second() -> None:
        done["second"].set()

    # When a worker starts and each queue gets a message
    with caplog.at_level(logging.WARNING):
        start_worker(broker)
        first.send()
        second.send()
        assert done["first"].wait(60) and done["second"].wait(60)
    # Then whichever consumer led the group knew every topic from the start
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [w for w in warnings if "No partition metadata" in w], warnings


def test_metadata_for_a_new_subscription_is_fetched_without_waiting_out_the_retry_backoff(
        kafka_bootstrap: str, queue_name: str, admin: KafkaAdminClient) -> None:
    from kafka import KafkaConsumer

    from broker._kafka_python_fixes import know_every_topic

    create_missing(admin, [TopicSpec(queue_name, partitions=1, retention_ms=3_600_000)])
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=f"{queue_name}-g",
                             enable_auto_commit=False)
    # Given a consumer whose metadata refreshes are held back an hour after
    # each other (100 ms upstream; the consumer's retry_backoff_ms does not
    # reach its ClusterMetadata, so it is set there), and whose bootstrap has
    # just refreshed...
    consumer._cluster.config["retry_backoff_ms"] = 3_600_000
    fetched = threading.Event()

    def fetch() -> None:
        know_every_topic(consumer)
        fetched.set()

    try:
        consumer.subscribe([queue_name])
        # ...the metadata it now wants comes at once (upstream waits out the
        # backoff)
        threading.Thread(target=fetch, daemon=True).start()
        assert fetched.wait(METADATA_WAIT_S), "the metadata fetch waited out the backoff"
        assert consumer.partitions_for_topic(queue_name) == {0}
    finally:
        consumer.close(timeout_ms=0)


def test_a_producers_first_send_to_a_topic_fetches_its_metadata_without_waiting_out_the_backoff(
        kafka_bootstrap: str, queue_name: str, admin: KafkaAdminClient) -> None:
    from broker._kafka_python_fixes import fetch_new_topics_at_once

    create_missing(admin, [TopicSpec(queue_name, partitions=1, retention_ms=3_600_000)])
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap,
                             max_block_ms=int(METADATA_WAIT_S * 2 * 1000))
    assert fetch_new_topics_at_once(producer)
    # Given a producer whose metadata refreshes are held back an hour after
    # each other (set on its ClusterMetadata, as above), its bootstrap's just made...
    producer._metadata.config["retry_backoff_ms"] = 3_600_000
    sent = threading.Event()

    def send() -> None:
        producer.send(queue_name, b"first").get(timeout=METADATA_WAIT_S)
        sent.set()

    try:
        # ...its first send to a topic gets the topic's metadata at once
        # (upstream waits out the backoff, and the send blocks until max_block_ms)
        threading.Thread(target=send, daemon=True).start()
        assert sent.wait(METADATA_WAIT_S), "the send waited out the metadata backoff"
    finally:
        producer.close(timeout=0)


def test_a_producer_that_dropped_its_producer_id_gets_a_new_one_and_sends_again(
    make_broker: BrokerFactory, queue_name: str, kafka_bootstrap: str,
) -> None:
    # As its sender does when a batch it already sent expires
    def drop_the_producer_id(producer: KafkaProducer) -> None:
        producer._transaction_manager.reset_producer_id()

    sends_again_only_with_the_fix(make_broker(), queue_name, kafka_bootstrap,
                                  drop_the_producer_id)


def test_a_producer_whose_metadata_names_a_leader_it_lists_no_broker_for_sends_again(
    make_broker: BrokerFactory, queue_name: str, kafka_bootstrap: str,
) -> None:
    # As right after the controller fenced a crashed leader
    def name_an_unknown_leader(producer: KafkaProducer) -> None:
        producer._metadata._partitions[queue_name][0].leader_id = UNKNOWN_BROKER_ID

    sends_again_only_with_the_fix(make_broker(), queue_name, kafka_bootstrap,
                                  name_an_unknown_leader)


def sends_again_only_with_the_fix(broker: KafkaBroker, topic: str, kafka_bootstrap: str,
                                  trip: Callable[[KafkaProducer], None]) -> None:
    """``trip`` puts a producer that has sent in the state a fix is for. The
    broker's producer sends right after; an upstream one does not (else the
    fix can go), until the fix is applied to it too."""
    broker.queue_admin.ensure_topics(topic)
    fixed = broker.producer
    fixed.send(topic, b"first", partition=0).get(timeout=30)
    trip(fixed)
    fixed.send(topic, b"second", partition=0).get(timeout=30)

    plain = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    plain.send(topic, b"third", partition=0).get(timeout=30)
    trip(plain)
    with pytest.raises(KafkaTimeoutError):
        plain.send(topic, b"fourth", partition=0).get(timeout=PLAIN_PRODUCER_WAIT_S)
    apply_producer_fixes(plain)
    trip(plain)
    plain.flush(timeout=30)
    plain.close()


def test_a_record_kafka_refuses_as_too_large_fails_alone_and_the_producer_goes_on(
    make_broker: BrokerFactory, queue_name: str, kafka_bootstrap: str, admin: KafkaAdminClient,
) -> None:
    # Given a topic that refuses records over 1 KiB, and an ordinary one
    tight = f"{queue_name}-tight"
    refusing = {"max.message.bytes": str(TIGHT_TOPIC_MAX_BYTES)}
    create_missing(admin, [TopicSpec(tight, partitions=1, retention_ms=3_600_000,
                                     extra_configs=refusing)])
    broker = make_broker()
    broker.queue_admin.ensure_topics(queue_name)

    def refuse_a_big_record(producer: KafkaProducer) -> None:
        with pytest.raises(KafkaError, match="TooLarge"):
            producer.send(tight, b"x" * BIG_RECORD_BYTES).get(timeout=30)

    # When the broker's producer has one refused, its next sends still work
    fixed = broker.producer
    refuse_a_big_record(fixed)
    fixed.send(queue_name, b"after", partition=0).get(timeout=30)
    fixed.send(tight, b"small", partition=0).get(timeout=30)

    # And an upstream producer is done for after the same refusal (else the
    # fix can go), until the fix is applied to a new one
    plain = KafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    try:
        refuse_a_big_record(plain)
        with pytest.raises(KafkaError):
            plain.send(queue_name, b"after", partition=0).get(timeout=PLAIN_PRODUCER_WAIT_S)
    finally:
        plain.close(timeout=5)


def test_a_partition_paused_mid_fetch_is_read_again_once_resumed(
    make_broker: BrokerFactory, queue_name: str, kafka_bootstrap: str,
) -> None:
    # Given a consumer of two partitions with 100 records each, which has
    # handed out only a few of the first fetch's records
    from kafka import KafkaConsumer, TopicPartition

    broker = make_broker(topic_partitions=2)
    broker.declare_queue(queue_name)  # (so the topic is deleted afterwards)
    broker.queue_admin.ensure_topics(queue_name)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        for n in range(100):
            for partition in (0, 1):
                producer.send(queue_name, b"%d" % n, partition=partition)
        producer.flush(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    consumer.assign([TopicPartition(queue_name, p) for p in (0, 1)])
    assert "hand_back_resumed_records" in apply_fixes(consumer)
    try:
        first: dict[TopicPartition, list[object]] = {}
        for _ in range(100):
            first = consumer.poll(timeout_ms=200, max_records=5)
            if first:
                break
        [paused] = first
        other = TopicPartition(queue_name, 1 - paused.partition)

        # When it is paused while the other partition is read to its end,
        # and then resumed
        consumer.pause(paused)
        for _ in range(100):
            if consumer.position(other) == 100:
                break
            assert paused not in consumer.poll(timeout_ms=200)
        consumer.resume(paused)

        # Then it is read to its end too
        for _ in range(100):
            if consumer.position(paused) == 100:
                break
            consumer.poll(timeout_ms=200)
        assert consumer.position(paused) == 100, f"stuck at {consumer.position(paused)}"
    finally:
        consumer.close()
