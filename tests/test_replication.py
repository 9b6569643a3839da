"""How a topic's wished replication is fitted to the brokers there are, and
how missing copies are placed (pure logic; tests/test_localkafka_cluster.py
and test_topics_cluster.py run it on a real cluster)."""

from __future__ import annotations

import json

import pytest
from kafka import TopicPartition

from broker.replication import fit, fit_warnings, plan_added_replicas, reassignment_json


@pytest.mark.parametrize(
    ("wished", "brokers", "found", "fitted"),
    [
        # The guide's wish, 3 copies and 2 in sync: one broker may be down.
        ((3, 2), 3, None, (3, 2)),
        ((3, 2), 5, None, (3, 2)),
        # Fewer brokers: fewer copies, and still one broker may be down.
        ((3, 2), 2, None, (2, 1)),
        ((3, 2), 1, None, (1, 1)),
        # A broker down for a while never takes copies away from a topic…
        ((3, 2), 2, 3, (3, 2)),
        # …and copies missing are wished back once brokers are up.
        ((3, 2), 3, 1, (3, 2)),
        # More copies than wished (raised by hand) are not the wish.
        ((3, 2), 5, 4, (3, 2)),
        # A wish with no room for a broker down keeps none.
        ((2, 2), 3, None, (2, 2)),
        ((2, 2), 1, None, (1, 1)),
        # No wish: the cluster's defaults.
        ((None, None), 3, None, (None, None)),
        ((None, 2), 1, None, (None, 2)),
        ((3, None), 1, None, (1, None)),
    ],
)
def test_a_wish_is_fitted_to_the_brokers_there_are(
    wished: tuple[int | None, int | None], brokers: int, found: int | None,
    fitted: tuple[int | None, int | None],
) -> None:
    assert fit(*wished, brokers, found) == fitted


def test_fewer_copies_than_wished_are_one_warning_per_shape() -> None:
    warnings = fit_warnings([
        ("a", 3, 2, 1, 1), ("a.DQ", 3, 2, 1, 1), ("b", 3, 2, 3, 2), ("c", None, None, None, None),
    ], brokers=1)
    assert warnings == [
        "1 broker(s) up, so 2 topic(s) get replication.factor 1 (wished 3) and "
        "min.insync.replicas 1 (wished 2): each message has one copy, lost with that broker's "
        "disk. Reconcile again once more brokers are up to add copies (a, a.DQ)."]


def test_added_copies_keep_the_replicas_and_go_to_the_least_loaded_brokers() -> None:
    # Given a topic with one copy of each partition, on brokers 1, 1 and 2
    partitions = {"t": [
        {"partition_index": 0, "replica_nodes": [1]},
        {"partition_index": 1, "replica_nodes": [1]},
        {"partition_index": 2, "replica_nodes": [2, 3, 4]},
        {"partition_index": 3, "replica_nodes": [2]},
    ]}
    plan = plan_added_replicas(partitions, {"t": 3}, [1, 2, 3, 4])
    # Then each short partition keeps its leader first and gains two brokers,
    # spread over the ones holding least; the full one is left alone
    assert plan == {
        TopicPartition("t", 0): [1, 3, 4],
        TopicPartition("t", 1): [1, 2, 3],
        TopicPartition("t", 3): [2, 1, 4],
    }
    # And kafka-reassign-partitions could carry out the same plan
    assert json.loads(reassignment_json(plan)) == {"version": 1, "partitions": [
        {"topic": "t", "partition": 0, "replicas": [1, 3, 4]},
        {"topic": "t", "partition": 1, "replicas": [1, 2, 3]},
        {"topic": "t", "partition": 3, "replicas": [2, 1, 4]},
    ]}


def test_too_few_brokers_for_the_copies_is_an_error_naming_the_partition() -> None:
    with pytest.raises(ValueError, match="t partition 0 needs 3 replicas; only brokers 1, 2"):
        plan_added_replicas({"t": [{"partition_index": 0, "replica_nodes": [1]}]}, {"t": 3},
                            [1, 2])
