"""The consumer reads records with aiokafka's compiled parser
(broker/compiled_records.py) and gets exactly what kafka-python's own parser
gives: every codec, headers, missing keys and values, transactions' control
batches, fetches that start inside a batch, and corrupt batches refused."""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from collections.abc import Iterator
from types import SimpleNamespace

import kafka.codec
import pytest
from broker_support import read_records
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord, Fetcher
from kafka.errors import CorruptRecordError, KafkaError
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder

from broker import compiled_records
from broker.compiled_records import CompiledPartitionRecords, parse_records_in_c
from broker.topics import TopicSpec, create_missing

#: Codecs kafka-python's producer can write here (snappy needs python-snappy).
CODECS = [None, "gzip", "lz4", "zstd", *(["snappy"] if kafka.codec.has_snappy() else [])]

#: A record's key, value and headers.
Sent = tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]

#: Records that cover what a record can hold.
VARIED_RECORDS: list[Sent] = [
    (b"user-1", b'{"n": 1}', []),
    (None, b"no key", [("traceparent", b"00-ab-cd-01"), ("dramatiq_actor", b"send")]),
    (b"no value", None, [("only-key", b"")]),
    (b"empty value", b"", []),
    (b"", None, [("\u00e9t\u00e9", "\u043b\u0435\u0442\u043e".encode())]),
    (b"big", bytes(range(256)) * 64, [("h", b"")]),
]

#: Records in each of the test topics' batches, and how many batches.
RECORDS_PER_BATCH = 50
BATCHES = 4

#: A topic's retention, in ms: the topics are deleted at the test's end anyway.
RETENTION_MS = 3_600_000

#: The code of the LZ4 codec in a batch's attributes (kafka-python's builder).
LZ4_CODEC = 3


@pytest.fixture(autouse=True)
def aiokafka_imported() -> None:
    """aiokafka imported, as a worker has it a moment after its start (a
    fetch before that is parsed by kafka-python)."""
    compiled_records._load()


@pytest.fixture
def topic(admin: KafkaAdminClient, queue_name: str) -> Iterator[str]:
    create_missing(admin, [TopicSpec(queue_name, partitions=1, retention_ms=RETENTION_MS)])
    yield queue_name
    with contextlib.suppress(KafkaError):  # a leftover costs disk, not correctness
        admin.delete_topics([queue_name])


