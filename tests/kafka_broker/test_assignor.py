"""The assignment of a group whose members each read every queue: each
topic is balanced on its own, and a partition moves only once given up."""

from __future__ import annotations

from types import SimpleNamespace

from kafka import TopicPartition

from broker.assignor import TopicBalancedCooperativeAssignor

TOPICS = {"work": 4, "work.DQ": 4}


class Cluster:
    def topics(self) -> set[str]:
        return set(TOPICS)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(range(TOPICS[topic])) if topic in TOPICS else None


def member(member_id: str, owned: list[TopicPartition]) -> SimpleNamespace:
    """A member as the leader sees it: its subscription, with what it owns."""
    assignor = TopicBalancedCooperativeAssignor()
    assignor.member_assignment = owned or None
    return SimpleNamespace(member_id=member_id, metadata=assignor.metadata(sorted(TOPICS)))


def assign(*members: SimpleNamespace) -> dict[str, set[TopicPartition]]:
    result = TopicBalancedCooperativeAssignor().assign(Cluster(), list(members))
    return {member_id: {TopicPartition(topic, p) for topic, parts in a.assigned_partitions
                        for p in parts} for member_id, a in result.items()}


def every(topic: str) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in range(TOPICS[topic])]


def count(partitions: set[TopicPartition], topic: str) -> int:
    return sum(tp.topic == topic for tp in partitions)


def test_a_new_member_gets_a_share_of_every_topic_once_the_owner_gave_it_up() -> None:
    # Given one member owning all partitions of a queue and its delay queue
    owned = every("work") + every("work.DQ")

    # When a second member joins, then in the first round the owner keeps
    # half of each topic and nothing it still owns goes to the newcomer
    first = assign(member("a", owned), member("b", []))
    assert count(first["a"], "work") == count(first["a"], "work.DQ") == 2
    assert first["b"] == set()

    # And in the next round the newcomer gets the other half of each topic
    second = assign(member("a", sorted(first["a"])), member("b", []))
    assert second["a"] == first["a"]
    assert count(second["b"], "work") == count(second["b"], "work.DQ") == 2
    assert second["a"] | second["b"] == set(owned)


def test_a_fresh_group_splits_every_topic_evenly() -> None:
    result = assign(member("a", []), member("b", []))
    for partitions in result.values():
        assert count(partitions, "work") == count(partitions, "work.DQ") == 2
