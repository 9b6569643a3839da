"""Dead letters as the operator tools see them: read from the ``.XQ`` topics,
described from their ``x-dead-letter-*`` headers (:mod:`broker.dead_letters`)
and their Dramatiq body, and filtered.

A dead letter's *cause* is its reason header and the exception together
(``failed: NotificationFailed``, ``failed: Retry`` for exhausted retries,
``undecodable: DecodeError``): the broker's reason alone says only that a
message failed, and the exception says how.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dramatiq.common import xq_name
from kafka import KafkaConsumer, TopicPartition

from broker.dead_letters import HEADER_PREFIX, dead_letter_body, header_dict
from broker.payload_codec import PayloadCodec, PayloadDecodeError
from willowe_tasks.ops.deadlines import deadline_of
from willowe_tasks.ops.redact import redact_arguments, redact_text

__all__ = ["REPLAYS_OPTION", "REPLAY_COUNT_HEADER", "DeadLetter", "DeadLetterReadTimeout",
           "DeadLetterReader", "Selection", "parse_dead_letter"]

#: Header of a replayed copy: how many times the message has been replayed.
REPLAY_COUNT_HEADER = "x-replay-count"

#: The same count inside the message's options. Headers are lost when a
#: retry goes through ``.DQ`` (the broker writes a retry's headers afresh);
#: options travel with the message wherever it goes.
REPLAYS_OPTION = "replays"

#: How long a read of the dead letters may go without receiving anything
#: before it gives up (Kafka answers a fetch in well under a second).
READ_STALL_TIMEOUT_S = 30.0

#: Longest wait of one poll while reading.
POLL_TIMEOUT_MS = 500


class DeadLetterReadTimeout(RuntimeError):
    """Kafka stopped handing over a ``.XQ``'s records before its end."""


