"""What a broker asks of Kafka's admin API, apart from sending and consuming:
making a queue's topics, reading backlogs and offsets, waiting for a queue to
drain (``join``) and emptying it (``flush``).

:class:`QueueAdmin` is handed the admin client it uses (made lazily, once per
process) and the consumer group whose progress it reads; it knows nothing of
Dramatiq beyond the names of a queue's delay and dead-letter topics.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dramatiq.common import dq_name, q_name, xq_name
from dramatiq.errors import ConnectionFailed, QueueJoinTimeout
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka import errors as Errors
from kafka.admin import MemberToRemove, OffsetSpec
from kafka.errors import CoordinatorNotAvailableError, GroupIdNotFoundError, KafkaError

from broker.topics import TopicSpec, create_missing

__all__ = ["JOIN_POLL_INTERVAL_S", "PartitionLag", "QueueAdmin"]

#: How often join() looks at the group's committed offsets.
JOIN_POLL_INTERVAL_S = 0.1

#: How long lag() waits for the oldest unfinished record of each partition.
PEEK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class PartitionLag:
    """How far a group is behind on one partition.

    ``messages`` counts records not yet finished (committed) by the group;
    ``oldest_timestamp_ms`` is the timestamp of the first of them, or None
    when there is none (or it could not be read in time).
    """

    topic: str
    partition: int
    end_offset: int
    #: The group's committed offset, or None when it has committed nothing.
    committed: int | None
    messages: int
    oldest_timestamp_ms: int | None

    def seconds(self, now: float | None = None) -> float:
        """Time lag: the age of the oldest record the group has not finished."""
        if not self.messages or self.oldest_timestamp_ms is None:
            return 0.0
        current = time.time() if now is None else now
        return max(0.0, current - self.oldest_timestamp_ms / 1000)


class QueueAdmin:
    """Topic creation, backlogs, join and flush for the queues of one group.

    ``create_topics``: make a queue's topics (with .DQ/.XQ) on first use, shaped
    ``topic_partitions`` and ``topic_retention_ms``; otherwise they are assumed
    to exist (an operator's reconcile owns them).
    """

    def __init__(self, admin: Callable[[], KafkaAdminClient], *, group_id: str,
                 bootstrap_servers: Sequence[str], create_topics: bool,
                 topic_partitions: int, topic_retention_ms: int,
                 reader: Callable[[], KafkaConsumer] | None = None,
                 denied: Callable[[KafkaError, str], Any] = lambda error, doing: None) -> None:
        self._admin = admin
        self._reader = reader
        self._reader_lock = threading.Lock()
        self.group_id = group_id
        self._where = ",".join(bootstrap_servers)
        self.create_topics = create_topics
        self.topic_partitions = topic_partitions
        self.topic_retention_ms = topic_retention_ms
        # The typed error for a refusal of Kafka's (see broker.access), or None.
        self._denied = denied
        self._ready: set[str] = set()
        self._lock = threading.Lock()

    def ensure_topics(self, topic: str) -> None:
        """Make the topics of ``topic``'s queue if they are missing (and wanted)."""
        canonical = q_name(topic)
        if not self.create_topics:
            return
        with self._lock:
            if canonical in self._ready:
                return
        spec = TopicSpec(canonical, partitions=self.topic_partitions,
                         retention_ms=self.topic_retention_ms)
        try:
            # (Making the admin client can fail too: Kafka unreachable at bootstrap.)
            admin = self._admin()
            existing = set(admin.list_topics())
            create_missing(admin, [s for s in spec.with_companions() if s.name not in existing])
        except KafkaError as e:
            raise self._denied(e, f"creating topics for {canonical!r}") or ConnectionFailed(
                f"can't create topics for {canonical!r} on {self._where}: {e}") from e
        with self._lock:
            self._ready.add(canonical)

    def partitions(self, topic: str) -> list[TopicPartition]:
        """Every partition of ``topic``."""
        self.ensure_topics(topic)
        return [TopicPartition(topic, p["partition_index"])
                for t in self._admin().describe_topics([topic]) for p in t["partitions"]]

    def end_offsets(self, topics: Sequence[str]) -> dict[TopicPartition, int]:
        """The next offset each partition of ``topics`` will write."""
        partitions = [tp for topic in topics for tp in self.partitions(topic)]
        ends = self._admin().list_partition_offsets(
            dict.fromkeys(partitions, OffsetSpec.LATEST))
        return {tp: ends[tp].offset for tp in partitions}

    def backlog(self, topic: str) -> int:
        """Messages on ``topic`` not yet committed by the group."""
        return sum(lag.messages for lag in self.lag([topic], timestamps=False))

    def lag(self, topics: Sequence[str], *, timestamps: bool = True) -> list[PartitionLag]:
        """The group's lag on every partition of ``topics``, read from Kafka's
        committed offsets alone: it is there while every worker is down.

        With ``timestamps`` (and a reader), each lagging partition's first
        unfinished record is fetched for its timestamp (time lag).
        """
        partitions = [tp for topic in topics for tp in self.partitions(topic)]
        admin = self._admin()
        ends = admin.list_partition_offsets(dict.fromkeys(partitions, OffsetSpec.LATEST))
        starts = admin.list_partition_offsets(dict.fromkeys(partitions, OffsetSpec.EARLIEST))
        try:
            committed = admin.list_group_offsets({self.group_id: partitions}).get(
                self.group_id, {})
        except (CoordinatorNotAvailableError, GroupIdNotFoundError):
            committed = {}  # the group has not formed yet: nothing committed
        first_unfinished: dict[TopicPartition, int] = {}
        done: dict[TopicPartition, int | None] = {}
        for tp in partitions:
            meta = committed.get(tp)
            done[tp] = meta.offset if meta is not None and meta.offset >= 0 else None
            # Records flushed (deleted) below the log start count as done.
            first_unfinished[tp] = max(done[tp] or 0, starts[tp].offset)
        lagging = {tp: offset for tp, offset in first_unfinished.items()
                   if ends[tp].offset > offset}
        stamps = self._timestamps(lagging) if timestamps and lagging else {}
        return [PartitionLag(tp.topic, tp.partition, ends[tp].offset, done[tp],
                             max(0, ends[tp].offset - first_unfinished[tp]), stamps.get(tp))
                for tp in partitions]

    def _timestamps(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """The timestamp of the record at each offset (those read in time)."""
        if self._reader is None:
            return {}
        found: dict[TopicPartition, int] = {}
        with self._reader_lock:
            reader = self._reader()
            reader.assign(list(offsets))
            for tp, offset in offsets.items():
                reader.seek(tp, offset)
            deadline = time.monotonic() + PEEK_TIMEOUT_S
            while len(found) < len(offsets) and time.monotonic() < deadline:
                for tp, records in reader.poll(timeout_ms=200).items():
                    if tp not in found and records:
                        found[tp] = records[0].timestamp
                        reader.pause(tp)
            reader.assign([])
        return found

    def join(self, queue_name: str, *, timeout_ms: int | None = None) -> None:
        """Wait until the group has processed and committed every message of
        the queue and its delay queue (raises QueueJoinTimeout)."""
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        topics = (dq_name(queue_name), queue_name)
        while True:
            # Both backlogs read as zero is not enough: a retry written to .DQ
            # (or a due delay written back to the queue) between the two reads
            # would be missed. A message moving between the two topics is always
            # written before its old record is committed, so if neither topic
            # gained a record while both backlogs read zero, nothing is in flight.
            try:
                before = self.end_offsets(topics)
                if all(self.backlog(topic) == 0 for topic in topics) \
                        and self.end_offsets(topics) == before:
                    return
            except KafkaError as e:
                # A Kafka that is restarting answers "not ready" for a while;
                # that is "not done yet", not a reason to give up the wait.
                if not e.retriable:
                    raise
            if deadline is not None and time.monotonic() >= deadline:
                raise QueueJoinTimeout(queue_name)
            time.sleep(JOIN_POLL_INTERVAL_S)

    def remove_static_member(self, instance_id: str) -> None:
        """Take a static member out of the group at once (a clean stop): its
        partitions move to the others now, not after its session."""
        outcomes = self._admin().remove_group_members(
            self.group_id, [MemberToRemove(group_instance_id=instance_id)])
        for error_type in outcomes.values():
            # Unknown: it was gone already (its session ran out).
            if error_type not in (Errors.NoError, Errors.UnknownMemberIdError):
                raise error_type((self.group_id, instance_id))

    def flush(self, queue_name: str) -> None:
        """Discard every message waiting on the queue, its delay and dead-letter topics."""
        for topic in (queue_name, dq_name(queue_name), xq_name(queue_name)):
            ends = self.end_offsets([topic])
            to_delete = {tp: offset for tp, offset in ends.items() if offset > 0}
            if to_delete:
                self._admin().delete_records(to_delete)
