"""The Dramatiq consumer of one Kafka topic.

Threading, which decides most of this module's shape:

* ``__next__`` (and ``close``) run on Dramatiq's consumer thread, the only
  thread that touches the ``KafkaConsumer`` (it is not thread-safe).
* ``ack``/``nack`` run on worker threads. They only record completion in
  the message's own :class:`~broker.offsets.PartitionTracker` (thread-safe);
  the consumer thread turns that into commits. A nack first produces the
  record to the dead-letter topic through the broker's thread-safe producer.
* The rebalance listener runs on kafka-python's IO thread; it commits what
  is finished of the revoked partitions, retires their trackers (so late
  acks are ignored: the new owner will redeliver those records) and drops
  their buffered records.

Each message carries its tracker, so an ack that reaches a *newer* consumer
(Dramatiq restarts consumers after a connection error) still lands in the
right place, or is ignored if that assignment is over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import dramatiq
from dramatiq.common import q_name
from dramatiq.errors import ConnectionClosed, DecodeError
from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.errors import KafkaError

from broker._kafka_python_fixes import apply_fixes
from broker.access import ClientPrincipal
from broker.dead_letters import DeadLetterWriter
from broker.instrumentation import EventListener, RecordDeadLettered
from broker.offsets import PartitionTracker
from broker.payload_codec import UNDECODABLE, PayloadCodec, PayloadDecodeError
from broker.trace_context import TRACEPARENT, header_value

__all__ = ["KafkaMessageProxy"]

#: How often finished offsets are committed while messages keep flowing.
COMMIT_INTERVAL_S = 0.2

#: Longest single wait inside ``__next__``, so commits and rebalances keep moving.
MAX_POLL_WAIT_MS = 200

#: How long close() waits for its final commit, and then for leaving the group.
#: A Kafka that has not answered by then is away, and waiting kafka-python's
#: 30 s for each would only stall the worker's shutdown: uncommitted messages
#: are delivered again, and a member that could not leave expires with its session.
CLOSE_TIMEOUT_MS = 5_000

#: How long each poll waits while prefetch is full (all partitions paused):
#: how soon a finished message makes room for the next fetch.
PAUSED_POLL_MS = 10

#: How long a consumer may sit at full prefetch before it pauses its
#: partitions. A busy worker is full most of the time and frees a slot every
#: few milliseconds; pausing and resuming at that pace throttles fetching
#: (kafka-python hands a resumed partition's parked records back one partition
#: at a time and sleeps retry_backoff_ms when nothing is fetchable). Under this
#: bound it waits for an ack instead, which also keeps poll()'s group duties
#: (heartbeat thread aside) at most this far behind.
PAUSE_AFTER_FULL_S = 1.0

#: Longest wait for an ack while briefly full.
ROOM_WAIT_S = 0.05

#: Most records one poll fetches. Records wait in the consumer's buffer until
#: prefetch has room for them (prefetch bounds what the worker holds, not what
#: is read ahead): polling only for the one or two slots an ack had just
#: freed made a poll per message, and a poll costs more than the message.
READ_AHEAD_RECORDS = 500

#: Most bytes one fetch takes of each partition (kafka-python's default: 1 MiB).
#: kafka-python hands out a fetch's records one partition after another and
#: fetches again only once they are nearly all out, so this sets how far one
#: partition runs ahead of the others. At 1 MiB (some 4,000 of our records,
#: ten seconds and more of pushes) a worker drained a backlog partition by
#: partition: messages on the other partitions waited behind, and a worker
#: added to share the backlog could be given only drained partitions while the
#: first kept the rest. 64 KiB (a couple of hundred records) keeps every
#: partition moving. None stalls on a batch larger than this: Kafka returns it
#: whole when it comes first in a fetch ("If the first record batch in the
#: first non-empty partition of the fetch is larger than this limit, the batch
#: will still be returned"), and both Kafka's fetch sessions and kafka-python
#: move the partitions that returned data to the back.
PARTITION_FETCH_BYTES = 64 * 1024

#: Longest a consumer working through its read-ahead goes without polling.
#: Group duties (joining a rebalance, giving partitions up) happen only
#: inside poll(): with slow actors a full buffer could otherwise keep a new
#: member waiting for its partitions until the buffer ran dry.
MAX_POLL_GAP_S = 0.1

#: Heartbeats every half second, so members notice a rebalance within that
#: (kafka-python's 3 s default made each worker start take 3-6 s), and a
#: session of 10 s, so a crashed worker's partitions move on in seconds, not 45.
GROUP_TIMING_DEFAULTS = {"heartbeat_interval_ms": 500, "session_timeout_ms": 10_000}


class KafkaMessageProxy(dramatiq.MessageProxy):
    """A message plus where it came from: its record and its partition's tracker."""

    def __init__(self, message: dramatiq.Message, record: ConsumerRecord,
                 tracker: PartitionTracker) -> None:
        super().__init__(message)
        self._record = record
        self._tracker = tracker

    @property
    def kafka_record(self) -> ConsumerRecord:
        return self._record