@dataclass(frozen=True)
class DeadLetter:
    """One record of a ``.XQ`` topic. Its bytes are kept for a replay but
    left out of the repr."""

    topic: str
    partition: int
    offset: int
    #: When it was dead-lettered, unix seconds.
    dead_at: float
    reason: str
    exception: str
    #: The error text, with anything token-like replaced by its hash.
    error: str
    retries: int | None
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    actor: str | None
    message_id: str | None
    #: When the message was first sent, unix seconds.
    sent_at: float | None
    replays: int
    #: When the worker would drop it as stale, unix seconds (None: never).
    deadline: float | None
    message: Mapping[str, Any] | None = field(repr=False, compare=False)
    value: bytes = field(repr=False, compare=False)
    key: bytes | None = field(repr=False, compare=False)
    headers: tuple[tuple[str, bytes], ...] = field(repr=False, compare=False)

    @property
    def cause(self) -> str:
        return f"{self.reason}: {self.exception}"

    @property
    def where(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def source(self) -> str:
        if self.source_topic is None:
            return "?"
        return f"{self.source_topic}:{self.source_partition}:{self.source_offset}"

    def age_s(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.dead_at)

    def expired(self, now: float | None = None) -> bool:
        return self.deadline is not None and (time.time() if now is None else now) >= self.deadline

    def payload(self, token_positions: Mapping[str, tuple[int, ...]]) -> Any:
        """The message's arguments, device tokens hashed (or, for a record that
        can't be decoded, the start of its bytes)."""
        if self.message is None:
            return redact_text(self.value[:200].decode("utf-8", "replace"))
        return {"args": redact_arguments(self.actor, self.message.get("args", []),
                                         token_positions),
                "kwargs": redact_arguments(None, self.message.get("kwargs", {}),
                                           token_positions)}

    def summary(self, now: float | None = None) -> dict[str, Any]:
        """What ``dlq list --json`` prints: everything but the payload."""
        return {
            "where": self.where, "dead_at": round(self.dead_at, 3),
            "age_s": round(self.age_s(now), 1), "reason": self.reason,
            "exception": self.exception, "error": self.error, "retries": self.retries,
            "source": self.source, "actor": self.actor, "message_id": self.message_id,
            "replays": self.replays, "deadline": self.deadline,
            "expired": self.expired(now),
        }


def parse_dead_letter(topic: str, partition: int, offset: int, timestamp_ms: int,
                      key: bytes | None, value: bytes | None,
                      headers: Sequence[tuple[str, bytes]] | None,
                      codec: PayloadCodec | None = None) -> DeadLetter:
    """A dead letter from a ``.XQ`` record's parts. An encrypted one is opened
    with ``codec``'s keys (as on its source topic); without them it stays
    sealed, and can't be shown or replayed."""
    raw_headers = tuple(headers or ())
    found = header_dict(raw_headers)

    def why(name: str) -> str | None:
        return found.get(HEADER_PREFIX + name)

    body = value or b""
    if codec is not None:
        with contextlib.suppress(PayloadDecodeError):
            body = dead_letter_body(codec, body, raw_headers)
    message = _decode(body)
    options = message.get("options", {}) if message else {}
    dead_ms = _int(why("time-ms"))
    sent_ms = message.get("message_timestamp") if message else None
    replays = max(_int(found.get(REPLAY_COUNT_HEADER)) or 0,
                  _int(options.get(REPLAYS_OPTION) if isinstance(options, dict) else None) or 0)
    return DeadLetter(
        topic=topic, partition=partition, offset=offset,
        dead_at=(dead_ms if dead_ms is not None else timestamp_ms) / 1000,
        reason=why("reason") or "unknown", exception=why("exception") or "unknown",
        error=redact_text(why("error") or ""), retries=_int(why("retries")),
        source_topic=why("source-topic"), source_partition=_int(why("source-partition")),
        source_offset=_int(why("source-offset")),
        actor=(message.get("actor_name") if message else None) or found.get("dramatiq-actor"),
        message_id=(message.get("message_id") if message else None)
        or found.get("dramatiq-message-id"),
        sent_at=sent_ms / 1000 if isinstance(sent_ms, int | float) else None,
        replays=replays, deadline=deadline_of(message) if message else None,
        message=message, value=body, key=key, headers=raw_headers,
    )


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command acts on. ``topics`` are priority topics
    (their ``.XQ`` is read); ``reason`` matches the reason, the exception or
    the whole cause, ignoring case; ``since`` is unix seconds."""

    topics: tuple[str, ...]
    reason: str | None = None
    actor: str | None = None
    since: float | None = None
    limit: int | None = None

    def matches(self, letter: DeadLetter) -> bool:
        if self.reason is not None:
            wanted = self.reason.strip().lower()
            if wanted not in (letter.reason.lower(), letter.exception.lower(),
                              letter.cause.lower()):
                return False
        if self.actor is not None and letter.actor != self.actor:
            return False
        return self.since is None or letter.dead_at >= self.since

    def pick(self, letters: Iterable[DeadLetter]) -> list[DeadLetter]:
        """The matching letters, oldest first, at most ``limit`` of them."""
        chosen = sorted((d for d in letters if self.matches(d)),
                        key=lambda d: (d.dead_at, d.topic, d.partition, d.offset))
        return chosen if self.limit is None else chosen[:self.limit]

    def describe(self) -> dict[str, Any]:
        """The filters, for the audit log."""
        return {"topics": list(self.topics), "reason": self.reason, "actor": self.actor,
                "since": None if self.since is None else time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since)),
                "limit": self.limit}


class DeadLetterReader:
    """Reads every record of the ``.XQ`` of some topics, from its first
    offset to the end it had when the read began.

    ``consumer`` makes the group-less consumer it reads with (once); reads
    take turns, since a KafkaConsumer is not thread-safe.
    """

    def __init__(self, consumer: Callable[[], KafkaConsumer],
                 codec: PayloadCodec | None = None) -> None:
        self._consumer = consumer
        self._codec = codec
        self._lock = threading.Lock()

    def offsets(self, topics: Sequence[str]
                ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """First and end offsets of each partition of the topics' ``.XQ``."""
        with self._lock:
            return self._offsets(self._consumer(), topics)

    @staticmethod
    def _offsets(consumer: KafkaConsumer, topics: Sequence[str]
                 ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        partitions = [TopicPartition(xq_name(topic), p) for topic in topics
                      for p in sorted(consumer.partitions_for_topic(xq_name(topic)) or ())]
        return consumer.beginning_offsets(partitions), consumer.end_offsets(partitions)

    def waiting(self, topics: Sequence[str]) -> dict[str, int]:
        """Records on each topic's ``.XQ`` (end − first offset), read from offsets alone."""
        starts, ends = self.offsets(topics)
        counts = {xq_name(topic): 0 for topic in topics}
        for tp, end in ends.items():
            counts[tp.topic] += max(0, end - starts[tp])
        return counts

    def read(self, topics: Sequence[str]) -> list[DeadLetter]:
        """Every dead letter of the topics' ``.XQ``, in no particular order."""
        with self._lock:
            return self._read(self._consumer(), topics)

    def _read(self, consumer: KafkaConsumer, topics: Sequence[str]) -> list[DeadLetter]:
        starts, ends = self._offsets(consumer, topics)
        wanted = {tp: end for tp, end in ends.items() if end > starts[tp]}
        letters: list[DeadLetter] = []
        if not wanted:
            return letters
        consumer.assign(list(wanted))
        try:
            for tp in wanted:
                consumer.seek(tp, starts[tp])
            last_progress = time.monotonic()
            while wanted:
                if time.monotonic() - last_progress > READ_STALL_TIMEOUT_S:
                    raise DeadLetterReadTimeout(
                        f"Kafka handed over no record of {sorted(tp.topic for tp in wanted)}"
                        f" for {READ_STALL_TIMEOUT_S:.0f} s before their end")
                for tp, records in consumer.poll(timeout_ms=POLL_TIMEOUT_MS).items():
                    end = wanted.get(tp)
                    if end is None:
                        continue
                    last_progress = time.monotonic()
                    for r in records:
                        if r.offset < end:
                            letters.append(parse_dead_letter(
                                r.topic, r.partition, r.offset, r.timestamp, r.key, r.value,
                                r.headers, self._codec))
                    if consumer.position(tp) >= end:
                        del wanted[tp]
                        consumer.pause(tp)
        finally:
            consumer.assign([])
        return letters


def _decode(body: bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(body)
    except ValueError:
        return None
    return message if isinstance(message, dict) and "message_id" in message else None


def _int(text: object) -> int | None:
    try:
        return int(text)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError):
        return None
