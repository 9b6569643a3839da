"""Compression: bytes on disk and throughput, with and without it, with
encryption off and on, on the guide's notifications.

Each repetition runs every :data:`VARIANTS` in turn on topics of its own,
in this process (a broker with the variant's codec and producer codec): a
``batch()`` of the guide's messages (:func:`willowe_tasks.payload_dictionary.sample_bodies`,
not the other scenarios' 16-byte payload), Kafka's own size of the topic's
log divided by the messages in it, the same for messages sent one by one
(each its own record batch, as a web server's ``send()`` writes them), and
a Dramatiq worker draining the batch. Figures are named
``<variant>_<metric>``; the goals in :mod:`bench.goals` compare the
shipped settings (``*_on``) with compression off (``*_off``).

:mod:`bench.scenarios` imports this module, which then adds its scenario
to ``SCENARIOS`` and its columns to :mod:`bench.report` (it builds on the
classes there, so it can't be imported from there by name).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import dramatiq
from kafka import KafkaAdminClient
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder

from bench import report
from bench.scenarios import SCENARIOS, STALL_S, Context, Outcome, Scenario
from bench.systems import System
from broker import KafkaBroker
from broker.encryption import AesGcmCipher, KeyRing
from broker.payload_codec import PayloadCodec
from broker.record_headers import ACTOR_HEADER, MESSAGE_ID_HEADER
from willowe_tasks import payload_dictionary

__all__ = ["Compression", "VARIANTS", "log_bytes"]

#: Messages per variant in a batch (and drained), full run and --quick.
BATCH_COUNT = 20_000
QUICK_BATCH_COUNT = 5_000

#: Messages sent one by one per variant, to size lone records.
SINGLE_COUNT = 200

#: Longest a variant's drain may take, in seconds.
DRAIN_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Variant:
    key: str
    #: Encrypt bodies (AES-256-GCM) or not.
    encrypted: bool
    #: Compress each body with the shipped dictionary before encryption.
    body: bool
    #: The producers' record batch codec (None: none).
    kafka_codec: str | None
    label: str

    def codec(self) -> PayloadCodec:
        cipher = AesGcmCipher(KeyRing((KeyRing.new_key("bench"),))) if self.encrypted else None
        return PayloadCodec(cipher, payload_dictionary.compressor(), compress=self.body)


#: In run order. Each goal's two variants run back to back (plain_off |
#: plain_on | sealed_on | sealed_off), so the shared machine's drift between
#: them is as small as it can be; every other repetition runs them backwards.
VARIANTS = (
    Variant("plain_off", False, False, None, "plain, no compression"),
    Variant("plain_on", False, False, "lz4", "plain, Kafka lz4 (the defaults: "
                                             "PAYLOAD_COMPRESSION=auto leaves plain bodies)"),
    Variant("sealed_on", True, True, "lz4", "encrypted, body zstd+dictionary first, "
                                            "Kafka lz4 (the defaults)"),
    Variant("sealed_off", True, False, None, "encrypted, no compression"),
    Variant("sealed_kafka", True, False, "lz4", "encrypted, Kafka lz4 only"),
    Variant("plain_zstd", False, False, "zstd", "plain, Kafka zstd"),
    Variant("plain_body", False, True, "lz4", "plain, body zstd+dictionary and Kafka lz4 "
                                              "(PAYLOAD_COMPRESSION=zstd)"),
)

#: Kafka's codec ids (the record batch attributes), for the codec cost table.
CODEC_IDS = {"none": 0, "gzip": 1, "lz4": 3, "zstd": 4}

#: Records per batch in the codec cost table: a lone send's few, a batch()'s many.
COST_BATCH_RECORDS = (10, 200)

#: CPU per message (every thread of this process) moves far less than rates
#: on a machine shared with other work, so both are reported.
_METRICS = {"bytes_per_msg": "B", "single_bytes_per_msg": "B", "batch_rate": "msg/s",
            "drain_rate": "msg/s", "batch_cpu_us": "µs", "drain_cpu_us": "µs"}


class _Acks:
    """Counts processed messages and when the first and last were."""

    def __init__(self) -> None:
        self.count = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._lock = threading.Lock()

    def tick(self) -> None:
        with self._lock:
            now = time.perf_counter()
            self.count += 1
            self.first_at = self.first_at or now
            self.last_at = now


class Compression(Scenario):
    name = "compression"
    units = {f"{v.key}_{metric}": unit for v in VARIANTS for metric, unit in _METRICS.items()}

    def sizes(self, ctx: Context, system: System) -> dict[str, Any]:
        quick = ctx.sizes.drain < BATCH_COUNT
        return {"n": QUICK_BATCH_COUNT if quick else BATCH_COUNT, "single": SINGLE_COUNT}

    def once(self, ctx: Context, system: System, rep: int, sizes: dict[str, Any]
             ) -> tuple[dict[str, Any], str]:
        bodies = list(payload_dictionary.sample_bodies(sizes["n"], seed=1000 + rep))
        row: dict[str, Any] = {}
        # Backwards every other time: a variant that runs first (or last) in
        # each repetition would meet the machine in its own way every time.
        for variant in VARIANTS if rep % 2 == 0 else reversed(VARIANTS):
            name = f"{ctx.name(system, 'cmp', rep)}-{variant.key.replace('_', '-')}"
            figures = measure(ctx, variant, name, bodies, sizes["single"])
            row.update({f"{variant.key}_{k}": v for k, v in figures.items()})
        line = ", ".join(f"{v.key} {row[f'{v.key}_bytes_per_msg']:.0f}"
                         f"|{row[f'{v.key}_single_bytes_per_msg']:.0f} B/msg "
                         f"{row[f'{v.key}_batch_rate']:.0f}/s→{row[f'{v.key}_drain_rate']:.0f}/s"
                         for v in VARIANTS)
        return row, line

    def summarize(self, ctx: Context, system: System, reps: list[dict[str, Any]],
                  sizes: dict[str, Any]) -> Outcome:
        out = super().summarize(ctx, system, reps, sizes)
        out.notes.append("variants: " + "; ".join(f"{v.key} = {v.label}" for v in VARIANTS))
        out.notes.append("the guide's notifications (about 300-byte bodies), "
                         f"{sizes['n']} per batch and drain, {sizes['single']} sent one by one")
        bodies = list(payload_dictionary.sample_bodies(2_000, seed=7))
        for records in COST_BATCH_RECORDS:
            out.notes.append(f"codec cost alone, {records} records a batch (kafka-python's "
                             "batch builder and reader, no Kafka; best of 5): " + "; ".join(
                                 f"{codec} {size:.0f} B/record, +{build:.1f} µs to write, "
                                 f"+{read:.1f} µs to read" for codec, (size, build, read)
                                 in codec_costs(bodies, records).items()))
        return out


def codec_costs(bodies: list[bytes], per_batch: int, reps: int = 5
                ) -> dict[str, tuple[float, float, float]]:
    """Per record, for each Kafka codec: bytes, and the CPU µs it adds to
    writing and reading a batch over no compression. Rates through Kafka on
    a shared machine vary by a third between runs; this is the codec's own
    cost, measured where nothing else moves."""
    headers = [(MESSAGE_ID_HEADER, b"c43c1f36-4cc1-4bf4-a1f2-f8d9f91ab63c"),
               (ACTOR_HEADER, b"send_match")]

    def build(codec_id: int) -> list[bytes]:
        buffers = []
        for start in range(0, len(bodies), per_batch):
            builder = MemoryRecordsBuilder(2, codec_id, 1024 * 1024)
            for body in bodies[start:start + per_batch]:
                builder.append(0, None, body, headers)
            builder.close()
            buffers.append(builder.buffer())
        return buffers

    def read(buffers: list[bytes]) -> None:
        for buffer in buffers:
            records = MemoryRecords(buffer)
            while (batch := records.next_batch()) is not None:
                for _ in batch:
                    pass

    found = {}
    for codec, codec_id in CODEC_IDS.items():
        builds, reads = [], []
        for _ in range(reps):
            cpu = time.process_time()
            buffers = build(codec_id)
            builds.append(time.process_time() - cpu)
            cpu = time.process_time()
            read(buffers)
            reads.append(time.process_time() - cpu)
        found[codec] = (sum(map(len, buffers)) / len(bodies),
                        min(builds) / len(bodies) * 1e6, min(reads) / len(bodies) * 1e6)
    _, build_none, read_none = found.pop("none")
    return {codec: (size, build - build_none, read - read_none)
            for codec, (size, build, read) in found.items()}


def measure(ctx: Context, variant: Variant, name: str, bodies: list[bytes],
            single: int) -> dict[str, float]:
    """One variant: batch rate, bytes on disk per message (batch and single
    sends), and a worker's drain rate."""
    messages = [dramatiq.Message.decode(body).copy(queue_name=name) for body in bodies]
    # Single sends go through a broker of their own, which no worker drains.
    singles = f"{name}-single"
    lone = _broker(ctx, variant, singles)
    try:
        lone.declare_queue(singles)
        for message in messages[:single]:
            lone.enqueue(message.copy(queue_name=singles))
    finally:
        lone.close()
    broker = _broker(ctx, variant, name)
    acks = _Acks()
    try:
        def processed(*args: Any, **kwargs: Any) -> None:
            acks.tick()

        for actor_name in sorted({m.actor_name for m in messages}):
            dramatiq.actor(actor_name=actor_name, queue_name=name, broker=broker)(processed)
        broker.queue_admin.ensure_topics(name)
        start, cpu_start = time.perf_counter(), time.process_time()
        with broker.batch():
            for message in messages:
                broker.enqueue(message)
        batch_rate = len(messages) / (time.perf_counter() - start)
        batch_cpu_s = time.process_time() - cpu_start
        sizes = log_bytes(ctx.bootstrap, [name, singles])
        cpu_start = time.process_time()
        drain_rate = _drain(broker, acks, len(messages), ctx.sizes.threads)
        drain_cpu_s = time.process_time() - cpu_start
    finally:
        broker.close()
    return {"bytes_per_msg": sizes[name] / len(messages),
            "single_bytes_per_msg": sizes[singles] / single,
            "batch_rate": batch_rate, "drain_rate": drain_rate,
            "batch_cpu_us": batch_cpu_s / len(messages) * 1e6,
            "drain_cpu_us": drain_cpu_s / len(messages) * 1e6}


