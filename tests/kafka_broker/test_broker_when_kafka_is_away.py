"""When Kafka is away: a send fails within its timeout, then at once while the
circuit is open, and recovers when Kafka answers; with a spool, sends are
kept and flushed in order once it does."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from broker_support import BrokerFactory
from dramatiq.errors import ConnectionFailed
from kafka import KafkaAdminClient, KafkaConsumer
from support import Gate, wait_until

from broker import KafkaBroker
from broker.circuit import CircuitOpen
from broker.spool import SpoolFull, SqliteSpool

#: A circuit open for this long is looked at again (short, for the tests).
PROBE_INTERVAL_MS = 300

#: A send that returns "at once" returns within this many seconds: far under
#: the send timeout it would otherwise wait out (2 s), and far over what a
#: loaded machine adds (a 50 ms bound failed under load). Behaviour, not speed.
AT_ONCE_S = 0.5


@pytest.fixture
def gate(kafka_bootstrap: str) -> Iterator[Gate]:
    host, _, port = kafka_bootstrap.rpartition(":")
    gate = Gate((host, int(port)))
    yield gate
    gate.close()


def declare(broker: KafkaBroker, queue_name: str) -> dramatiq.Actor:  # type: ignore[type-arg]
    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def noop(n: int) -> None: ...

    return noop


def records(bootstrap: str, topic: str) -> list[dict[str, object]]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                             auto_offset_reset="earliest", consumer_timeout_ms=3_000)
    try:
        return [json.loads(r.value) for r in consumer]
    finally:
        consumer.close()


def test_a_send_to_a_kafka_that_is_away_fails_fast_then_at_once_and_recovers(
    make_broker: BrokerFactory, gate: Gate, queue_name: str, kafka_bootstrap: str,
    admin: KafkaAdminClient,
) -> None:
    # Given the queue's topics, and a broker that reaches Kafka through a closed gate
    make_broker(bootstrap_servers=kafka_bootstrap).queue_admin.ensure_topics(queue_name)
    broker = make_broker(bootstrap_servers=gate.address, create_topics=False,
                         probe_interval_ms=PROBE_INTERVAL_MS)
    noop = declare(broker, queue_name)
    # When the first send finds it away, it fails within the send timeout (2 s)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as first:
        noop.send(1)
    assert time.monotonic() - started < 2.0 + 0.5
    assert not isinstance(first.value, CircuitOpen)
    # and the next ones fail at once, saying the message never left
    for n in range(20):
        started = time.monotonic()
        with pytest.raises(CircuitOpen) as fast:
            noop.send(n)
        assert time.monotonic() - started < AT_ONCE_S
    assert fast.value.maybe_sent is False
    # Then, once Kafka answers again, sends go through
    gate.open()
    assert wait_until(lambda: not broker._circuit.is_open, 10)
    noop.send(42)
    assert [r["args"] for r in records(kafka_bootstrap, queue_name)] == [[42]]


def test_with_a_spool_sends_are_kept_while_kafka_is_away_then_sent_in_order(
    make_broker: BrokerFactory, gate: Gate, queue_name: str, kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    make_broker(bootstrap_servers=kafka_bootstrap).queue_admin.ensure_topics(queue_name)
    spool = SqliteSpool(tmp_path / "spool.sqlite3", max_records=1_000)
    broker = make_broker(bootstrap_servers=gate.address, create_topics=False, spool=spool,
                         probe_interval_ms=PROBE_INTERVAL_MS)
    noop = declare(broker, queue_name)
    # When 50 messages are sent while Kafka is away, none fails, and all but
    # the first (which waited out the send timeout) return at once
    sent = []
    slowest_after_first = 0.0
    for n in range(50):
        started = time.monotonic()
        sent.append(noop.send(n).message_id)
        if n:
            slowest_after_first = max(slowest_after_first, time.monotonic() - started)
    assert slowest_after_first < AT_ONCE_S
    assert spool.depth() == 50
    # Then once Kafka answers they are all there, in order, with their ids,
    # and later sends queue up behind nothing
    gate.open()
    assert wait_until(lambda: spool.depth() == 0, 30)
    noop.send(50)
    got = records(kafka_bootstrap, queue_name)
    assert [r["args"] for r in got] == [[n] for n in range(51)]
    assert [r["message_id"] for r in got[:50]] == sent


def test_a_spool_left_by_a_dead_sender_is_sent_by_the_next(
    make_broker: BrokerFactory, gate: Gate, queue_name: str, kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    make_broker(bootstrap_servers=kafka_bootstrap).queue_admin.ensure_topics(queue_name)
    path = tmp_path / "spool.sqlite3"
    dead = make_broker(bootstrap_servers=gate.address, create_topics=False,
                       spool=SqliteSpool(path, max_records=100),
                       probe_interval_ms=60_000)
    noop = declare(dead, queue_name)
    for n in range(3):
        noop.send(n)
    # The next process on the same spool sends them (here: flushes on demand)
    successor = make_broker(bootstrap_servers=kafka_bootstrap, create_topics=False,
                            spool=SqliteSpool(path, max_records=100))
    assert successor.flush_spool(timeout_s=30) == 0
    assert [r["args"] for r in records(kafka_bootstrap, queue_name)] == [[0], [1], [2]]


def test_a_full_spool_refuses_the_send(
    make_broker: BrokerFactory, gate: Gate, queue_name: str, tmp_path: Path,
    kafka_bootstrap: str,
) -> None:
    make_broker(bootstrap_servers=kafka_bootstrap).queue_admin.ensure_topics(queue_name)
    broker = make_broker(bootstrap_servers=gate.address, create_topics=False,
                         spool=SqliteSpool(tmp_path / "s.sqlite3", max_records=3),
                         probe_interval_ms=60_000)
    noop = declare(broker, queue_name)
    for n in range(3):
        noop.send(n)
    with pytest.raises(SpoolFull, match="holds 3 records"):
        noop.send(3)
