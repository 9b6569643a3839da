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

from dramatiq.common import dq_name, q_name, xq_name
from dramatiq.errors import ConnectionFailed, QueueJoinTimeout
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec
from kafka.errors import CoordinatorNotAvailableError, GroupIdNotFoundError, KafkaError

from broker.topics import TopicSpec, create_missing

__all__ = ["JOIN_POLL_INTERVAL_S", "QueueAdmin"]

#: How often join() looks at the group's committed offsets.
JOIN_POLL_INTERVAL_S = 0.1


class QueueAdmin:
    """Topic creation, backlogs, join and flush for the queues of one group.

    ``create_topics``: make a queue's topics (with .DQ/.XQ) on first use, shaped
    ``topic_partitions`` and ``topic_retention_ms``; otherwise they are assumed
    to exist (an operator's reconcile owns them).
    """

    def __init__(self, admin: Callable[[], KafkaAdminClient], *, group_id: str,
                 bootstrap_servers: Sequence[str], create_topics: bool,
                 topic_partitions: int, topic_retention_ms: int) -> None:
        self._admin = admin
        self.group_id = group_id
        self._where = ",".join(bootstrap_servers)
        self.create_topics = create_topics
        self.topic_partitions = topic_partitions
        self.topic_retention_ms = topic_retention_ms
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
            raise ConnectionFailed(
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
        partitions = self.partitions(topic)
        admin = self._admin()
        ends = admin.list_partition_offsets(dict.fromkeys(partitions, OffsetSpec.LATEST))
        starts = admin.list_partition_offsets(dict.fromkeys(partitions, OffsetSpec.EARLIEST))
        try:
            committed = admin.list_group_offsets({self.group_id: partitions}).get(
                self.group_id, {})
        except (CoordinatorNotAvailableError, GroupIdNotFoundError):
            committed = {}  # the group has not formed yet: nothing committed
        total = 0
        for tp in partitions:
            done = committed.get(tp)
            done_offset = done.offset if done is not None and done.offset >= 0 else 0
            # Records flushed (deleted) below the log start count as done.
            total += max(0, ends[tp].offset - max(done_offset, starts[tp].offset))
        return total

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

    def flush(self, queue_name: str) -> None:
        """Discard every message waiting on the queue, its delay and dead-letter topics."""
        for topic in (queue_name, dq_name(queue_name), xq_name(queue_name)):
            ends = self.end_offsets([topic])
            to_delete = {tp: offset for tp, offset in ends.items() if offset > 0}
            if to_delete:
                self._admin().delete_records(to_delete)
