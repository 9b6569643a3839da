"""Sending: what reaches Kafka, when send() returns, batches, keys and headers."""

from __future__ import annotations

import time
from typing import Any

import dramatiq
import pytest
from broker_support import BrokerFactory, end_offsets, free_port, read_records, record_count
from kafka import KafkaAdminClient

from broker import BatchSendError, KafkaBroker
from broker.encryption import AesGcmCipher, KeyRing
from broker.kafka import BATCH_CHUNK
from broker.payload_codec import ENCODING_HEADER, KEY_ID_HEADER, PayloadCodec
from broker.topics import TopicSpec, create_missing


def test_actors_receive_exactly_what_was_sent(kafka_broker: KafkaBroker, queue_name: str,
                                              worker: dramatiq.Worker) -> None:
    # Given an actor that keeps what it receives
    received: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    @dramatiq.actor(broker=kafka_broker, queue_name=queue_name)
    def keep(*args: Any, **kwargs: Any) -> None:
        received.append((args, kwargs))

    # When it is sent positional and keyword arguments, Cyrillic and emoji included
    keep.send("Привет, мир 👋", 42, 1.5, None, True,
              nested={"ключ": ["ёжик", "🦔", {"n": -1}]}, empty=[])
    kafka_broker.join(queue_name, timeout=30_000)

    # Then the actor got them unchanged (JSON round trip: tuples become lists)
    assert received == [
        (("Привет, мир 👋", 42, 1.5, None, True),
         {"nested": {"ключ": ["ёжик", "🦔", {"n": -1}]}, "empty": []}),
    ]


def test_send_returns_only_once_kafka_has_the_message(kafka_broker: KafkaBroker,
                                                      queue_name: str, admin: KafkaAdminClient,
                                                      kafka_bootstrap: str) -> None:
    # Given an actor with no worker running
    @dramatiq.actor(broker=kafka_broker, queue_name=queue_name)
    def noop(n: int) -> None: ...

    # When a message is sent
    message = noop.send(1)

    # Then, the moment send() returned, Kafka already holds it
    assert end_offsets(admin, queue_name) == {0: 1}
    [record] = read_records(kafka_bootstrap, queue_name)
    assert dramatiq.Message.decode(record.value).message_id == message.message_id


