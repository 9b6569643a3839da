"""Compression on the real Kafka: record batches compressed by the producer
(KAFKA_COMPRESSION) as Kafka stores them, and bodies compressed before they
are encrypted (broker.payload_codec), read back by workers, old records
included, and a body that can't be decompressed dead-lettered."""

from __future__ import annotations

from pathlib import Path

import dramatiq
import pytest
from broker_support import BrokerFactory, WorkerFactory, read_records, wait_until
from dramatiq.common import xq_name
from kafka import KafkaAdminClient, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from kafka.record import MemoryRecords
from kafka.record.default_records import DefaultRecordBatch

from broker import KafkaBroker
from broker.body_compression import ZstdBodyCompressor
from broker.dead_letters import header_dict
from broker.encryption import AesGcmCipher, KeyRing
from broker.payload_codec import PayloadCodec
from willowe_tasks import payload_dictionary
from willowe_tasks.kafka_clients import producer_options
from willowe_tasks.settings import load_settings

#: How long a test waits for its messages to be processed, in seconds.
PROCESSED_TIMEOUT_S = 60

#: Kafka's codec ids in a record batch's attributes (KIP-110, the v2 batch format).
CODEC_IDS = {"none": 0, "gzip": 1, "lz4": 3, "zstd": 4}

MATCH = {"name": "Анна", "age": 25, "photo_url": "https://example.com/photo.jpg"}


def stored_batches(kafka_bootstrap: str, topic: str) -> list[DefaultRecordBatch]:
    """The record batches of ``topic``'s one partition, read from its log
    segment files as Kafka wrote them (the test Kafka runs on this machine)."""
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="compression-tests")
    try:
        [broker] = admin.describe_log_dirs([topic])
    finally:
        admin.close()
    [log_dir] = [d["log_dir"] for d in broker["log_dirs"] if d["topics"]]
    batches = []
    for segment in sorted((Path(log_dir) / f"{topic}-0").glob("*.log")):
        records = MemoryRecords(segment.read_bytes())
        while (batch := records.next_batch()) is not None:
            batches.append(batch)
    return batches


def dead_letters(kafka_bootstrap: str, queue_name: str) -> list[ConsumerRecord]:
    """What ``queue_name``'s .XQ holds; nothing while the topic isn't there yet."""
    try:
        return read_records(kafka_bootstrap, xq_name(queue_name), timeout_s=5)
    except KafkaError:
        return []


def guide_sender(broker: KafkaBroker, queue_name: str, got: list[dict[str, object]]
                 ) -> dramatiq.Actor:
    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def notify(user_id: str, payload: dict[str, object]) -> None:
        got.append({"user_id": user_id, **payload})

    return notify


@pytest.mark.parametrize("codec", ["zstd", "lz4", "gzip", "none"])
def test_kafka_compression_compresses_stored_batches_and_workers_read_them(
    make_broker: BrokerFactory, start_worker: WorkerFactory, queue_name: str,
    kafka_bootstrap: str, codec: str,
) -> None:
    # Given a broker whose producers take KAFKA_COMPRESSION's codec
    settings = load_settings(kafka_compression=codec, kafka_broker=kafka_bootstrap)
    broker = make_broker(producer_options=producer_options(settings))
    got: list[dict[str, object]] = []
    notify = guide_sender(broker, queue_name, got)

    # When a batch of the guide's matches is sent, and one more alone
    with broker.batch():
        for n in range(50):
            notify.send(f"user{n}", MATCH)
    notify.send("user-alone", MATCH)

    # Then Kafka stores every batch with that codec...
    batches = stored_batches(kafka_bootstrap, queue_name)
    assert sum(len(list(b)) for b in batches) == 51
    assert {b.compression_type for b in batches} == {CODEC_IDS[codec]}
    # ...and a worker reads each message back as it was sent
    start_worker(broker)
    wait_until(lambda: len(got) == 51, timeout_s=PROCESSED_TIMEOUT_S, what="51 messages")
    assert sorted(str(g["user_id"]) for g in got) == sorted(
        [f"user{n}" for n in range(50)] + ["user-alone"])
    assert all(g["name"] == "Анна" and g["photo_url"] == MATCH["photo_url"] for g in got)


