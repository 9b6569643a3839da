"""The undecodable-records drill: raw bytes that are no Dramatiq message,
produced straight to a queue's topic between good messages.

Every good message must be processed, every bad record must reach the
queue's dead-letter topic (``<queue>.XQ``) with an ``x-dead-letter-reason``
header, and the worker must still be running at the end.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import dramatiq
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bench.drills._common import Context, Result, wait_until
from bench.drills._drain import Drain
from bench.log import say
from bench.runner import kill
from broker import KafkaBroker
from broker.dead_letters import HEADER_PREFIX, header_dict
from broker.topics import dead_letter_name

#: Good messages and bad records in the full drill.
GOOD = 3_000
BAD = 1_000

#: Bad records are produced in this many runs, each after a run of good ones,
#: so they sit between good messages on every partition.
RUNS = 50

#: What the bad records hold, in turn: not UTF-8, not JSON, cut-off JSON,
#: JSON that is no object, an object with no message fields, empty, no value.
BAD_VALUES: tuple[bytes | None, ...] = (
    b"\xff\xfe\x00garbage",
    b"not json at all",
    b'{"queue_name": "cut off',
    b"[1, 2, 3]",
    b"42",
    b"{}",
    b'{"actor_name": "bench_noop"}',
    b"",
    None,
)

#: The reason the broker gives a record it could not decode.
REASON = "undecodable"

#: Longest wait for the worker to drain the queue and dead-letter the rest, in seconds.
FINISH_TIMEOUT_S = 120.0

#: How long reading a dead-letter topic to its end may take, in seconds.
READ_TIMEOUT_S = 30.0


def undecodable(ctx: Context, good: int = GOOD, bad: int = BAD) -> Result:
    drain = Drain(ctx, "undecodable", good, work_ms=0)
    bad_keys = fill_mixed(ctx.bootstrap, drain.queue, good, bad)
    say(f"  {good} good messages and {bad} undecodable records on {drain.queue}")
    xq = dead_letter_name(drain.queue)
    worker = drain.start_worker()
    dead: list[Any] = []
    try:
        finished = drain.wait(good, FINISH_TIMEOUT_S)

        def all_dead_lettered() -> bool:
            dead[:] = read_topic(ctx.bootstrap, xq)
            return len({r.key for r in dead} & bad_keys) >= len(bad_keys)

        wait_until(all_dead_lettered, FINISH_TIMEOUT_S,
                   progress=lambda: f"{len(dead)}/{bad} on {xq}")
        time.sleep(1.0)  # the worker must outlive its last dead letter, not just reach it
        alive = worker.poll() is None
    finally:
        kill(worker)
    verdict = drain.verdict()
    letters = check_dead_letters(dead, bad_keys)
    return {**verdict, "bad": bad, **letters, "worker_alive": alive,
            "ok": (verdict["ok"] and finished is not None and alive
                   and letters["bad_missing"] == letters["other_reason"] == 0
                   and letters["without_reason"] == letters["good_dead_lettered"] == 0),
            "notes": f"{letters['bad_dead_lettered']}/{bad} bad records on .XQ with "
                     f"reason={REASON}; worker {'alive' if alive else 'DEAD'}"}


def fill_mixed(bootstrap: str, queue: str, good: int, bad: int) -> set[bytes]:
    """Good messages ``0..good-1`` (sent by our broker, as the bench peer
    would) with ``bad`` raw records in between; returns the bad records' keys."""
    broker = KafkaBroker(bootstrap_servers=bootstrap, group_id=queue, client_id="drills")
    broker.declare_queue(queue)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    keys: set[bytes] = set()
    try:
        for run in range(RUNS):
            with broker.batch():
                for i in range(good * run // RUNS, good * (run + 1) // RUNS):
                    broker.enqueue(dramatiq.Message(queue_name=queue, actor_name="bench_noop",
                                                    args=(0.0, str(i)), kwargs={}, options={}))
            futures = []
            for j in range(bad * run // RUNS, bad * (run + 1) // RUNS):
                key = f"bad-{j}".encode()
                keys.add(key)
                futures.append(producer.send(queue, value=BAD_VALUES[j % len(BAD_VALUES)],
                                             key=key))
            for future in futures:
                future.get(timeout=30)
    finally:
        producer.close(timeout=10)
        broker.close()
    return keys


def read_topic(bootstrap: str, topic: str, timeout_s: float = READ_TIMEOUT_S) -> list[Any]:
    """Every record on ``topic`` now (no consumer group: nothing is committed)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             group_id=None, client_id="drills-reader")
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            return []
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end in {timeout_s:.0f} s")
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def check_dead_letters(records: list[Any], bad_keys: set[bytes]) -> dict[str, int]:
    """What the dead-letter records say about the bad ones: how many made it
    with the undecodable reason (and how many twice), how many are missing,
    and anything there that should not be (a good message, another reason,
    a letter without a reason)."""
    reasons = Counter(header_dict(r.headers).get(HEADER_PREFIX + "reason") for r in records
                      if r.key in bad_keys)
    lettered = {r.key for r in records if r.key in bad_keys
                and header_dict(r.headers).get(HEADER_PREFIX + "reason") == REASON}
    return {
        "bad_dead_lettered": len(lettered),
        "bad_missing": len(bad_keys - lettered),
        "bad_lettered_twice": reasons[REASON] - len(lettered),
        "other_reason": sum(n for reason, n in reasons.items() if reason not in (REASON, None)),
        "without_reason": sum(1 for r in records
                              if HEADER_PREFIX + "reason" not in header_dict(r.headers)),
        "good_dead_lettered": sum(1 for r in records if r.key not in bad_keys),
    }
