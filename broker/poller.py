"""One group member per worker process: a poller that fetches for every queue.

A Dramatiq worker starts a consumer per queue (three priority topics and
their ``.DQ`` in the application). As six members of one group they joined
one after another, each join forcing the group into a new generation, and
the first message waited for all of them. Here one :class:`GroupPoller` (one
``KafkaConsumer``, subscribed to every queue the process consumes) is the
process's only member; it files what it fetches into one :class:`QueueFeed`
per queue, from which that queue's Dramatiq consumer hands messages out.

Threading:

* The poller's own thread is the only one that calls the ``KafkaConsumer``
  (it is not thread-safe): poll, commit, pause, resume, seek, subscribe and
  close. Other threads ask through :meth:`GroupPoller._call`, which runs a
  function on the poller's thread and waits for it.
* The rebalance listener runs on kafka-python's IO thread; it only moves
  trackers and buffered records between feeds (under the feed's lock), and
  hands its commit to ``commit_async``, as before.
* The poller's thread also opens each record (the consumer's decoder, see
  :attr:`QueueFeed.decode`) as it files a poll's records, one after another:
  so run, a decompression or decryption cost a fraction of what it did run
  cold on the consumer thread just before the worker took the message.
* Consumer threads take records from their feed; worker threads finish them
  in the message's own :class:`~broker.offsets.PartitionTracker`. Both wake
  waiting consumer threads through the feed's condition.

A queue's feed holds what was fetched for each of its partitions apart, and
its consumer takes them in turns, a record of each partition holding some;
a partition with :data:`PARTITION_READ_AHEAD` records waiting is paused. So
a backlog is worked through side by side, whatever the size of the batches
it was written in (Kafka returns a partition's first batch whole, however
big), and a low-priority backlog never fills what one fetch brings back:
urgent records come through beside it.

Priority bands (``precedence``, most urgent queue first) also order the
poller's work while a less urgent backlog flows. kafka-python hands out a
fetch's records partition after partition, parsing each in Python, and sends
the next fetch only once the last partition's records are being handed out:
an urgent record waited behind hundreds of backlog records (tens of ms on a
busy worker). So each poll that hands out records of a less urgent band is
followed by one with that band and any less urgent paused (see
:meth:`GroupPoller._poll_ahead_of`), and so on up the bands while such a poll
hands out records of a band below the first; a poll's records are filed most
urgent band first.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.errors import KafkaError

from broker._kafka_python_fixes import apply_fixes, know_every_topic
from broker.assignor import TopicBalancedCooperativeAssignor
from broker.offsets import PartitionTracker

__all__ = ["Filed", "GroupPoller", "PollerClosed", "QueueFeed"]

T = TypeVar("T")

#: A record as the poller files it, with what its feed's decoder made of it:
#: the message bytes, the error that says why there are none, or None if
#: the feed had no decoder yet (the consumer then decodes it itself).
Filed = tuple[ConsumerRecord, "bytes | Exception | None"]

#: How often finished offsets are committed while messages keep flowing.
COMMIT_INTERVAL_S = 0.2

#: Longest single wait of the poller's poll: how soon it turns to a close,
#: a new subscription or due commits when nothing arrives.
POLL_WAIT_MS = 100

#: How long close waits for its final commit, and then for leaving the group.
#: A Kafka that has not answered by then is away, and waiting kafka-python's
#: 30 s for each would only stall the worker's shutdown: uncommitted messages
#: are delivered again, and a member that could not leave expires with its session.
CLOSE_TIMEOUT_MS = 5_000

#: How long a consumer thread waits for the poller to carry out its request
#: (attach, detach), in seconds: a poll plus a final commit, with room to spare.
REQUEST_TIMEOUT_S = CLOSE_TIMEOUT_MS / 1000 * 3

#: Most records one poll hands out (kafka-python's ``max_poll_records``).
READ_AHEAD_RECORDS = 500

#: Records of one partition waiting in its queue's feed at which the
#: partition is paused. Records wait there until prefetch has room for them
#: (prefetch bounds what the worker holds, not what is read ahead): fetching
#: only for the one or two slots an ack had just freed made a fetch per
#: message, and a fetch costs more than the message. Pausing a partition
#: that piled up also keeps its backlog out of the fetches every other
#: partition and queue shares, while they go on being fetched: a queue was
#: paused as a whole once, and then a partition whose record batch was big
#: (hundreds of records, returned whole) was worked through alone while the
#: others waited. A feed holds at most this plus one poll per partition.
PARTITION_READ_AHEAD = READ_AHEAD_RECORDS // 2

#: A paused partition is resumed once its records waiting are down to this:
#: pausing and resuming at every ack throttles fetching.
PARTITION_RESUME_BELOW = PARTITION_READ_AHEAD // 2

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

#: Heartbeats every half second, so members notice a rebalance within that
#: (kafka-python's 3 s default made each worker start take 3-6 s), and a
#: session of 10 s, so a crashed worker's partitions move on in seconds, not 45.
#: Longest Kafka holds a fetch waiting for data. kafka-python keeps one fetch
#: in flight per broker: while a busy queue is paused (its buffer full), the
#: idle queues' fetch waits this long at Kafka, and the busy queue, resumed,
#: can't be fetched until it returns. At kafka-python's 500 ms a low queue
#: beside an idle one drained at 1,813 msg/s; at 100 ms, 6,328.
FETCH_MAX_WAIT_MS = 100

#: Longest Kafka holds a fetch that a poll ahead of a less urgent band
#: sends (see :meth:`GroupPoller._poll_ahead_of`): none, since the less
#: urgent band's next fetch can't go out until it is back. Held for
#: FETCH_MAX_WAIT_MS, a low backlog beside an idle high queue drained at
#: some 3,700 msg/s instead of 6,100; a FETCH_MAX_WAIT_MS of 20 ms for every
#: fetch instead took an idle worker from 3 % of a core to 9 %.
URGENT_FETCH_MAX_WAIT_MS = 0

GROUP_TIMING_DEFAULTS = {"heartbeat_interval_ms": 500, "session_timeout_ms": 10_000}


class PollerClosed(Exception):
    """The poller stopped (Kafka failed it, or it was closed): make another."""


class QueueFeed:
    """What the poller fetched for one queue, and that queue's partitions'
    trackers for as long as one consumer is attached to it."""

    _generations = iter(range(1, 1 << 62))

    def __init__(self, queue_name: str) -> None:
        self.queue_name = queue_name
        # Guards everything below; notified when records arrive, an ack
        # makes room, or the poller fails.
        self.changed = threading.Condition()
        self.trackers: dict[TopicPartition, PartitionTracker] = {}
        #: Records handed to the worker and not yet finished: what prefetch
        #: bounds. Kept as a count, since summing the trackers under their
        #: locks at every hand-out cost more than the hand-out; records of
        #: retired trackers count until acked (the worker still runs them).
        self.in_flight = 0
        # Set while the consumer waits for room under prefetch: only then
        # must an ack wake it (a notify per ack was a tenth of the drain's CPU).
        self.room_wanted = False
        #: Records filed and not taken yet, by partition; taken in turns.
        self.buffered: dict[TopicPartition, deque[Filed]] = {}
        # The partitions holding some, in the order their turns come.
        self._turns: deque[TopicPartition] = deque()
        #: Turns a record into message bytes (raising why it can't), set by
        #: the queue's consumer; called on the poller's thread.
        self.decode: Callable[[ConsumerRecord], bytes] | None = None
        self.attached = False
        #: Partitions the poller paused because their records piled up here.
        self.paused: set[TopicPartition] = set()
        # Set when a consumer closed while others stay: the queue's partitions
        # are paused until the next consumer attaches, and are then fetched
        # again from their committed offsets.
        self.rewind = False

    def track(self, partitions: Iterable[TopicPartition]) -> None:
        with self.changed:
            for tp in partitions:
                self.trackers[tp] = PartitionTracker(tp, next(self._generations))

    def file(self, tp: TopicPartition, filed: list[Filed]) -> None:
        """Add records a poll returned for ``tp`` (hold :attr:`changed`)."""
        waiting = self.buffered.get(tp)
        if waiting is None:
            waiting = self.buffered[tp] = deque()
            self._turns.append(tp)
        waiting.extend(filed)

    def waiting(self) -> int:
        """Records filed and not taken yet."""
        with self.changed:
            return sum(len(waiting) for waiting in self.buffered.values())

    def take(self) -> tuple[Filed, PartitionTracker] | None:
        """The next record of a partition still assigned, marked started: each
        partition holding records gives one in turn, so none waits for the
        whole of another's fetch."""
        with self.changed:
            turns = self._turns
            while turns:
                tp = turns[0]
                waiting = self.buffered[tp]
                filed = waiting.popleft()
                if waiting:
                    turns.rotate(-1)
                else:
                    turns.popleft()
                    del self.buffered[tp]
                tracker = self.trackers.get(tp)
                if tracker is not None:
                    tracker.started(filed[0].offset)
                    self.in_flight += 1
                    return filed, tracker
        return None

    def finish(self, tracker: PartitionTracker, offset: int) -> bool:
        """A record :meth:`take` handed out is done; False if its partition
        was reassigned since (see :meth:`PartitionTracker.finish`)."""
        current = tracker.finish(offset)
        with self.changed:
            self.in_flight -= 1
            if self.room_wanted:
                self.room_wanted = False
                self.changed.notify_all()
        return current

    def wait(self, timeout_s: float, *, prefetch: int) -> None:
        """Wait for a record to take (or, while ``prefetch`` records are in
        flight, for an ack), for a failure, or for the timeout."""
        with self.changed:
            # (Checked again under the lock: what came since the caller
            # looked would not wake it.)
            if self.in_flight >= prefetch:
                self.room_wanted = True
            elif self._turns:
                return
            self.changed.wait(timeout_s)

    def notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def retire(self, partitions: Iterable[TopicPartition] | None = None
               ) -> dict[TopicPartition, int]:
        """Stop tracking ``partitions`` (None: all): drop their buffered records,
        keep their unfinished ones counting against prefetch; return their
        final offsets."""
        final = {}
        with self.changed:
            partitions = set(self.trackers if partitions is None else partitions)
            for tp in partitions:
                tracker = self.trackers.pop(tp, None)
                if tracker is None:
                    continue
                offset = tracker.retire()
                if offset is not None:
                    final[tp] = offset
            for tp in partitions:
                if self.buffered.pop(tp, None) is not None:
                    self._turns.remove(tp)
            # (A partition revoked is no longer paused in the consumer either.)
            self.paused -= partitions
        return final


