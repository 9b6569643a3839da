"""kafka-python's consumer, reading record batches with aiokafka's compiled
parser.

kafka-python parses every record in pure Python
(``Fetcher.PartitionRecords._unpack_records`` over
``kafka.record.default_records``): in profiles of a worker draining a
backlog that was the largest single cost (18-21 % of samples), and the
poller thread parsing a fetch of low-priority records held the GIL while a
high-priority record waited. aiokafka ships the same parser in Cython
(``aiokafka.record._crecords``), several times faster per record.

:func:`parse_records_in_c` gives one consumer's fetcher a
:class:`CompiledPartitionRecords`, a subclass of kafka-python's own
``PartitionRecords``: kafka-python still splits a fetch into batches, checks
each batch's CRC, skips control batches, records the leader epoch, skips
records below the fetch offset and moves ``next_fetch_offset`` past the last
batch; only the records of a v2 batch are read by the compiled parser.
Legacy (magic 0/1) batches, read_committed consumers (aborted transactions)
and consumers with deserializers keep kafka-python's path whole.

Why ``_unpack_records`` is replaced rather than given adapted batches:
kafka-python's loop asks each record for ``validate_crc()`` and
``size_in_bytes``, which aiokafka's compiled records lack, so every record
would need a Python wrapper. Measured on 500 records of 200 B with two
headers: kafka-python 7.6 µs a record, adapted batches through its loop
2.2 µs, this loop 1.4 µs. A plain consumer reading lz4 batches of 161-byte
records from Kafka: 8.6 -> 2.5 µs of CPU a record.
The one difference: ``bytes_read`` of the fetch metrics counts whole batches
(aiokafka does not say a record's size), not each record's bytes.

Seen with kafka-python 3.0.12 and aiokafka 0.14.0.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import threading
from collections.abc import Iterator
from typing import Any

import kafka.errors as errors
from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord, Fetcher
from kafka.protocol.consumer import IsolationLevel

__all__ = ["CompiledPartitionRecords", "parse_records_in_c"]

logger = logging.getLogger(__name__)

#: The v2 batch format (KIP-98); older ones have no compiled reader here.
RECORD_BATCH_MAGIC_V2 = 2


@functools.cache
def _compiled() -> dict[str, Any] | None:
    """aiokafka's compiled batch class, its codec checks and errors, or None
    when aiokafka (or its compiled extension) is not installed.

    Not imported with this module: ``import aiokafka.…`` runs aiokafka's
    package ``__init__`` (its asyncio client, about 75 ms and 6 MiB), which a
    process that only sends should not pay; see :func:`_load_in_background`.
    """
    try:
        records = importlib.import_module("aiokafka.record._crecords.default_records")
        codec = importlib.import_module("aiokafka.codec")
        aioerrors = importlib.import_module("aiokafka.errors")
    except ImportError as error:
        logger.warning("aiokafka's compiled record parser is not available (%s); "
                       "records are parsed by kafka-python.", error)
        return None
    batch = records.DefaultRecordBatch
    # aiokafka decompresses with cramjam (its lz4, zstd and snappy extras); a
    # codec it has no library for stays with kafka-python.
    return {
        "batch": batch,
        "codecs": {batch.CODEC_NONE: True, batch.CODEC_GZIP: codec.has_gzip(),
                   batch.CODEC_SNAPPY: codec.has_snappy(), batch.CODEC_LZ4: codec.has_lz4(),
                   batch.CODEC_ZSTD: codec.has_zstd()},
        "corrupt": aioerrors.CorruptRecordException,
        "unsupported": aioerrors.UnsupportedCodecError,
    }


#: Set once :func:`_compiled` has an answer; until then fetches are parsed
#: by kafka-python.
_loaded = threading.Event()
_loader_lock = threading.Lock()
_loader: list[threading.Thread] = []


def _load() -> None:
    try:
        _compiled()
    finally:
        _loaded.set()


def _load_in_background() -> None:
    """Import aiokafka on a thread of its own, once per process.

    Imported before the consumer's first fetch, it held back a worker's
    first message by 40-65 ms (bench startup and drain, first ack), also
    when imported on a thread while the group was joined (the import is CPU
    under the GIL). Started by the first fetch, it runs while that fetch's
    records are worked on, which kafka-python parses.
    """
    with _loader_lock:
        if not _loader:
            _loader.append(threading.Thread(target=_load, name="aiokafka-import", daemon=True))
            _loader[0].start()


class CompiledPartitionRecords(Fetcher.PartitionRecords):  # type: ignore[misc]
    """kafka-python's ``PartitionRecords``, its v2 records read in C."""

    def _unpack_records(self, tp: Any, records: Any, key_deserializer: Any,
                        value_deserializer: Any) -> Iterator[ConsumerRecord]:
        if not _loaded.is_set():
            _load_in_background()
        compiled = _compiled() if _loaded.is_set() else None
        if compiled is None or key_deserializer is not None or value_deserializer is not None \
                or self.isolation_level != IsolationLevel.READ_UNCOMMITTED:
            yield from super()._unpack_records(tp, records, key_deserializer, value_deserializer)
            return
        compiled_batch, codecs = compiled["batch"], compiled["codecs"]
        topic, partition = tp.topic, tp.partition
        batch = records.next_batch()
        last_batch = None
        while batch is not None:
            last_batch = batch
            if self.check_crcs and not batch.validate_crc():
                raise errors.CorruptRecordError(
                    f"Record batch for partition {tp} at offset {batch.base_offset} "
                    "failed crc check")
            if batch.magic != RECORD_BATCH_MAGIC_V2 or not codecs.get(batch.compression_type):
                # Legacy format or a codec aiokafka cannot read: records and
                # their checks as kafka-python reads them.
                source, check_each = batch, self.check_crcs
                if batch.magic == RECORD_BATCH_MAGIC_V2:
                    self.leader_epoch = batch.leader_epoch
            elif batch.is_control_batch:
                self.leader_epoch = batch.leader_epoch
                self.next_fetch_offset = batch.next_offset
                batch = records.next_batch()
                continue
            else:
                self.leader_epoch = batch.leader_epoch
                # (kafka-python's batch keeps its bytes in _buffer, a copy.)
                source, check_each = compiled_batch(batch._buffer), False
                self.bytes_read += batch.size_in_bytes
            leader_epoch = self.leader_epoch
            try:
                for record in source:
                    if check_each and not record.validate_crc():
                        raise errors.CorruptRecordError(
                            f"Record for partition {tp} at offset {record.offset} "
                            "failed crc check")
                    key, value, headers = record.key, record.value, record.headers
                    header_size = -1
                    if headers:
                        header_size = 0
                        for header_key, header_value in headers:
                            header_size += len(header_key.encode("utf-8"))
                            if header_value is not None:
                                header_size += len(header_value)
                    offset = record.offset
                    self.records_read += 1
                    if source is batch:
                        self.bytes_read += record.size_in_bytes
                    self.next_fetch_offset = offset + 1
                    yield ConsumerRecord(
                        topic, partition, leader_epoch, offset, record.timestamp,
                        record.timestamp_type, key, value, headers, record.checksum,
                        len(key) if key is not None else -1,
                        len(value) if value is not None else -1, header_size)
            except compiled["corrupt"] as error:
                raise errors.CorruptRecordError(
                    f"Record batch for partition {tp} at offset {batch.base_offset}: "
                    f"{error}") from None
            except compiled["unsupported"] as error:
                raise errors.UnsupportedCodecError(str(error)) from None
            batch = records.next_batch()
        # As kafka-python: a v2 batch keeps its last offset even when
        # compaction removed its last record, so the next fetch starts after it.
        if last_batch is not None and last_batch.magic == RECORD_BATCH_MAGIC_V2:
            self.next_fetch_offset = last_batch.next_offset
        self.drain()


def parse_records_in_c(consumer: KafkaConsumer) -> bool:
    """Make ``consumer``'s fetcher read records with aiokafka's compiled
    parser; False (nothing changed) when aiokafka is missing or the fetcher
    no longer makes its ``PartitionRecords`` as expected.

    It can go once kafka-python parses records in C itself.
    """
    fetcher: Any = getattr(consumer, "_fetcher", None)
    upstream = Fetcher.PartitionRecords
    if getattr(fetcher, "PartitionRecords", None) is not upstream \
            or not hasattr(upstream, "_unpack_records") \
            or importlib.util.find_spec("aiokafka") is None:
        return False
    fetcher.PartitionRecords = CompiledPartitionRecords
    return True