def test_the_first_send_to_a_new_topic_gets_its_whole_send_timeout_after_the_topic_is_made(
    make_broker: BrokerFactory, queue_name: str, admin: KafkaAdminClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a broker with a 1 s send timeout, on a Kafka where making a
    # queue's topics takes longer than that (as on one just started)
    broker = make_broker(send_timeout_ms=1_000)
    make_topics = broker.queue_admin.ensure_topics
    made: set[str] = set()

    def slowly(topic: str) -> None:
        make_topics(topic)
        if topic not in made:  # later calls find it made, at once, as the real one does
            made.add(topic)
            time.sleep(1.2)

    monkeypatch.setattr(broker.queue_admin, "ensure_topics", slowly)

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def noop(n: int) -> None: ...

    # When the first message is sent, then it is stored: the timeout counts
    # Kafka's answer, not the topic's creation (it failed with "Timeout after
    # waiting for 0.0 secs")
    noop.send(1)
    assert record_count(admin, queue_name) == 1


def test_records_carry_message_id_and_actor_headers(kafka_broker: KafkaBroker,
                                                    queue_name: str,
                                                    kafka_bootstrap: str) -> None:
    # Given an actor
    @dramatiq.actor(broker=kafka_broker, queue_name=queue_name, actor_name="header_check")
    def noop(n: int) -> None: ...

    # When a message is sent
    message = noop.send(7)

    # Then its record says which message and actor it is, without decoding the value
    [record] = read_records(kafka_bootstrap, queue_name)
    headers = dict(record.headers)
    assert headers["dramatiq-message-id"] == message.message_id.encode()
    assert headers["dramatiq-actor"] == b"header_check"
    assert dramatiq.Message.decode(record.value).args == (7,)


def test_a_batch_writes_records_exactly_as_lone_sends_do(
    make_broker: BrokerFactory, queue_name: str, kafka_bootstrap: str,
) -> None:
    # Given a broker that encrypts, and an actor whose messages carry a trace context
    codec = PayloadCodec(AesGcmCipher(KeyRing((KeyRing.new_key("k1"),))))
    broker = make_broker(payload_codec=codec)

    @dramatiq.actor(broker=broker, queue_name=queue_name, actor_name="alike")
    def noop(n: int) -> None: ...

    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    # When one message is sent alone and two in a batch (which sends them its own way)
    lone = noop.send_with_options(args=(0,), traceparent=trace)
    with broker.batch():
        batched = [noop.send_with_options(args=(n,), traceparent=trace) for n in (1, 2)]

    # Then the three records carry the same headers, in the same order
    records = sorted(read_records(kafka_bootstrap, queue_name),
                     key=lambda r: dramatiq.Message.decode(
                         codec.decode(queue_name, r.value, r.headers)).args[0])
    assert len(records) == 3
    names = [[name for name, _ in r.headers] for r in records]
    assert names[0] == names[1] == names[2] == [
        "dramatiq-message-id", "dramatiq-actor", "traceparent", ENCODING_HEADER, KEY_ID_HEADER]
    for record, message in zip(records, [lone, *batched], strict=True):
        headers = dict(record.headers)
        assert headers["dramatiq-message-id"] == message.message_id.encode()
        assert headers["dramatiq-actor"] == b"alike"
        assert headers["traceparent"] == trace.encode()
        assert headers[KEY_ID_HEADER] == b"k1"
        # And each is sealed for its topic: the body is not readable without the key
        assert b"alike" not in record.value


def test_a_batch_sends_everything_and_waits_once_at_the_end(
    kafka_broker: KafkaBroker, queue_name: str, admin: KafkaAdminClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given an actor, and a spy on the broker's wait for Kafka's acknowledgement
    @dramatiq.actor(broker=kafka_broker, queue_name=queue_name)
    def noop(n: int) -> None: ...

    waits: list[str] = []
    real_wait = kafka_broker._wait

    def spy(future: Any, topic: str, **kwargs: Any) -> None:
        waits.append(topic)
        real_wait(future, topic, **kwargs)

    monkeypatch.setattr(kafka_broker, "_wait", spy)

    # When 300 messages are sent in a batch (with a nested batch inside)
    with kafka_broker.batch():
        for n in range(250):
            noop.send(n)
        with kafka_broker.batch():
            for n in range(250, 300):
                noop.send(n)
        # Then nothing waited for Kafka inside the block, not even the inner batch's end
        assert waits == []

    # And the block's end waited for every message, and Kafka has them all
    assert len(waits) == 300
    assert record_count(admin, queue_name) == 300


def test_a_batch_end_sends_at_once_however_long_its_producer_lingers(
    make_broker: BrokerFactory, kafka_bootstrap: str, queue_name: str, admin: KafkaAdminClient,
) -> None:
    # Given a broker whose batch producer would hold records for a minute, and
    # which gives up on an acknowledgement after five seconds
    broker = make_broker(bootstrap_servers=kafka_bootstrap, send_timeout_ms=5_000,
                         batch_producer_options={"linger_ms": 60_000,
                                                 "delivery_timeout_ms": 120_000})

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def noop(n: int) -> None: ...

    noop.send(0)  # single sends don't linger: this one is acknowledged at once

    # When a small batch is sent (a lingering batch would time out: BatchSendError)
    with broker.batch():
        for n in range(1, 6):
            noop.send(n)

    # Then the block's end flushed it: Kafka has every message
    assert record_count(admin, queue_name) == 6


def test_a_batch_to_an_unreachable_kafka_raises_batch_send_error_naming_it(
    make_broker: BrokerFactory, queue_name: str,
) -> None:
    # Given a broker pointed at a port where no Kafka listens, with short timeouts
    port = free_port()
    broker = make_broker(
        bootstrap_servers=f"127.0.0.1:{port}", send_timeout_ms=2_000,
        producer_options={"max_block_ms": 1_500, "request_timeout_ms": 1_000,
                          "delivery_timeout_ms": 2_000},
    )

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def noop(n: int) -> None: ...

    # When a batch is sent through it
    reached = []
    with pytest.raises(BatchSendError) as caught, broker.batch():
        noop.send(1)
        reached.append("after the first send")  # never: the first send already failed

    # Then the error is a BatchSendError (a Dramatiq ConnectionFailed) naming the address
    error = caught.value
    assert isinstance(error, dramatiq.errors.ConnectionFailed)
    assert f"127.0.0.1:{port}" in str(error)
    # And it lists the message that was not sent; the block stopped at it
    assert [(message.actor_name, message.args) for message, _ in error.failed] \
        == [("noop", (1,))]
    assert reached == []


def test_a_send_to_an_unreachable_kafka_raises_connection_failed_naming_it(
    make_broker: BrokerFactory, queue_name: str,
) -> None:
    # Given a broker pointed at a dead port, with topic creation off
    port = free_port()
    broker = make_broker(
        bootstrap_servers=f"127.0.0.1:{port}", create_topics=False, send_timeout_ms=2_000,
        producer_options={"max_block_ms": 1_000, "request_timeout_ms": 1_000},
    )

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def noop(n: int) -> None: ...

    # When a single message is sent, then a ConnectionFailed names the address
    with pytest.raises(dramatiq.errors.ConnectionFailed, match=f"127.0.0.1:{port}"):
        noop.send(1)


def test_options_for_every_client_may_repeat_the_brokers_own_defaults(
    make_broker: BrokerFactory, queue_name: str, admin: KafkaAdminClient,
) -> None:
    # Given options meant for producer, consumer and admin client alike, two of
    # which the broker also sets for its producer
    broker = make_broker(request_timeout_ms=20_000, client_id="everyone",
                         reconnect_backoff_max_ms=2_000)

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def noop(n: int) -> None: ...

    # When a message is sent, then it simply arrives
    noop.send(1)
    assert record_count(admin, queue_name) == 1


def test_a_batch_reports_exactly_the_messages_kafka_refused(
    make_broker: BrokerFactory, queue_name: str, admin: KafkaAdminClient,
) -> None:
    # Given a queue whose topic refuses records over 2 KiB, and an ordinary queue
    small_only = f"{queue_name}-small"
    create_missing(admin, TopicSpec(small_only, partitions=1, retention_ms=3_600_000,
                                    extra_configs={"max.message.bytes": "2048"})
                   .with_companions())
    broker = make_broker()

    @dramatiq.actor(broker=broker, queue_name=small_only)
    def tight(payload: str) -> None: ...

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def roomy(payload: str) -> None: ...

    # When one batch sends small messages to both and one big one to the tight queue
    with pytest.raises(BatchSendError) as caught, broker.batch():
        fine = [roomy.send("x" * 10_000), tight.send("small"), roomy.send("ok")]
        too_big = tight.send("y" * 10_000)

    # Then only the big one is reported, with Kafka's reason
    [(message, exception)] = caught.value.failed
    assert message.message_id == too_big.message_id
    assert "TooLarge" in type(exception).__name__ or "TooLarge" in str(exception)
    # And every other message of the batch was stored
    assert record_count(admin, queue_name) == 2
    assert record_count(admin, small_only) == 1
    assert len(fine) == 3


def test_a_record_the_producer_refuses_ends_the_batch_with_those_gathered_after_it(
    make_broker: BrokerFactory, queue_name: str, admin: KafkaAdminClient,
) -> None:
    # Given a batch producer that refuses requests over 4 KiB before sending them
    broker = make_broker(batch_producer_options={"max_request_size": 4096})

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def note(text: str) -> None: ...

    # When a batch sends ten small messages, one too big, and five small ones
    # (fewer than BATCH_CHUNK: all reach the producer when the block ends)
    with pytest.raises(BatchSendError) as caught, broker.batch():
        before = [note.send(f"before {n}") for n in range(10)]
        too_big = note.send("y" * 10_000)
        after = [note.send(f"after {n}") for n in range(5)]

    # Then the big one and the five gathered after it are reported, with the
    # producer's reason, in the order they were sent
    failed = caught.value.failed
    assert [m.message_id for m, _ in failed] == [m.message_id for m in [too_big, *after]]
    assert all("TooLarge" in type(e).__name__ for _, e in failed)
    # And the ten before it were stored
    assert record_count(admin, queue_name) == len(before) == 10


def test_a_batch_reports_what_a_hand_over_lost_even_when_its_caller_caught_the_error(
    make_broker: BrokerFactory, queue_name: str, admin: KafkaAdminClient,
) -> None:
    # Given a batch producer that refuses requests over 4 KiB before sending them
    broker = make_broker(batch_producer_options={"max_request_size": 4096})

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def note(text: str) -> None: ...

    # When the block's first chunk holds one message too big, the send that
    # fills the chunk fails, and the caller catches that and sends on
    caught_at = None
    with pytest.raises(BatchSendError) as caught, broker.batch():
        too_big = note.send("y" * 10_000)
        gathered = []
        for n in range(BATCH_CHUNK - 1):
            try:
                gathered.append(note.send(f"gathered {n}"))
            except dramatiq.errors.ConnectionFailed:
                caught_at = n
        later = [note.send(f"later {n}") for n in range(5)]

    # Then the send that filled the chunk raised (not the big one's own send)
    assert caught_at == BATCH_CHUNK - 2 and len(gathered) == BATCH_CHUNK - 2
    # And the block still reports the big one and every message of its chunk,
    # which never reached the producer, while the later ones were stored
    assert [m.message_id for m, _ in caught.value.failed][:2] == [
        too_big.message_id, gathered[0].message_id]
    assert len(caught.value.failed) == BATCH_CHUNK
    assert record_count(admin, queue_name) == len(later) == 5


def test_a_batch_that_raises_still_sends_what_it_sent_before_the_error(
    make_broker: BrokerFactory, queue_name: str, kafka_bootstrap: str, admin: KafkaAdminClient,
) -> None:
    # Given a broker and an actor
    broker = make_broker()

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def note(n: int) -> None: ...

    # When a batch sends three messages, then fails for a reason of its own
    with pytest.raises(ValueError, match="the caller's own error"), broker.batch():
        sent = [note.send(n) for n in range(3)]
        raise ValueError("the caller's own error")

    # Then the caller sees its error, and the three messages reach Kafka all the
    # same, as three lone sends before the error would have (nothing waited
    # for them: they arrive once the producer's linger is over)
    deadline = time.monotonic() + 20
    while record_count(admin, queue_name) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    records = read_records(kafka_bootstrap, queue_name)
    assert sorted(dramatiq.Message.decode(r.value).message_id for r in records) == sorted(
        m.message_id for m in sent)


def test_messages_with_the_same_partition_key_share_a_partition(
    make_broker: BrokerFactory, queue_name: str, kafka_bootstrap: str,
) -> None:
    # Given a queue with three partitions
    broker = make_broker(topic_partitions=3)

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def event(user: str, n: int) -> None: ...

    # When ten messages are sent with one key, and thirty with thirty keys
    with broker.batch():
        for n in range(10):
            event.send_with_options(args=("user-42", n), partition_key="user-42")
        for n in range(30):
            event.send_with_options(args=(f"user-{n}", n), partition_key=f"user-{n}")

    # Then the ten share one partition, in the order they were sent
    records = read_records(kafka_bootstrap, queue_name)
    decoded = [(r.partition, dramatiq.Message.decode(r.value).args) for r in records]
    same_key = [(p, args[1]) for p, args in decoded if args[0] == "user-42"]
    assert len({p for p, _ in same_key}) == 1
    assert [n for _, n in same_key] == list(range(10))
    # And different keys spread over the partitions (the key is what decides)
    assert len({p for p, args in decoded if args[0] != "user-42"}) > 1
    # And the key is the record's Kafka key
    assert {r.key for r in records if dramatiq.Message.decode(r.value).args[0] == "user-42"} \
        == {b"user-42"}


def test_an_actor_level_partition_key_applies_to_all_its_messages(
    make_broker: BrokerFactory, queue_name: str, kafka_bootstrap: str,
) -> None:
    # Given an actor declared with a partition key of its own, on three partitions
    broker = make_broker(topic_partitions=3)

    @dramatiq.actor(broker=broker, queue_name=queue_name, partition_key="ledger")
    def ledger(n: int) -> None: ...

    # When it is sent many messages
    with broker.batch():
        for n in range(20):
            ledger.send(n)
        # (a message's own key still wins over the actor's)
        ledger.send_with_options(args=(99,), partition_key="other")

    # Then they all carry the actor's key and share its partition, in order
    records = read_records(kafka_bootstrap, queue_name)
    keyed = [r for r in records if r.key == b"ledger"]
    assert len(keyed) == 20
    assert len({r.partition for r in keyed}) == 1
    assert [dramatiq.Message.decode(r.value).args[0] for r in keyed] == list(range(20))
    assert [r.key for r in records if r.key != b"ledger"] == [b"other"]