class _RebalanceListener(AsyncConsumerRebalanceListener):
    def __init__(self, poller: GroupPoller) -> None:
        self._poller = poller

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._poller._revoke(set(revoked), commit=True)

    async def on_partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
        # Evicted from the group: a commit would be refused; just let go.
        self._poller._revoke(set(lost), commit=False)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._poller._assign(set(assigned))


class GroupPoller:
    """One group member fetching for the queues attached to it (see the module).

    ``options`` go to kafka-python's KafkaConsumer (on top of this module's
    defaults); ``topics`` are subscribed from the start (the queues a worker
    is about to consume, so the group is joined once with all of them);
    ``leave`` takes a static member out of the group once the poller closes;
    ``precedence`` names the priority bands' queues, most urgent first (each
    band's records are handed out ahead of those of the bands after it;
    queues not named, such as the delay queues, are left alone).
    """

    def __init__(self, options: dict[str, Any], topics: Iterable[str], *,
                 leave: Callable[[], None] | None = None,
                 precedence: Sequence[str] = ()) -> None:
        self.logger = logging.getLogger(f"{__name__}.GroupPoller")
        # A band's place in ``precedence``: 0 is the most urgent.
        self._rank = {name: i for i, name in enumerate(precedence)}
        self._leave = leave
        self._lock = threading.Lock()  # guards _feeds, _assigned, _committed, _failure
        self._feeds: dict[str, QueueFeed] = {}
        self._assigned: set[TopicPartition] = set()
        self._committed: dict[TopicPartition, int] = {}
        self._failure: KafkaError | None = None
        self._stopping = False
        self._requests: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._last_commit = 0.0
        options = {
            **GROUP_TIMING_DEFAULTS,
            "enable_auto_commit": False,
            # Messages enqueued before the group first joined must not be skipped.
            "auto_offset_reset": "earliest",
            # (Both cooperative; the first balances each queue on its own.)
            "partition_assignment_strategy": [TopicBalancedCooperativeAssignor,
                                              CooperativeStickyAssignor],
            "max_poll_records": READ_AHEAD_RECORDS,
            "max_partition_fetch_bytes": PARTITION_FETCH_BYTES,
            "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
            **options,
        }
        for topic in topics:
            self._feeds[topic] = QueueFeed(topic)
        self._fetch_max_wait_ms = options["fetch_max_wait_ms"]
        # Made on the caller's thread, before the poller's starts: from then
        # on only the poller's thread touches it.
        self._consumer = KafkaConsumer(**options)
        self._listener = _RebalanceListener(self)
        try:
            self._consumer.subscribe(sorted(self._feeds), listener=self._listener)
            # (After subscribe(), which resets what metadata the client keeps.)
            apply_fixes(self._consumer)
        except BaseException:
            self._consumer.close(autocommit=False, timeout_ms=0)
            raise
        self._thread = threading.Thread(target=self._run, name="kafka-group-poller",
                                        daemon=True)
        self._thread.start()

    # -- for consumers (any thread) -----------------------------------------

    @property
    def usable(self) -> bool:
        """Whether a consumer may still attach: not failed, not closing."""
        with self._lock:
            return self._failure is None and not self._stopping

    @property
    def alive(self) -> bool:
        """Whether its thread still runs (it may hold the static identity)."""
        return self._thread.is_alive()

    def serves(self, queue_name: str) -> bool:
        """Whether a live consumer of ``queue_name`` is attached already."""
        with self._lock:
            feed = self._feeds.get(queue_name)
            return feed is not None and feed.attached

    def attach(self, queue_name: str) -> QueueFeed:
        """The feed of ``queue_name`` for a new consumer (subscribing to the
        queue's topic if this poller did not fetch it yet)."""
        with self._lock:
            if self._failure is not None or self._stopping:
                raise PollerClosed("the group poller has stopped")
            feed = self._feeds.get(queue_name)
            if feed is not None and not feed.rewind:
                # Subscribed already (no Kafka call, so not on the poller's
                # thread: a worker's consumers attach without waiting for polls).
                if feed.attached:
                    raise ValueError(f"{queue_name!r} has a consumer on this poller already")
                feed.attached = True
                return feed

        def attach_here() -> QueueFeed:
            with self._lock:
                known = queue_name in self._feeds
                feed = self._feeds.setdefault(queue_name, QueueFeed(queue_name))
                if feed.attached:
                    raise ValueError(f"{queue_name!r} has a consumer on this poller already")
                feed.attached = True
            try:
                if feed.rewind:
                    self._rewind(feed)
                if not known:
                    self._consumer.subscribe(sorted(self._feeds), listener=self._listener)
                    # (subscribe() drops it again.)
                    know_every_topic(self._consumer)
            except BaseException:
                feed.attached = False  # the consumer Dramatiq restarts tries again
                raise
            return feed

        return self._call(attach_here)

    def detach(self, feed: QueueFeed) -> None:
        """The consumer of ``feed`` closed: commit what it finished. Its queue's
        unfinished records go to the queue's next consumer (or the partitions'
        next owner). The last consumer to leave closes the poller, and this
        waits until it has left the group."""
        def detach_here() -> None:
            with self._lock:
                if self._feeds.get(feed.queue_name) is not feed:
                    return
                final = feed.retire()
                offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in final.items()
                           if offset > self._committed.get(tp, -1)}
                feed.attached = False
                others = any(f.attached for f in self._feeds.values())
                if others:
                    fresh = self._feeds[feed.queue_name] = QueueFeed(feed.queue_name)
                    fresh.rewind = True
                    partitions = [tp for tp in self._assigned if tp.topic == feed.queue_name]
                else:
                    self._stopping = True
                failed = self._failure is not None
            if others:
                self._consumer.pause(*partitions)
            if not failed:
                self._final_commit(offsets, feed.queue_name)

        try:
            self._call(detach_here)
        except PollerClosed:
            return
        with self._lock:
            stopping = self._stopping
        if stopping:
            self._thread.join(REQUEST_TIMEOUT_S)

    def check(self) -> None:
        """Raise why the poller can't feed its consumers any more, if it can't."""
        with self._lock:
            failure = self._failure
        if failure is not None:
            raise failure
        if not self._thread.is_alive():
            raise PollerClosed("the group poller has stopped")

    # -- the poller's thread ------------------------------------------------

    def _call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the poller's thread and return its result."""
        done = threading.Event()
        outcome: list[tuple[bool, Any]] = []

        def run() -> None:
            try:
                outcome.append((True, function()))
            except Exception as e:
                outcome.append((False, e))
            finally:
                done.set()

        self._requests.put(run)
        deadline = time.monotonic() + REQUEST_TIMEOUT_S
        while not done.wait(0.05):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise PollerClosed("the group poller has stopped")
        ok, value = outcome[0]
        if ok:
            return value  # type: ignore[no-any-return]
        raise value

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._serve_requests()
                if self._stopping:
                    break
                if self._failure is not None:
                    # Consumers raise it and close; wait for their detaches.
                    self._serve_requests(block_s=POLL_WAIT_MS / 1000)
                    continue
                try:
                    self._maybe_commit()
                    self._pause_piled_up_partitions()
                    batches = self._consumer.poll(timeout_ms=POLL_WAIT_MS)
                    self._file(batches)
                    # Each poll pauses one more band at least: one poll per
                    # band at most.
                    band = self._least_urgent(batches)
                    while band > 0:
                        batches = self._poll_ahead_of(band)
                        self._file(batches)
                        band = min(self._least_urgent(batches), band - 1)
                except KafkaError as e:
                    self.logger.warning("Polling Kafka failed; the worker's consumers restart: %s",
                                        e)
                    with self._lock:
                        self._failure = e
                    self._notify_all()
                    continue
        except Exception:
            self.logger.exception("The group poller failed")
        finally:
            with self._lock:
                self._stopping = True
            self._notify_all()
            self._close_consumer()
            # Requests that came too late find the thread gone (PollerClosed).

    def _notify_all(self) -> None:
        with self._lock:
            feeds = list(self._feeds.values())
        for feed in feeds:
            feed.notify()

    def _serve_requests(self, block_s: float = 0.0) -> None:
        try:
            request = self._requests.get(timeout=block_s) if block_s else \
                self._requests.get_nowait()
        except queue.Empty:
            return
        while True:
            request()
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return

    def _least_urgent(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> int:
        """The place in ``precedence`` of the least urgent band a poll handed
        out records of (0 for none, or only the first band's)."""
        return max((self._rank.get(tp.topic, 0) for tp in batches), default=0)

    def _poll_ahead_of(self, band: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Poll once more, at once, with ``band`` and the bands below it
        paused: what kafka-python fetched for the more urgent bands comes out
        ahead of the rest of the paused ones' fetch, and, unless a fetch is in
        flight already, their partitions are fetched again now, not once the
        paused ones' records are all handed out. kafka-python keeps the
        records it fetched for a paused partition until it is resumed
        (KAFKA-7548): nothing is fetched twice. Queues not in ``precedence``
        (the delay queues) are never paused for it."""
        with self._lock:
            assigned = set(self._assigned)
        unpaused = assigned - self._consumer.paused()
        if not any(self._rank.get(tp.topic, band) < band for tp in unpaused):
            return {}  # (the more urgent bands are paused, or none is assigned here)
        behind = [tp for tp in unpaused if self._rank.get(tp.topic, 0) >= band]
        if not behind:
            return {}
        # kafka-python takes each fetch's wait from its fetcher's settings,
        # with no way to pass one for a single poll.
        fetcher_config = self._consumer._fetcher.config
        fetcher_config["fetch_max_wait_ms"] = URGENT_FETCH_MAX_WAIT_MS
        self._consumer.pause(*behind)
        try:
            return self._consumer.poll(timeout_ms=0)
        finally:
            fetcher_config["fetch_max_wait_ms"] = self._fetch_max_wait_ms
            # (Those still assigned: a rebalance may have run in the poll.)
            self._consumer.resume(*(set(behind) & self._consumer.paused()))

    def _file(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Put what a poll returned into the queues' feeds, most urgent band
        first (opening the others' records takes time)."""
        if self._rank and len(batches) > 1:
            batches = dict(sorted(batches.items(), key=lambda item: self._urgency(item[0])))
        for tp, records in batches.items():
            with self._lock:
                feed = self._feeds.get(tp.topic)
            if feed is None:
                continue
            filed = _opened(records, feed.decode)
            with feed.changed:
                if tp in feed.trackers:
                    feed.file(tp, filed)
                    feed.changed.notify_all()

    def _urgency(self, tp: TopicPartition) -> int:
        """A partition's band's place in ``precedence``; queues not named come last."""
        return self._rank.get(tp.topic, len(self._rank))

    def _pause_piled_up_partitions(self) -> None:
        with self._lock:
            feeds = list(self._feeds.values())
            assigned = set(self._assigned)
        for feed in feeds:
            if feed.rewind:
                continue
            with feed.changed:
                piled_up = {tp for tp, waiting in feed.buffered.items()
                            if len(waiting) >= PARTITION_READ_AHEAD} & assigned
                pause = piled_up - feed.paused
                resume = {tp for tp in feed.paused
                          if len(feed.buffered.get(tp, ())) <= PARTITION_RESUME_BELOW}
                feed.paused = (feed.paused | pause) - resume
            if pause:
                self._consumer.pause(*pause)
            if resume:
                self._consumer.resume(*(resume & self._consumer.paused()))

    def _maybe_commit(self) -> None:
        now = time.monotonic()
        if now - self._last_commit < COMMIT_INTERVAL_S:
            return
        self._last_commit = now
        offsets = {}
        with self._lock:
            feeds = list(self._feeds.values())
            committed = dict(self._committed)
        for feed in feeds:
            with feed.changed:
                trackers = list(feed.trackers.items())
            for tp, tracker in trackers:
                offset = tracker.committable()
                if offset is not None and offset > committed.get(tp, -1):
                    offsets[tp] = OffsetAndMetadata(offset, "", -1)
        if offsets:
            self._consumer.commit_async(offsets, callback=self._on_commit)

    def _on_commit(self, offsets: dict[TopicPartition, OffsetAndMetadata], result: Any) -> None:
        if isinstance(result, Exception):
            # Harmless: the next commit carries the same or higher offsets.
            self.logger.warning("Commit failed, will retry: %s", result)
            return
        self._note_committed({tp: meta.offset for tp, meta in offsets.items()})

    def _note_committed(self, offsets: dict[TopicPartition, int]) -> None:
        with self._lock:
            for tp, offset in offsets.items():
                if offset > self._committed.get(tp, -1):
                    self._committed[tp] = offset

    def _final_commit(self, offsets: dict[TopicPartition, OffsetAndMetadata],
                      queue_name: str) -> None:
        if not offsets:
            return
        try:
            self._consumer.commit(offsets, timeout_ms=CLOSE_TIMEOUT_MS)
            self._note_committed({tp: meta.offset for tp, meta in offsets.items()})
        except KafkaError as e:
            self.logger.warning("Final commit of %r failed (its messages will be redelivered):"
                                " %s", queue_name, e)

    def _rewind(self, feed: QueueFeed) -> None:
        """Fetch a queue's partitions again from their committed offsets, for
        its new consumer: what the closed one had not finished goes to it."""
        with self._lock:
            partitions = [tp for tp in self._assigned if tp.topic == feed.queue_name]
            committed = {tp: self._committed.get(tp) for tp in partitions}
        for tp in partitions:
            offset = committed[tp]
            if offset is None:
                offset = self._consumer.committed(tp, timeout_ms=CLOSE_TIMEOUT_MS)
            if offset is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, offset)
        feed.track(partitions)
        with feed.changed:
            feed.rewind = False
            feed.paused = set()
        self._consumer.resume(*partitions)

    def _close_consumer(self) -> None:
        try:
            self._consumer.close(autocommit=False, timeout_ms=CLOSE_TIMEOUT_MS)
        except Exception as e:  # closing what failed may fail again; nothing left to do
            self.logger.warning("Closing the Kafka consumer failed: %s", e)
        if self._leave is not None:
            # A static member does not leave the group by closing: its
            # partitions would wait out its session. Have it removed.
            try:
                self._leave()
            except Exception as e:  # its session will end it instead
                self.logger.warning("Could not take the static member out of the group"
                                    " (it leaves when its session ends): %s", e)

    # -- the rebalance listener (kafka-python's IO thread) --------------------

    def _assign(self, partitions: set[TopicPartition]) -> None:
        with self._lock:
            self._assigned |= partitions
            for tp in partitions:
                self._committed.pop(tp, None)
            feeds = {tp: self._feeds.get(tp.topic) for tp in partitions}
        for tp, feed in feeds.items():
            if feed is None:
                continue
            if feed.rewind:
                # Paused, like its other partitions, until its consumer attaches.
                self._consumer.pause(tp)
            else:
                feed.track([tp])
        self.logger.info("Assigned %s", _describe(partitions))

    def _revoke(self, partitions: set[TopicPartition], *, commit: bool) -> None:
        offsets = {}
        with self._lock:
            self._assigned -= partitions
            feeds = {self._feeds.get(tp.topic) for tp in partitions} - {None}
            committed = dict(self._committed)
            for tp in partitions:
                self._committed.pop(tp, None)
        for feed in feeds:
            assert feed is not None
            for tp, offset in feed.retire(partitions).items():
                if commit and offset > committed.get(tp, -1):
                    offsets[tp] = OffsetAndMetadata(offset, "", -1)
            feed.notify()
        if offsets:
            self._consumer.commit_async(offsets)
        self.logger.info("Revoked %s", _describe(partitions))


def _opened(records: list[ConsumerRecord],
            decode: Callable[[ConsumerRecord], bytes] | None) -> list[Filed]:
    """``records`` with their message bytes, or why each has none: an error is
    kept for the consumer to dead-letter the record with, never raised here
    (one bad record must not stop the poller)."""
    if decode is None:
        return [(record, None) for record in records]
    filed: list[Filed] = []
    for record in records:
        try:
            filed.append((record, decode(record)))
        except Exception as e:
            filed.append((record, e))
    return filed


def _describe(partitions: Iterable[TopicPartition]) -> str:
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return ", ".join(f"{topic} {sorted(numbers)}" for topic, numbers in sorted(by_topic.items()))
