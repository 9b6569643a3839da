"""Partition assignment that balances each topic on its own.

A worker process is one group member for all its queues (see
:mod:`broker.poller`). Kafka's sticky assignors balance the *number* of
partitions per member across all topics together: with a queue of four
partitions and its delay queue of four, a second worker could be given the
four delay partitions (all but idle) while the first kept all the work.
Balancing topic by topic gives every worker its share of every queue, as
when each queue had a member of its own. Stickiness and the cooperative
protocol's two rounds (a partition moves only once its owner gave it up)
are kafka-python's CooperativeStickyAssignor's, run once per topic.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from kafka import TopicPartition
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.coordinator.assignors.sticky.sticky_assignor import (
    StickyAssignmentExecutor,
    StickyAssignorMemberMetadataV1,
)
from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment

__all__ = ["TopicBalancedCooperativeAssignor"]


class TopicBalancedCooperativeAssignor(CooperativeStickyAssignor):
    """The cooperative sticky assignment, computed for each topic apart.

    Its own protocol name, so a group mixing it with members that offer only
    ``cooperative-sticky`` (older workers, listed second) agrees on that one."""

    name = "cooperative-sticky-per-topic"

    def assign(self, cluster: Any, members: Any) -> dict[str, ConsumerProtocolAssignment]:
        parsed = {member.member_id: self.parse_member_metadata(member.metadata)
                  for member in members}
        final: dict[str, dict[str, list[int]]] = {member_id: defaultdict(list)
                                                  for member_id in parsed}
        topics = sorted({topic for meta in parsed.values() for topic in meta.subscription})
        for topic in topics:
            # Only this topic's subscribers and owners: the executor then
            # balances this topic's partitions among them alone.
            members_of_topic = {
                member_id: StickyAssignorMemberMetadataV1(
                    partitions=[tp for tp in meta.partitions if tp.topic == topic],
                    generation=meta.generation,
                    subscription=[topic] if topic in meta.subscription else [])
                for member_id, meta in parsed.items()
                if topic in meta.subscription or any(tp.topic == topic for tp in meta.partitions)}
            executor = StickyAssignmentExecutor(cluster, members_of_topic)
            executor.perform_initial_assignment()
            executor.balance()
            for member_id in members_of_topic:
                for assigned_topic, partitions in executor.get_final_assignment(member_id):
                    final[member_id][assigned_topic].extend(partitions)

        # Cooperative: a partition another member owns now is left out of its
        # new owner's assignment this round; its owner revokes it, rejoins,
        # and the next round hands it over.
        owner = {tp: member_id for member_id, meta in parsed.items() for tp in meta.partitions}
        assignment = {}
        for member_id, by_topic in final.items():
            kept = sorted(
                (topic, sorted(p for p in partitions
                               if owner.get(TopicPartition(topic, p), member_id) == member_id))
                for topic, partitions in by_topic.items())
            assignment[member_id] = ConsumerProtocolAssignment(
                self.version, [(topic, parts) for topic, parts in kept if parts], b"")
        return assignment
