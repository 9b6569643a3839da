"""Dead letters: failed, undecodable and unroutable messages land on
``<queue>.XQ`` with their original bytes and headers saying why, and the
queue keeps flowing past them."""

from __future__ import annotations

import time

import dramatiq
from broker_support import read_records
from dramatiq.common import xq_name
from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

from broker import KafkaBroker
from broker.dead_letters import header_dict


def source_record(kafka_bootstrap: str, queue_name: str, message_id: str) -> ConsumerRecord:
    [record] = [r for r in read_records(kafka_bootstrap, queue_name)
                if dict(r.headers).get("dramatiq-message-id") == message_id.encode()]
    return record


def test_a_failure_without_retries_is_dead_lettered_with_why(
    kafka_broker: KafkaBroker, queue_name: str, worker: dramatiq.Worker, kafka_bootstrap: str,
) -> None:
    # Given an actor that always fails and must not be retried
    @dramatiq.actor(broker=kafka_broker, queue_name=queue_name, max_retries=0)
    def doomed(n: int) -> None:
        raise ValueError(f"boom #{n}: сломалось")

    # When it is sent a message
    before_ms = int(time.time() * 1000)
    message = doomed.send(1)
    kafka_broker.join(queue_name, timeout=30_000)
    after_ms = int(time.time() * 1000)

    # Then its record is on .XQ: the original value and headers, plus the reason
    source = source_record(kafka_bootstrap, queue_name, message.message_id)
    [dead] = read_records(kafka_bootstrap, xq_name(queue_name))
    assert dead.value == source.value
    headers = header_dict(dead.headers)
    assert headers["dramatiq-message-id"] == message.message_id
    assert headers["dramatiq-actor"] == "doomed"
    assert headers["x-dead-letter-reason"] == "failed"
    assert headers["x-dead-letter-exception"] == "ValueError"
    assert headers["x-dead-letter-error"] == "boom #1: сломалось"
    # (Dramatiq counts failed attempts: one, with no retry allowed)
    assert headers["x-dead-letter-retries"] == "1"
    assert headers["x-dead-letter-source-topic"] == queue_name
    assert headers["x-dead-letter-source-partition"] == str(source.partition)
    assert headers["x-dead-letter-source-offset"] == str(source.offset)
    assert before_ms <= int(headers["x-dead-letter-time-ms"]) <= after_ms


def test_a_message_that_exhausts_its_retries_is_dead_lettered(
    kafka_broker: KafkaBroker, queue_name: str, worker: dramatiq.Worker, kafka_bootstrap: str,
) -> None:
    # Given an actor that always fails, allowed two quick retries
    attempts: list[int] = []

    @dramatiq.actor(broker=kafka_broker, queue_name=queue_name,
                    max_retries=2, min_backoff=50, max_backoff=100)
    def hopeless() -> None:
        attempts.append(1)
        raise TimeoutError("upstream never answers")

    # When it is sent once
    message = hopeless.send()
    kafka_broker.join(queue_name, timeout=60_000)

    # Then it ran three times and only then went to .XQ, once
    assert len(attempts) == 3
    [dead] = read_records(kafka_bootstrap, xq_name(queue_name))
    headers = header_dict(dead.headers)
    assert headers["dramatiq-message-id"] == message.message_id
    assert headers["x-dead-letter-exception"] == "TimeoutError"
    assert headers["x-dead-letter-retries"] == "3"  # three failed attempts
    # And the dead letter is the last attempt's record (the second retry)
    last_attempt = dramatiq.Message.decode(dead.value)
    assert last_attempt.message_id == message.message_id
    assert last_attempt.options["retries"] == 2
    assert headers["x-dead-letter-source-topic"] == queue_name


def test_an_undecodable_record_is_dead_lettered_and_the_next_one_still_runs(
    kafka_broker: KafkaBroker, queue_name: str, worker: dramatiq.Worker, kafka_bootstrap: str,
) -> None:
    # Given a queue, and a record on it that is not a Dramatiq message at all
    ran: list[str] = []

    @dramatiq.actor(broker=kafka_broker, queue_name=queue_name)
    def fine(label: str) -> None:
        ran.append(label)

    kafka_broker.declare_queue(queue_name)
    garbage = b"\xff\xfe this is not JSON \x00"
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        kafka_broker.queue_admin.ensure_topics(queue_name)
        producer.send(queue_name, garbage, headers=[("origin", b"legacy")]).get(timeout=30)
    finally:
        producer.close()

    # When a good message follows it
    fine.send("after the garbage")
    kafka_broker.join(queue_name, timeout=30_000)

    # Then the good one ran, and the garbage is on .XQ, byte for byte, saying why
    assert ran == ["after the garbage"]
    [dead] = read_records(kafka_bootstrap, xq_name(queue_name))
    assert dead.value == garbage
    headers = header_dict(dead.headers)
    assert headers["origin"] == "legacy"
    assert headers["x-dead-letter-reason"] == "undecodable"
    assert headers["x-dead-letter-exception"] == "DecodeError"
    assert headers["x-dead-letter-error"]
    assert headers["x-dead-letter-source-offset"] == "0"
    assert "x-dead-letter-retries" not in headers


def test_a_message_for_an_unknown_actor_is_dead_lettered(
    kafka_broker: KafkaBroker, queue_name: str, worker: dramatiq.Worker, kafka_bootstrap: str,
) -> None:
    # Given a queue served by one actor
    ran: list[int] = []

    @dramatiq.actor(broker=kafka_broker, queue_name=queue_name)
    def known(n: int) -> None:
        ran.append(n)

    # When a message for an actor nobody declared is sent, then a good one
    stray = kafka_broker.enqueue(dramatiq.Message(
        queue_name=queue_name, actor_name="nobody_home", args=(1,), kwargs={}, options={},
    ))
    known.send(2)
    kafka_broker.join(queue_name, timeout=30_000)

    # Then the good one ran and the stray one is on .XQ saying so
    assert ran == [2]
    [dead] = read_records(kafka_bootstrap, xq_name(queue_name))
    headers = header_dict(dead.headers)
    assert headers["dramatiq-message-id"] == stray.message_id
    assert headers["x-dead-letter-exception"] == "ActorNotFound"
    assert "nobody_home" in headers["x-dead-letter-error"]
