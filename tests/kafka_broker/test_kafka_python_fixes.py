"""The kafka-python workarounds (broker/_kafka_python_fixes.py) still apply,
and what they work around does not come back."""

from __future__ import annotations

import logging
import threading

import dramatiq
import pytest
from broker_support import BrokerFactory, WorkerFactory
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

from broker import KafkaBroker
from broker._kafka_python_fixes import FIXES, PRODUCER_FIXES, apply_fixes, apply_producer_fixes

#: How long a send of an unfixed producer is given, in seconds: a fixed one
#: takes milliseconds.
PLAIN_PRODUCER_WAIT_S = 5.0

#: A broker id no test Kafka has.
UNKNOWN_BROKER_ID = 4242


def test_every_workaround_still_finds_the_internals_it_patches(kafka_bootstrap: str) -> None:
    # If kafka-python moves them, a fix turns itself off: this says which one
    # to check against its upstream behaviour again.
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id="fixes-probe",
                             enable_auto_commit=False)
    consumer.subscribe(["fixes-probe"])
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        assert apply_fixes(consumer) == list(FIXES)
        assert apply_producer_fixes(producer) == list(PRODUCER_FIXES)
    finally:
        consumer.close()
        producer.close()


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


def test_a_producer_that_dropped_its_producer_id_gets_a_new_one_and_sends_again(
    make_broker: BrokerFactory, queue_name: str, kafka_bootstrap: str,
) -> None:
    # Given the broker's producer has sent, so it holds a producer id
    broker = make_broker()
    broker.queue_admin.ensure_topics(queue_name)
    producer = broker.producer
    producer.send(queue_name, b"first").get(timeout=30)
    # When it drops the id, as its sender does when a batch already sent expires
    producer._transaction_manager.reset_producer_id()
    # Then the next send gets a new id and goes through
    producer.send(queue_name, b"second").get(timeout=30)

    # Upstream kafka-python still never asks for a new id (else drop the fix)…
    plain = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    plain.send(queue_name, b"third").get(timeout=30)
    plain._transaction_manager.reset_producer_id()
    with pytest.raises(KafkaTimeoutError):
        plain.send(queue_name, b"fourth").get(timeout=PLAIN_PRODUCER_WAIT_S)
    # …and the fix gets even a stuck producer going again
    apply_producer_fixes(plain)
    plain._transaction_manager.reset_producer_id()
    plain.flush(timeout=30)
    plain.close()


def test_a_producer_whose_metadata_names_a_leader_it_lists_no_broker_for_sends_again(
    make_broker: BrokerFactory, queue_name: str, kafka_bootstrap: str,
) -> None:
    # Given the broker's producer has sent, so it knows the partition's leader
    broker = make_broker()
    broker.queue_admin.ensure_topics(queue_name)
    producer = broker.producer
    producer.send(queue_name, b"first", partition=0).get(timeout=30)
    # When its metadata names a leader that is no broker it knows (as right
    # after the controller fenced a crashed one)
    _name_an_unknown_leader(producer, queue_name)
    # Then it fetches metadata again and the send goes through
    producer.send(queue_name, b"second", partition=0).get(timeout=30)

    # Upstream kafka-python still fails every sender loop there (else drop the fix)
    plain = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    plain.send(queue_name, b"third", partition=0).get(timeout=30)
    _name_an_unknown_leader(plain, queue_name)
    with pytest.raises(KafkaTimeoutError):
        plain.send(queue_name, b"fourth", partition=0).get(timeout=PLAIN_PRODUCER_WAIT_S)
    apply_producer_fixes(plain)
    plain.flush(timeout=30)
    plain.close()


def _name_an_unknown_leader(producer: KafkaProducer, topic: str) -> None:
    producer._metadata._partitions[topic][0].leader_id = UNKNOWN_BROKER_ID
