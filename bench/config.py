"""How big each scenario is, for a full run and for ``--quick``.

Sizes are chosen so a full ``make bench`` stays near ten minutes on a
2-core machine. Peers that wait for Kafka on every message (dramatiq-kafka
flushes per send and commits per ack; kombu's Kafka transport does the same)
get smaller counts, which the table shows next to their figures.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Sizes:
    #: Repetitions of every measurement; figures are their median.
    reps: int = 3
    #: Application payload of each message (the actor's string argument),
    #: bytes: with Dramatiq's envelope (ids, names, timestamp) a record comes
    #: to about 230 bytes.
    payload_bytes: int = 16
    #: Worker threads of the one worker process.
    threads: int = 8
    #: Partitions of every Kafka topic, for every Kafka-based system.
    partitions: int = 3
    enqueue_single: int = 1_000
    enqueue_batch: int = 100_000
    drain: int = 20_000
    #: Seconds of steady sending per latency measurement.
    latency_seconds: float = 6.0
    #: Bounds on the messages one latency measurement sends.
    latency_min_count: int = 40
    latency_max_count: int = 6_000
    #: High-priority messages per priority phase, sent at ``priority_rate``.
    priority_count: int = 50
    priority_rate: float = 10.0
    #: Low-priority backlog a phase queues: at least ``priority_backlog``
    #: (the issue's 100k), more where the drain rate says that would run out
    #: before the window closes, up to ``priority_backlog_max`` (also used
    #: when no drain rate is known).
    priority_backlog: int = 100_000
    priority_backlog_max: int = 400_000
    memory: int = 100_000
    #: Notifications per push repetition, one device each: at the ceiling of
    #: 400 pushes/s (8 threads ÷ 20 ms) about ten seconds of pushing.
    push: int = 4_000
    #: The same at 100 ms provider latency and ``push_wide_threads`` in
    #: flight: at that ceiling (2,560/s) about four seconds of pushing.
    push_wide: int = 10_000
    #: Worker threads, so pushes in flight, of the 100 ms push scenario: the
    #: issue's "at least 256 pushes in flight per worker process".
    push_wide_threads: int = 256

    def count(self, name: str, scale: float = 1.0) -> int:
        """The size ``name`` (an int field) times a system's ``scale`` for it."""
        return max(1, int(getattr(self, name) * scale))


FULL = Sizes()

QUICK = replace(
    FULL,
    enqueue_single=300,
    enqueue_batch=5_000,
    drain=5_000,
    latency_seconds=3.0,
    priority_count=20,
    priority_backlog=30_000,
    priority_backlog_max=100_000,
    memory=15_000,
    push=1_000,
    push_wide=3_000,
)