def _broker(ctx: Context, variant: Variant, name: str) -> KafkaBroker:
    return KafkaBroker(bootstrap_servers=ctx.bootstrap, group_id=name, client_id="bench",
                       topic_partitions=ctx.sizes.partitions, payload_codec=variant.codec(),
                       producer_options={"compression_type": variant.kafka_codec})


def _drain(broker: KafkaBroker, acks: _Acks, n: int, threads: int) -> float:
    """Messages/s from the first processed message to the last: the steady
    rate (joining the group costs every variant the same)."""
    worker = dramatiq.Worker(broker, worker_threads=threads)
    worker.start()
    try:
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        seen, seen_at = 0, time.monotonic()
        while acks.count < n and time.monotonic() < deadline:
            time.sleep(0.05)
            if acks.count != seen:
                seen, seen_at = acks.count, time.monotonic()
            elif seen and time.monotonic() - seen_at > STALL_S:
                break
    finally:
        worker.stop()
    if acks.count < n or acks.first_at is None or acks.last_at is None:
        raise RuntimeError(f"the drain stalled at {acks.count} of {n} messages")
    return (acks.count - 1) / max(acks.last_at - acks.first_at, 1e-6)


def log_bytes(bootstrap: str, topics: list[str]) -> dict[str, int]:
    """Each topic's size on disk as Kafka reports it (its log segments, every
    partition, record batch headers included)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-sizes")
    try:
        found = dict.fromkeys(topics, 0)
        for broker in admin.describe_log_dirs(topics):
            for log_dir in broker["log_dirs"]:
                for topic in log_dir["topics"]:
                    if topic["name"] in found:
                        found[topic["name"]] += sum(p["partition_size"]
                                                    for p in topic["partitions"])
        return found
    finally:
        admin.close()


SCENARIOS[Compression.name] = Compression()
report.TITLES[Compression.name] = (
    "Compression: bytes on disk per message, batch | single sends (rates: see the goals)")
report.COLUMNS[Compression.name] = [
    (v.key, f"{v.key}_{metric}") for v in VARIANTS
    for metric in ("bytes_per_msg", "single_bytes_per_msg")]
