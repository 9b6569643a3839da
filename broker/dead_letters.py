"""What a dead letter carries besides the original bytes: why it died.

Records on ``<queue>.XQ`` keep the value and headers they had on their
source topic, plus ``x-dead-letter-*`` headers that say why, so an operator
can read the reason with ``kafka-console-consumer --property print.headers=true``
and a tool can send the record back to its source unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from dramatiq.common import q_name, xq_name

from broker.payload_codec import PayloadCodec

__all__ = ["HEADER_PREFIX", "DeadLetterWriter", "dead_letter_body", "dead_letter_headers",
           "header_dict"]

#: Prefix of the headers the broker adds to a dead letter.
HEADER_PREFIX = "x-dead-letter-"

#: Longest error message kept in a header; a traceback belongs in logs.
MAX_REASON_CHARS = 2000

Headers = list[tuple[str, bytes]]


def dead_letter_headers(
    original: Sequence[tuple[str, bytes]] | None,
    *,
    reason: str,
    error_type: str,
    error_message: str,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    retries: int | None = None,
) -> Headers:
    """The original headers (minus any earlier dead-letter ones) plus ours."""
    kept = [(k, v) for k, v in (original or ()) if not k.startswith(HEADER_PREFIX)]
    added = {
        "reason": reason,
        "exception": error_type,
        "error": error_message[:MAX_REASON_CHARS],
        "source-topic": source_topic,
        "source-partition": str(source_partition),
        "source-offset": str(source_offset),
        "time-ms": str(int(time.time() * 1000)),
    }
    if retries is not None:
        added["retries"] = str(retries)
    return kept + [(HEADER_PREFIX + k, v.encode("utf-8", "replace")) for k, v in added.items()]


def header_dict(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    """Headers as text, for tests and tools (the last value of a key wins)."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in (headers or ())}


class Record(Protocol):
    """What a dead letter is made of: a consumed record's place and bytes."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]] | None


#: Sends one record and returns once Kafka has it: (topic, value, key, headers).
SendAndWait = Callable[[str, bytes, "bytes | None", Headers], None]


class DeadLetterWriter:
    """Writes a record that failed (or can't be decoded) to its queue's ``.XQ``,
    with the original bytes and headers saying why, and returns only once Kafka
    has it: its offset may be marked done after that, not before."""

    def __init__(self, send_and_wait: SendAndWait) -> None:
        self._send_and_wait = send_and_wait

    def write(self, record: Record, *, queue_name: str, reason: str, error_type: str,
              error_message: str, retries: int | None = None) -> None:
        headers = dead_letter_headers(
            record.headers, source_topic=record.topic, source_partition=record.partition,
            source_offset=record.offset, reason=reason, error_type=error_type,
            error_message=error_message, retries=retries,
        )
        self._send_and_wait(xq_name(q_name(queue_name)), record.value, record.key, headers)


def dead_letter_body(codec: PayloadCodec, value: bytes,
                     headers: Sequence[tuple[str, bytes]] | None) -> bytes:
    """The message bytes of a dead letter, opened as on its source topic
    (an encrypted one needs the codec's keys): for tools that show one."""
    source_topic = header_dict(headers).get(HEADER_PREFIX + "source-topic", "")
    return codec.decode(source_topic, value, headers)
