"""Deleting old dead letters: everything on a ``.XQ`` dead-lettered before a time.

Kafka deletes a partition's records only from its start up to an offset
(``DeleteRecords``), so a purge finds, per partition, the first record at or
after the time (``ListOffsets`` by timestamp: "the earliest offset whose
timestamp is greater than or equal to the given timestamp") and deletes what
lies before it. A dead letter's record timestamp is when the broker wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dramatiq.common import xq_name
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec

__all__ = ["PurgePlan", "plan_purge", "purge"]


@dataclass(frozen=True)
class PurgePlan:
    """Per partition of one ``.XQ``: its first offset and the offset a purge
    deletes up to (exclusive)."""

    topic: str
    before: float
    ranges: dict[TopicPartition, tuple[int, int]]

    @property
    def count(self) -> int:
        return sum(max(0, cut - start) for start, cut in self.ranges.values())


def plan_purge(admin: KafkaAdminClient, topic: str, before: float) -> PurgePlan:
    """What purging the ``.XQ`` of ``topic`` (a priority topic) before ``before``
    (unix seconds) would delete. Changes nothing."""
    xq = xq_name(topic)
    partitions = [TopicPartition(xq, p["partition_index"])
                  for t in admin.describe_topics([xq]) for p in t["partitions"]]
    starts = admin.list_partition_offsets(dict.fromkeys(partitions, OffsetSpec.EARLIEST))
    ends = admin.list_partition_offsets(dict.fromkeys(partitions, OffsetSpec.LATEST))
    # A bare integer is a timestamp in ms (kafka-python's list_partition_offsets).
    at = admin.list_partition_offsets(dict.fromkeys(partitions, max(0, int(before * 1000))))
    ranges = {}
    for tp in partitions:
        # -1: no record at or after the time, so every record is older.
        cut = ends[tp].offset if at[tp].offset < 0 else at[tp].offset
        ranges[tp] = (starts[tp].offset, max(starts[tp].offset, cut))
    return PurgePlan(xq, before, ranges)


def purge(admin: KafkaAdminClient, plan: PurgePlan) -> int:
    """Delete what ``plan`` counted; returns how many records went."""
    cuts = {tp: cut for tp, (start, cut) in plan.ranges.items() if cut > start}
    if cuts:
        admin.delete_records(cuts)
    return plan.count