def test_bodies_are_compressed_before_encryption_and_round_trip_through_kafka(
    make_broker: BrokerFactory, start_worker: WorkerFactory, queue_name: str,
    kafka_bootstrap: str,
) -> None:
    # Given a codec that compresses with the shipped dictionary, then encrypts
    cipher = AesGcmCipher(KeyRing((KeyRing.new_key("k1"),)))
    codec = PayloadCodec(cipher, payload_dictionary.compressor())
    broker = make_broker(payload_codec=codec)
    got: list[dict[str, object]] = []
    notify = guide_sender(broker, queue_name, got)

    # When a match is sent
    message = notify.send("user123", MATCH)

    # Then the record names both steps, compression first, and its dictionary,
    # and is smaller than the message it carries (ciphertext alone is 28 bytes
    # larger: nonce and tag)
    [record] = read_records(kafka_bootstrap, queue_name)
    headers = header_dict(record.headers)
    assert headers["x-payload-encoding"] == "zstd,aes-256-gcm"
    assert headers["x-payload-dictionary"] == payload_dictionary.CURRENT_ID
    assert headers["x-payload-key-id"] == "k1"
    assert len(record.value) < len(message.encode()) - 28
    assert "Анна".encode() not in record.value and b"photo" not in record.value
    # And a worker with the same codec processes it as sent
    start_worker(broker)
    wait_until(lambda: got, timeout_s=PROCESSED_TIMEOUT_S, what="the match")
    assert got == [{"user_id": "user123", **MATCH}]


def test_records_sent_without_compression_are_still_processed_by_compressing_workers(
    make_broker: BrokerFactory, start_worker: WorkerFactory, queue_name: str,
) -> None:
    # Given records written before body compression was turned on
    old = make_broker(payload_codec=PayloadCodec())
    got_old: list[dict[str, object]] = []
    guide_sender(old, queue_name, got_old).send("user-before", MATCH)
    # When workers that compress start on the same queue, and a new record joins them
    new = make_broker(payload_codec=PayloadCodec(compressor=payload_dictionary.compressor()))
    got: list[dict[str, object]] = []
    guide_sender(new, queue_name, got).send("user-after", MATCH)
    start_worker(new)

    # Then both are processed
    wait_until(lambda: len(got) == 2, timeout_s=PROCESSED_TIMEOUT_S, what="both messages")
    assert sorted(str(g["user_id"]) for g in got) == ["user-after", "user-before"]
    assert got_old == []


def test_a_corrupt_compressed_body_is_dead_lettered_saying_why_and_the_queue_goes_on(
    make_broker: BrokerFactory, start_worker: WorkerFactory, queue_name: str,
    kafka_bootstrap: str,
) -> None:
    # Given a record that says it is zstd-compressed but whose frame is cut short
    compressor = payload_dictionary.compressor()
    broker = make_broker(payload_codec=PayloadCodec(compressor=compressor))
    got: list[dict[str, object]] = []
    notify = guide_sender(broker, queue_name, got)
    broker.declare_queue(queue_name)
    good = notify.message("user-corrupt", MATCH).encode()
    dict_id, frame = compressor.compress(good)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        broker.queue_admin.ensure_topics(queue_name)
        producer.send(queue_name, frame[:-4], headers=[
            ("x-payload-encoding", b"zstd"),
            ("x-payload-dictionary", str(dict_id).encode())]).get(timeout=30)
    finally:
        producer.close()

    # When a good message follows it
    notify.send("user-fine", MATCH)
    start_worker(broker)
    wait_until(lambda: got, timeout_s=PROCESSED_TIMEOUT_S, what="the good message")

    # Then the good one ran, and the corrupt one is on .XQ as it came, saying why
    assert [g["user_id"] for g in got] == ["user-fine"]
    [dead] = read_records(kafka_bootstrap, xq_name(queue_name))
    assert dead.value == frame[:-4]
    headers = header_dict(dead.headers)
    assert headers["x-dead-letter-reason"] == "undecodable"
    assert headers["x-dead-letter-error"].startswith("can't decompress the body: corrupt zstd")


def test_a_record_compressed_with_an_unknown_dictionary_names_it(
    make_broker: BrokerFactory, start_worker: WorkerFactory, queue_name: str,
    kafka_bootstrap: str,
) -> None:
    # Given a record compressed with a dictionary this worker doesn't ship
    stranger = ZstdBodyCompressor([("guide-99", payload_dictionary.load()[0][1])])
    writer = make_broker(payload_codec=PayloadCodec(compressor=stranger))
    guide_sender(writer, queue_name, []).send("user-stranger", MATCH)
    broker = make_broker(payload_codec=PayloadCodec(compressor=payload_dictionary.compressor()))
    guide_sender(broker, queue_name, [])

    # When a worker reads it
    start_worker(broker)
    wait_until(lambda: dead_letters(kafka_bootstrap, queue_name),
               timeout_s=PROCESSED_TIMEOUT_S, what="the dead letter")

    # Then it is dead-lettered naming the dictionary it lacks
    [dead] = dead_letters(kafka_bootstrap, queue_name)
    error = header_dict(dead.headers)["x-dead-letter-error"]
    assert "unknown compression dictionary 'guide-99'" in error
    assert "guide-1" in error
