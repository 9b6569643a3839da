"""Which offsets of a partition are safe to commit.

Kafka keeps one committed offset per partition: everything below it counts
as done. Worker threads finish messages in any order, so the commit may only
advance to the lowest offset still in progress. A :class:`PartitionTracker`
knows that offset; one is made each time a partition is assigned to a
consumer, and is *retired* when the partition is revoked or the consumer
closes, after which late acks of its messages are ignored (the partition's
new owner will deliver them again).
"""

from __future__ import annotations

import threading
from collections import deque

from kafka import TopicPartition

__all__ = ["PartitionTracker"]


class PartitionTracker:
    """Offsets handed out from one partition during one assignment.

    ``started`` runs on the consumer thread; ``finish`` on any thread.
    """

    def __init__(self, partition: TopicPartition, generation: int) -> None:
        self.partition = partition
        #: Which assignment of the partition this is (stale acks carry an older one).
        self.generation = generation
        self._lock = threading.Lock()
        self._pending: deque[int] = deque()  # handed out, in offset order
        self._finished: set[int] = set()  # finished but not yet at the head
        self._next_commit: int | None = None  # offset after the contiguous done prefix
        self._retired = False

    def started(self, offset: int) -> None:
        """A record at ``offset`` was handed to the application."""
        with self._lock:
            if self._pending and offset <= self._pending[-1]:
                raise ValueError(
                    f"{self.partition}: offset {offset} handed out after {self._pending[-1]}"
                )
            self._pending.append(offset)

    def finish(self, offset: int) -> bool:
        """The record at ``offset`` is done (processed, or dead-lettered).

        Returns False when the tracker is retired: the ack no longer moves the
        commit, but the record stops counting as in progress (the worker was
        busy with it until now, and prefetch must see that).
        """
        with self._lock:
            if self._pending and offset >= self._pending[0]:  # else: a duplicate ack
                self._finished.add(offset)
                while self._pending and self._pending[0] in self._finished:
                    done = self._pending.popleft()
                    self._finished.discard(done)
                    if not self._retired:
                        self._next_commit = done + 1
            return not self._retired

    def committable(self) -> int | None:
        """The offset to commit (the next record to read), or None if nothing
        finished since the assignment."""
        with self._lock:
            return self._next_commit

    @property
    def in_progress(self) -> int:
        """How many records are handed out and not yet finished."""
        with self._lock:
            return len(self._pending) - len(self._finished)

    def retire(self) -> int | None:
        """Stop accepting acks; return the final committable offset."""
        with self._lock:
            self._retired = True
            return self._next_commit

    @property
    def retired(self) -> bool:
        with self._lock:
            return self._retired
