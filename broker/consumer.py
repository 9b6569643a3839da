"""The Dramatiq consumer of one queue: hands out what the process's group
poller fetched for it (see :mod:`broker.poller`).

Threading, which decides most of this module's shape:

* ``__next__`` (and ``close``) run on Dramatiq's consumer thread. They never
  touch the ``KafkaConsumer`` (it is not thread-safe, and only the poller's
  thread calls it): they take records from the queue's feed, and close asks
  the poller to commit and let go.
* ``ack``/``nack`` run on worker threads. They only record completion in
  the message's own :class:`~broker.offsets.PartitionTracker` (thread-safe);
  the poller turns that into commits. A nack first produces the record to
  the dead-letter topic through the broker's thread-safe producer.

Each message carries its tracker, so an ack that reaches a *newer* consumer
(Dramatiq restarts consumers after a connection error) still lands in the
right place, or is ignored if that assignment is over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import dramatiq
from dramatiq.common import q_name
from dramatiq.errors import ConnectionClosed, DecodeError
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from broker.access import ClientPrincipal
from broker.dead_letters import DeadLetterWriter
from broker.instrumentation import EventListener, RecordDeadLettered
from broker.offsets import PartitionTracker
from broker.payload_codec import UNDECODABLE, PayloadCodec, PayloadDecodeError
from broker.poller import Filed, GroupPoller, PollerClosed, QueueFeed
from broker.record_headers import ACTOR_HEADER
from broker.trace_context import TRACEPARENT, header_value

__all__ = ["KafkaMessageProxy"]

#: Longest single wait inside ``__next__`` for a record or an ack: how soon
#: a failed poller is noticed even if nobody wakes the thread.
MAX_WAIT_S = 0.2


class KafkaMessageProxy(dramatiq.MessageProxy):
    """A message plus where it came from: its record and its partition's tracker."""

    def __init__(self, message: dramatiq.Message, record: ConsumerRecord,
                 tracker: PartitionTracker, feed: QueueFeed) -> None:
        super().__init__(message)
        self._record = record
        self._tracker = tracker
        # The feed it was taken from counts it in flight until it is finished
        # (a restarted consumer has a new feed; the ack still lands here).
        self._feed = feed

    @property
    def kafka_record(self) -> ConsumerRecord:
        return self._record


class _KafkaConsumer(dramatiq.Consumer):
    def __init__(self, queue_name: str, prefetch: int, timeout_ms: int, *,
                 poller: GroupPoller, feed: QueueFeed, principal: ClientPrincipal,
                 dead_letters: DeadLetterWriter, events: EventListener | None = None,
                 payload_codec: PayloadCodec | None = None) -> None:
        """``poller`` fetches for this queue into ``feed``;
        ``principal`` names this consumer's user in the errors for Kafka's
        refusals; ``dead_letters`` writes the records that fail; ``events``
        hears of each dead letter once Kafka has it; ``payload_codec`` turns a
        record's value back into message bytes."""
        self.logger = logging.getLogger(f"{__name__}.{queue_name}")
        self.queue_name = queue_name
        self.prefetch = max(1, prefetch)
        self.timeout_ms = timeout_ms
        self._dead_letters = dead_letters
        self._events = events
        self._payload_codec = payload_codec or PayloadCodec()
        self._principal = principal
        self._poller = poller
        self._feed = feed
        feed.decode = self._decode

    # -- Dramatiq's consumer interface --------------------------------------

    def __next__(self) -> KafkaMessageProxy | None:
        deadline = time.monotonic() + self.timeout_ms / 1000
        feed = self._feed
        try:
            while True:
                self._poller.check()
                if feed.in_flight < self.prefetch:
                    taken = feed.take()
                    if taken is not None:
                        proxy = self._to_message(*taken)
                        if proxy is not None:
                            return proxy
                        continue
                remaining_s = deadline - time.monotonic()
                if remaining_s <= 0:
                    return None
                # Woken by a record for this queue, an ack (when full), or the
                # poller failing.
                feed.wait(min(remaining_s, MAX_WAIT_S), prefetch=self.prefetch)
        except (KafkaError, PollerClosed) as e:
            denied = self._principal.denied(e, f"consuming {self.queue_name!r}") \
                if isinstance(e, KafkaError) else None
            raise denied or ConnectionClosed(
                f"consuming {self.queue_name!r} failed: {e}") from None

    def ack(self, message: dramatiq.MessageProxy) -> None:
        self._finish(message)

    def nack(self, message: dramatiq.MessageProxy) -> None:
        assert isinstance(message, KafkaMessageProxy)
        record = message.kafka_record
        error = message._exception
        self._dead_letter(
            record,
            actor=message.actor_name,
            reason="failed",
            error_type=type(error).__name__ if error else "Failed",
            error_message=str(error) if error else "message failed",
            retries=message.options.get("retries", 0),
        )
        self._finish(message)

    def requeue(self, messages: Iterable[dramatiq.MessageProxy]) -> None:
        # Nothing to do: what isn't committed is delivered again to the group.
        pass

    def close(self) -> None:
        self._poller.detach(self._feed)

    # -- internals -------------------------------------------------------

    def _finish(self, message: dramatiq.MessageProxy) -> None:
        assert isinstance(message, KafkaMessageProxy)
        if not message._feed.finish(message._tracker, message.kafka_record.offset):
            self.logger.debug("Ignoring ack of %s: its partition was reassigned.",
                              message.message_id)

    def _decode(self, record: ConsumerRecord) -> bytes:
        """A record's message bytes (the poller calls it as it files records)."""
        return self._payload_codec.decode(record.topic, record.value, record.headers)

    def _to_message(self, filed: Filed, tracker: PartitionTracker) -> KafkaMessageProxy | None:
        record, body = filed
        try:
            if body is None:  # (filed before this consumer set the feed's decoder)
                body = self._decode(record)
            elif isinstance(body, Exception):
                raise body
            message = dramatiq.Message.decode(body)
        except (PayloadDecodeError, DecodeError) as e:
            reason = e.reason if isinstance(e, PayloadDecodeError) else UNDECODABLE
            self.logger.error("%s record at %s:%d offset %d; dead-lettering it.",
                              reason.capitalize(), record.topic, record.partition, record.offset)
            self._dead_letter(record, actor=header_value(record.headers, ACTOR_HEADER) or "",
                              reason=reason, error_type=type(e).__name__,
                              error_message=str(e.__cause__ or e))
            self._feed.finish(tracker, record.offset)
            return None
        # The topic we read it from is its queue, whatever the producer wrote:
        # Dramatiq routes the ack by queue name.
        if message.queue_name != self.queue_name:
            message = message.copy(queue_name=self.queue_name)
        if TRACEPARENT not in message.options:
            # A producer that wrote the trace context only as a header.
            traceparent = header_value(record.headers, TRACEPARENT)
            if traceparent:
                message.options[TRACEPARENT] = traceparent
        return KafkaMessageProxy(message, record, tracker, self._feed)

    def _dead_letter(self, record: ConsumerRecord, *, actor: str, reason: str,
                     **why: Any) -> None:
        self._dead_letters.write(record, queue_name=self.queue_name, reason=reason, **why)
        if self._events is not None:
            self._events(RecordDeadLettered(q_name(self.queue_name), actor, reason))