class _RebalanceListener(AsyncConsumerRebalanceListener):
    def __init__(self, consumer: _KafkaConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._consumer._revoke(set(revoked), commit=True)

    async def on_partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
        # Evicted from the group: a commit would be refused; just let go.
        self._consumer._revoke(set(lost), commit=False)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._consumer._assign(set(assigned))


class _KafkaConsumer(dramatiq.Consumer):
    _generations = iter(range(1, 1 << 62))

    def __init__(self, queue_name: str, prefetch: int, timeout_ms: int, *,
                 consumer_options: dict[str, Any], dead_letters: DeadLetterWriter,
                 leave: Callable[[], None] | None = None,
                 events: EventListener | None = None,
                 payload_codec: PayloadCodec | None = None) -> None:
        """``consumer_options`` go to kafka-python's KafkaConsumer as they are
        (bootstrap servers, group and client ids, static membership, security),
        on top of this module's defaults; ``dead_letters`` writes the records
        that fail; ``leave`` takes a static member out of the group on close;
        ``events`` hears of each dead letter once Kafka has it;
        ``payload_codec`` turns a record's value back into message bytes."""
        self.logger = logging.getLogger(f"{__name__}.{queue_name}")
        self.queue_name = queue_name
        self.prefetch = max(1, prefetch)
        self.timeout_ms = timeout_ms
        self._lock = threading.Lock()  # guards _trackers and _buffer (IO thread vs ours)
        self._trackers: dict[TopicPartition, PartitionTracker] = {}
        # Retired trackers whose records the worker still runs: they count
        # against prefetch until acked, though their acks commit nothing.
        self._draining: list[PartitionTracker] = []
        self._buffer: deque[ConsumerRecord] = deque()
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        self._last_poll = 0.0
        self._paused = False
        self._full_since: float | None = None
        self._room = threading.Event()  # set by acks: maybe room under prefetch now
        self._dead_letters = dead_letters
        self._leave = leave
        self._events = events
        self._payload_codec = payload_codec or PayloadCodec()
        options = {
            **GROUP_TIMING_DEFAULTS,
            "enable_auto_commit": False,
            # Messages enqueued before the group first joined must not be skipped.
            "auto_offset_reset": "earliest",
            "partition_assignment_strategy": [CooperativeStickyAssignor],
            "max_poll_records": READ_AHEAD_RECORDS,
            "max_partition_fetch_bytes": PARTITION_FETCH_BYTES,
            **consumer_options,
        }
        # Names this consumer's user in the errors for Kafka's refusals.
        self._principal = ClientPrincipal.of(options.get("bootstrap_servers", ()), options)
        try:
            self._consumer = KafkaConsumer(**options)
            self._consumer.subscribe([queue_name], listener=_RebalanceListener(self))
            # (After subscribe(), which resets what metadata the client keeps.)
            apply_fixes(self._consumer)
        except KafkaError as e:
            raise self._principal.denied(e, f"consuming {queue_name!r}") or ConnectionClosed(
                f"can't consume {queue_name!r} from {options.get('bootstrap_servers')}: {e}"
            ) from None

    # -- Dramatiq's consumer interface --------------------------------------

    def __next__(self) -> KafkaMessageProxy | None:
        deadline = time.monotonic() + self.timeout_ms / 1000
        try:
            while True:
                self._maybe_commit()
                room = self.prefetch - self._in_flight()
                if room > 0:
                    self._full_since = None
                    if self._buffer and time.monotonic() - self._last_poll >= MAX_POLL_GAP_S:
                        # (A waiting poll, however short: see the full case below.)
                        self._poll(PAUSED_POLL_MS)
                    buffered = self._next_buffered()
                    if buffered is not None:
                        proxy = self._to_message(*buffered)
                        if proxy is not None:
                            return proxy
                        continue
                remaining_ms = int((deadline - time.monotonic()) * 1000)
                if room <= 0 and self._briefly_full():
                    if remaining_ms <= 0:
                        return None
                    self._wait_for_room(remaining_ms)
                    continue
                if room <= 0:
                    # Full: stop fetching but keep polling, or the group drops us.
                    # The poll must *wait* (not timeout_ms=0 plus a sleep out
                    # here): kafka-python finishes a rebalance only inside a
                    # poll that is waiting when the join completes, so a full
                    # consumer polling with 0 would never get through one.
                    self._set_paused(True)
                    if remaining_ms <= 0:
                        return None
                    # (Nothing comes back from paused partitions; kept if it did.)
                    self._poll(max(1, min(remaining_ms, PAUSED_POLL_MS)))
                    continue
                # Room, and nothing buffered: fetch.
                self._set_paused(False)
                batches = self._poll(max(0, min(remaining_ms, MAX_POLL_WAIT_MS)))
                if not batches and remaining_ms <= 0:
                    return None
        except KafkaError as e:
            raise self._principal.denied(e, f"consuming {self.queue_name!r}") \
                or ConnectionClosed(f"consuming {self.queue_name!r} failed: {e}") from None

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
        try:
            offsets = {}
            with self._lock:
                for tp, tracker in self._trackers.items():
                    offset = tracker.retire()
                    if offset is not None and offset > self._committed.get(tp, -1):
                        offsets[tp] = OffsetAndMetadata(offset, "", -1)
                self._trackers.clear()
                self._buffer.clear()
            if offsets:
                self._consumer.commit(offsets, timeout_ms=CLOSE_TIMEOUT_MS)
        except KafkaError as e:
            self.logger.warning("Final commit of %r failed (its messages will be redelivered): %s",
                                self.queue_name, e)
        finally:
            self._consumer.close(autocommit=False, timeout_ms=CLOSE_TIMEOUT_MS)
            if self._leave is not None:
                # A static member does not leave the group by closing: its
                # partitions would wait out its session. Have it removed.
                try:
                    self._leave()
                except Exception as e:  # its session will end it instead
                    self.logger.warning("Could not take %r's static member out of the group"
                                        " (it leaves when its session ends): %s",
                                        self.queue_name, e)

    # -- internals -------------------------------------------------------

    def _briefly_full(self) -> bool:
        """Whether prefetch has been full for under PAUSE_AFTER_FULL_S (and the
        partitions are not paused yet): then wait for an ack, don't pause."""
        now = time.monotonic()
        if self._full_since is None:
            self._full_since = now
        return not self._paused and now - self._full_since < PAUSE_AFTER_FULL_S

    def _wait_for_room(self, remaining_ms: int) -> None:
        self._room.clear()
        if self.prefetch - self._in_flight() <= 0:  # no ack slipped in before clear()
            self._room.wait(min(remaining_ms / 1000, ROOM_WAIT_S))

    def _finish(self, message: dramatiq.MessageProxy) -> None:
        assert isinstance(message, KafkaMessageProxy)
        if not message._tracker.finish(message.kafka_record.offset):
            self.logger.debug("Ignoring ack of %s: its partition was reassigned.",
                              message.message_id)
        self._room.set()

    def _in_flight(self) -> int:
        """Messages handed to the worker and not yet acked: what prefetch bounds."""
        with self._lock:
            self._draining = [t for t in self._draining if t.in_progress > 0]
            return (sum(t.in_progress for t in self._trackers.values())
                    + sum(t.in_progress for t in self._draining))

    def _next_buffered(self) -> tuple[ConsumerRecord, PartitionTracker] | None:
        with self._lock:
            while self._buffer:
                record = self._buffer.popleft()
                tracker = self._trackers.get(TopicPartition(record.topic, record.partition))
                if tracker is not None:
                    tracker.started(record.offset)
                    return record, tracker
        return None

    def _poll(self, timeout_ms: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Poll (group duties included) and buffer what comes back, keeping the
        buffer within READ_AHEAD_RECORDS."""
        batches = self._consumer.poll(
            timeout_ms=timeout_ms, max_records=max(1, READ_AHEAD_RECORDS - len(self._buffer)))
        # Counted from the poll's end: from its start, a poll that waited for
        # the record it returned would already look overdue, and that record
        # would wait out another poll before reaching the worker.
        self._last_poll = time.monotonic()
        self._buffer_records(batches)
        return batches

    def _buffer_records(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        with self._lock:
            for tp, records in batches.items():
                if tp in self._trackers:
                    self._buffer.extend(records)

    def _to_message(
        self, record: ConsumerRecord, tracker: PartitionTracker
    ) -> KafkaMessageProxy | None:
        try:
            body = self._payload_codec.decode(record.topic, record.value, record.headers)
            message = dramatiq.Message.decode(body)
        except (PayloadDecodeError, DecodeError) as e:
            reason = e.reason if isinstance(e, PayloadDecodeError) else UNDECODABLE
            self.logger.error("%s record at %s:%d offset %d; dead-lettering it.",
                              reason.capitalize(), record.topic, record.partition, record.offset)
            self._dead_letter(record, actor=header_value(record.headers, "dramatiq-actor") or "",
                              reason=reason, error_type=type(e).__name__,
                              error_message=str(e.__cause__ or e))
            tracker.finish(record.offset)
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
        return KafkaMessageProxy(message, record, tracker)

    def _dead_letter(self, record: ConsumerRecord, *, actor: str, reason: str,
                     **why: Any) -> None:
        self._dead_letters.write(record, queue_name=self.queue_name, reason=reason, **why)
        if self._events is not None:
            self._events(RecordDeadLettered(q_name(self.queue_name), actor, reason))

    def _maybe_commit(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_commit < COMMIT_INTERVAL_S:
            return
        self._last_commit = now
        offsets = {}
        with self._lock:
            for tp, tracker in self._trackers.items():
                offset = tracker.committable()
                if offset is not None and offset > self._committed.get(tp, -1):
                    offsets[tp] = OffsetAndMetadata(offset, "", -1)
        if offsets:
            self._consumer.commit_async(offsets, callback=self._on_commit)

    def _on_commit(self, offsets: dict[TopicPartition, OffsetAndMetadata], result: Any) -> None:
        if isinstance(result, Exception):
            # Harmless: the next commit carries the same or higher offsets.
            self.logger.warning("Commit on %r failed, will retry: %s", self.queue_name, result)
            return
        with self._lock:
            for tp, meta in offsets.items():
                if meta.offset > self._committed.get(tp, -1):
                    self._committed[tp] = meta.offset

    def _set_paused(self, paused: bool) -> None:
        if paused == self._paused:
            return
        assigned = self._consumer.assignment()
        if paused:
            self._consumer.pause(*assigned)
        else:
            self._consumer.resume(*self._consumer.paused())
        self._paused = paused

    def _assign(self, partitions: set[TopicPartition]) -> None:
        with self._lock:
            for tp in partitions:
                self._trackers[tp] = PartitionTracker(tp, next(self._generations))
                self._committed.pop(tp, None)
            if self._paused:
                self._consumer.pause(*partitions)
        self.logger.info("Assigned %s", sorted(tp.partition for tp in partitions))

    def _revoke(self, partitions: set[TopicPartition], *, commit: bool) -> None:
        offsets = {}
        with self._lock:
            for tp in partitions:
                tracker = self._trackers.pop(tp, None)
                if tracker is None:
                    continue
                offset = tracker.retire()
                if commit and offset is not None and offset > self._committed.get(tp, -1):
                    offsets[tp] = OffsetAndMetadata(offset, "", -1)
                self._committed.pop(tp, None)
                self._draining.append(tracker)
            self._buffer = deque(
                r for r in self._buffer if TopicPartition(r.topic, r.partition) not in partitions
            )
        if offsets:
            self._consumer.commit_async(offsets)
        self.logger.info("Revoked %s", sorted(tp.partition for tp in partitions))