def produce(bootstrap: str, topic: str, codec: str | None) -> list[Sent]:
    """Send ``BATCHES`` batches of the varied records; return what was sent."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, compression_type=codec,
                             linger_ms=1_000, batch_size=1_000_000)
    sent = []
    try:
        for _ in range(BATCHES):
            for n in range(RECORDS_PER_BATCH):
                key, value, headers = VARIED_RECORDS[n % len(VARIED_RECORDS)]
                producer.send(topic, key=key, value=value, headers=headers)
                sent.append((key, value, headers))
            producer.flush()  # one batch each
    finally:
        producer.close()
    return sent


def read(bootstrap: str, topic: str, *, compiled: bool, **options: object) -> list[ConsumerRecord]:
    def prepare(consumer: KafkaConsumer) -> None:
        if compiled:
            assert parse_records_in_c(consumer)
            assert consumer._fetcher.PartitionRecords is CompiledPartitionRecords
    return read_records(bootstrap, topic, prepare=prepare, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_reads_the_same_records_as_kafka_python(
    kafka_bootstrap: str, topic: str, codec: str | None,
) -> None:
    # Given batches of varied records in one codec
    sent = produce(kafka_bootstrap, topic, codec)

    # When our consumer and a plain kafka-python one read them
    ours = read(kafka_bootstrap, topic, compiled=True)
    theirs = read(kafka_bootstrap, topic, compiled=False)

    # Then they read the same records, every field (sizes, leader epoch,
    # timestamps), and those are what was sent
    assert ours == theirs
    assert [(r.key, r.value, r.headers) for r in ours] == sent
    assert len({r.leader_epoch for r in ours}) == 1 and ours[0].leader_epoch >= 0


def test_log_append_time_reads_the_same_timestamps_as_kafka_python(
    kafka_bootstrap: str, admin: KafkaAdminClient, queue_name: str,
) -> None:
    # Given a topic whose records take the time Kafka appends them (the
    # batch's max timestamp, not each record's own)
    topic = f"{queue_name}-append-time"
    create_missing(admin, [TopicSpec(topic, partitions=1, retention_ms=RETENTION_MS,
                                     extra_configs={"message.timestamp.type": "LogAppendTime"})])
    try:
        produce(kafka_bootstrap, topic, "lz4")

        # When our consumer and kafka-python's read it
        ours = read(kafka_bootstrap, topic, compiled=True)

        # Then both give the append time, the same for each record of a batch
        assert ours == read(kafka_bootstrap, topic, compiled=False)
        assert {r.timestamp_type for r in ours} == {1}
        assert len({r.timestamp for r in ours[:RECORDS_PER_BATCH]}) == 1
    finally:
        with contextlib.suppress(KafkaError):
            admin.delete_topics([topic])


def test_a_fetch_inside_a_batch_starts_at_the_fetch_offset(
    kafka_bootstrap: str, topic: str,
) -> None:
    # Given compressed batches (Kafka answers with the whole batch that holds
    # the offset asked for)
    produce(kafka_bootstrap, topic, "lz4")
    middle = RECORDS_PER_BATCH + RECORDS_PER_BATCH // 2

    # When our consumer starts in the middle of the second batch
    ours = read(kafka_bootstrap, topic, compiled=True, from_offset=middle)

    # Then the earlier offsets of that batch are skipped
    assert [r.offset for r in ours] == list(range(middle, BATCHES * RECORDS_PER_BATCH))
    assert ours == read(kafka_bootstrap, topic, compiled=False, from_offset=middle)


@pytest.mark.parametrize("isolation_level", ["read_uncommitted", "read_committed"])
def test_transactions_control_batches_are_skipped_and_aborted_ones_left_out_when_committed_only(
    kafka_bootstrap: str, topic: str, queue_name: str, isolation_level: str,
) -> None:
    # Given a committed transaction, an aborted one and a committed one
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap,
                             transactional_id=f"tx-{queue_name}")
    try:
        producer.init_transactions()
        for n, commit in enumerate((True, False, True)):
            producer.begin_transaction()
            for i in range(3):
                producer.send(topic, value=f"{n}-{i}".encode())
            producer.flush()  # (else an abort drops the records unsent)
            if commit:
                producer.commit_transaction()
            else:
                producer.abort_transaction()
    finally:
        producer.close()

    # When our consumer and kafka-python's read the topic
    ours = read(kafka_bootstrap, topic, compiled=True, isolation_level=isolation_level)
    theirs = read(kafka_bootstrap, topic, compiled=False, isolation_level=isolation_level)

    # Then both read the same records, and no control record (transaction
    # markers sit at offsets 3, 7 and 11)
    assert ours == theirs
    values = [r.value for r in ours]
    assert [r.offset for r in ours] == ([0, 1, 2, 4, 5, 6, 8, 9, 10]
                                       if isolation_level == "read_uncommitted"
                                       else [0, 1, 2, 8, 9, 10])
    assert b"1-0" in values if isolation_level == "read_uncommitted" else b"1-0" not in values


# -- on bytes ----------------------------------------------------------------

TOPIC_PARTITION = TopicPartition("parsed", 0)


def batches(count: int, *, codec: int = 0, per_batch: int = 5) -> bytearray:
    """``count`` v2 batches of ``per_batch`` records each, as a fetch returns them."""
    data = bytearray()
    for first in range(0, count * per_batch, per_batch):
        builder = MemoryRecordsBuilder(magic=2, compression_type=codec, batch_size=1_000_000,
                                       offset=first)
        for n in range(per_batch):
            # (Long enough for a codec to shrink: the builder leaves a batch
            # uncompressed otherwise.)
            builder.append(timestamp=1_000 + n, key=None, value=b"v%d" % (first + n) * 50,
                           headers=[("k", b"h"), ("none", None)])
        builder.close()
        data += builder.buffer()
    return data


def take_all(parser: type, data: bytearray, *, check_crcs: bool = True) -> list[ConsumerRecord]:
    return parser(0, TOPIC_PARTITION, MemoryRecords(bytes(data)), check_crcs=check_crcs).take()


#: Where a v2 batch's attributes start (after base offset, length, leader
#: epoch, magic and CRC): the CRC covers everything from there on.
ATTRIBUTES_OFFSET = 8 + 4 + 4 + 1 + 4


@pytest.mark.parametrize("codec", [0, LZ4_CODEC])
def test_a_batch_that_fails_its_crc_is_refused_as_kafka_python_does(codec: int) -> None:
    # Given one batch with a byte of its records flipped (inside the CRC)
    data = batches(1, codec=codec)
    data[-3] ^= 0xFF

    # When both parsers read it, Then both refuse it
    for parser in (CompiledPartitionRecords, Fetcher.PartitionRecords):
        with pytest.raises(CorruptRecordError, match="failed crc check"):
            take_all(parser, data)


def test_records_before_a_corrupt_batch_come_first_and_the_error_next() -> None:
    # Given two batches, the second with its timestamp type bit flipped
    data = batches(2)
    second = len(data) // 2
    data[second + ATTRIBUTES_OFFSET + 1] ^= 0x08

    # When our parser is asked for everything
    parsed = CompiledPartitionRecords(0, TOPIC_PARTITION, MemoryRecords(bytes(data)))
    first_take = parsed.take()

    # Then the first batch's records come out, and the next take raises
    assert [r.offset for r in first_take] == list(range(5))
    with pytest.raises(CorruptRecordError):
        parsed.take()


def test_a_record_that_does_not_parse_is_a_corrupt_record_error() -> None:
    # Given a batch whose first record's length is wrong, read without CRC checks
    data = batches(1)
    data[61] += 2  # the first record's length varint (after the 61-byte header)

    # When both parsers read it, Then both raise kafka-python's error
    for parser in (CompiledPartitionRecords, Fetcher.PartitionRecords):
        with pytest.raises(CorruptRecordError):
            take_all(parser, data, check_crcs=False)


def test_without_aiokafka_records_are_parsed_by_kafka_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = batches(3, codec=LZ4_CODEC)
    expected = take_all(Fetcher.PartitionRecords, data)
    monkeypatch.setattr(compiled_records, "_compiled", lambda: None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)

    assert take_all(CompiledPartitionRecords, data) == expected
    fetcher = SimpleNamespace(PartitionRecords=Fetcher.PartitionRecords)
    assert not parse_records_in_c(SimpleNamespace(_fetcher=fetcher))  # type: ignore[arg-type]
    assert fetcher.PartitionRecords is Fetcher.PartitionRecords


def test_a_codec_aiokafka_cannot_read_is_left_to_kafka_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = batches(3, codec=LZ4_CODEC)
    assert MemoryRecords(bytes(data)).next_batch().compression_type == LZ4_CODEC
    expected = take_all(Fetcher.PartitionRecords, data)
    compiled = compiled_records._compiled()
    assert compiled is not None
    monkeypatch.setitem(compiled, "codecs", {**compiled["codecs"], LZ4_CODEC: False})
    monkeypatch.setitem(compiled, "batch", None)  # would fail if used

    assert take_all(CompiledPartitionRecords, data) == expected


def test_aiokafka_reads_every_codec_kafka_python_writes() -> None:
    # (Else those batches quietly take kafka-python's slower path.)
    compiled = compiled_records._compiled()
    assert compiled is not None
    assert all(compiled["codecs"].values()), compiled["codecs"]


def test_a_fetch_before_aiokafka_is_imported_is_parsed_by_kafka_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given aiokafka still being imported (a worker's first moments)
    data = batches(2)
    expected = take_all(Fetcher.PartitionRecords, data)
    monkeypatch.setattr(compiled_records, "_loaded", threading.Event())
    monkeypatch.setattr(compiled_records, "_compiled",
                        lambda: pytest.fail("aiokafka used before it was imported"))
    imports: list[bool] = []
    monkeypatch.setattr(compiled_records, "_load_in_background", lambda: imports.append(True))

    # When a fetch is parsed, Then kafka-python parses it, without waiting,
    # and the import is started
    assert take_all(CompiledPartitionRecords, data) == expected
    assert imports
