"""How many copies of a topic a cluster keeps: a spec's wish fitted to the
brokers there are, and the partition reassignment that adds missing copies.

A spec wishes for a replication factor and a ``min.insync.replicas`` (3 and
2: every record on three brokers, and an ``acks=all`` write stored on two
before it is acknowledged, so one broker may be down while writes go on).
A cluster with fewer brokers cannot place that many copies, so
:func:`fit` lowers the wish to what the cluster can do:

- the replication factor to the brokers registered (and unfenced), but never
  below the copies a topic already has (a broker that is down for a while
  must not make reconcile drop replicas);
- ``min.insync.replicas`` so that as many brokers may be down as the wish
  allowed (replication factor − min.insync.replicas), never below 1 and
  never above the wish. On one broker that is 1. (Kafka 4.1's leaders ask
  for no more in-sync copies than a partition has, Partition.effectiveMinIsr,
  so a larger value would refuse nothing; it would only mislead whoever
  reads the config.)

Adding copies to an existing topic is a partition reassignment (KIP-455,
Kafka ≥ 2.4): :func:`plan_added_replicas` keeps each partition's replicas,
the preferred leader first, and adds the least loaded other brokers.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kafka import KafkaAdminClient, TopicPartition
from kafka.errors import KafkaError

__all__ = [
    "ReplicasNotAdded",
    "add_replicas",
    "fit",
    "fit_warnings",
    "live_brokers",
    "plan_added_replicas",
    "reassignment_json",
    "replicas_of",
    "wait_reassigned",
]

logger = logging.getLogger(__name__)

#: How often wait_reassigned asks the controller, in seconds.
REASSIGNMENT_POLL_S = 0.5


def fit(wished_replicas: int | None, wished_min_insync: int | None, brokers: int,
        found_replicas: int | None = None) -> tuple[int | None, int | None]:
    """The replication factor and ``min.insync.replicas`` a topic gets on a
    cluster of ``brokers`` live brokers, for a topic that has
    ``found_replicas`` copies now (None: it doesn't exist yet).

    A wish of None stays None: the cluster's default.
    """
    if wished_replicas is None:
        return None, wished_min_insync
    replicas = min(wished_replicas, max(1, brokers))
    if found_replicas is not None:
        replicas = max(replicas, min(found_replicas, wished_replicas))
    if wished_min_insync is None:
        return replicas, None
    room = wished_replicas - wished_min_insync
    return replicas, max(1, min(wished_min_insync, replicas - room))


class ReplicasNotAdded(Exception):
    """Kafka refused a reassignment, or there are too few brokers for it;
    the message says how to add the replicas by hand."""


def fit_warnings(
    topics: Sequence[tuple[str, int | None, int | None, int | None, int | None]], brokers: int,
) -> list[str]:
    """One line for each way :func:`fit` lowered a wish, from
    ``(name, wished replicas, wished min ISR, fitted replicas, fitted min ISR)``."""
    lowered: dict[tuple[int | None, ...], list[str]] = {}
    for name, wished_replicas, wished_min, replicas, min_insync in topics:
        if replicas is not None and wished_replicas is not None and replicas < wished_replicas:
            lowered.setdefault((replicas, wished_replicas, min_insync, wished_min), []).append(name)
    warnings = []
    for (replicas, wished_replicas, min_insync, wished_min), names in lowered.items():
        what = f"replication.factor {replicas} (wished {wished_replicas})"
        if min_insync != wished_min:
            what += f" and min.insync.replicas {min_insync} (wished {wished_min})"
        cost = ("each message has one copy, lost with that broker's disk" if replicas == 1
                else f"each message has {replicas} copies")
        shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
        warnings.append(f"{brokers} broker(s) up, so {len(names)} topic(s) get {what}: {cost}. "
                        f"Reconcile again once more brokers are up to add copies ({shown}).")
    return warnings


def replicas_of(partitions: Sequence[Mapping[str, Any]]) -> int:
    """A topic's replication factor (``describe_topics``' partitions): that of
    its partition with the fewest copies."""
    return min(len(p["replica_nodes"]) for p in partitions)


def live_brokers(admin: KafkaAdminClient) -> list[int]:
    """The ids of the brokers the cluster has registered and not fenced."""
    brokers: list[dict[str, Any]] = admin.describe_cluster()["brokers"]
    return sorted(b["broker_id"] for b in brokers if not b.get("is_fenced"))


def plan_added_replicas(
    partitions: Mapping[str, Sequence[Mapping[str, Any]]], replicas: Mapping[str, int],
    brokers: Sequence[int],
) -> dict[TopicPartition, list[int]]:
    """New replica lists for the partitions (``describe_topics``' entries, by
    topic) that have fewer than ``replicas[topic]`` copies: their current
    replicas in order, then the brokers holding the fewest replicas of these
    topics so far. Raises ValueError when there aren't enough brokers."""
    load: Counter[int] = Counter({b: 0 for b in brokers})
    for described in partitions.values():
        for p in described:
            load.update(p["replica_nodes"])
    plan: dict[TopicPartition, list[int]] = {}
    for topic, described in partitions.items():
        wanted = replicas[topic]
        for p in sorted(described, key=lambda p: p["partition_index"]):
            current = list(p["replica_nodes"])
            if len(current) >= wanted:
                continue
            spare = sorted((b for b in brokers if b not in current), key=lambda b: (load[b], b))
            if len(current) + len(spare) < wanted:
                raise ValueError(f"{topic} partition {p['partition_index']} needs {wanted} "
                                 f"replicas; only brokers {', '.join(map(str, brokers))} are up")
            added = spare[:wanted - len(current)]
            load.update(added)
            plan[TopicPartition(topic, p["partition_index"])] = current + added
    return plan


def reassignment_json(plan: Mapping[TopicPartition, Sequence[int]]) -> str:
    """The plan in the format ``kafka-reassign-partitions
    --reassignment-json-file`` reads, to carry it out by hand."""
    return json.dumps({"version": 1, "partitions": [
        {"topic": tp.topic, "partition": tp.partition, "replicas": list(replicas)}
        for tp, replicas in sorted(plan.items())
    ]})


def wait_reassigned(admin: KafkaAdminClient, partitions: Iterable[TopicPartition],
                    timeout_s: float) -> set[TopicPartition]:
    """Wait until none of ``partitions`` is being reassigned any more (its new
    replicas have caught up); return those still moving after ``timeout_s``."""
    partitions = list(partitions)
    deadline = time.monotonic() + timeout_s
    while True:
        moving = set(admin.list_partition_reassignments(partitions)) & set(partitions)
        if not moving or time.monotonic() >= deadline:
            return moving
        time.sleep(REASSIGNMENT_POLL_S)


def add_replicas(admin: KafkaAdminClient, partitions: Mapping[str, Sequence[Mapping[str, Any]]],
                 replicas: Mapping[str, int], brokers: Sequence[int], *, timeout_ms: int,
                 wait_s: float) -> None:
    """Reassign the partitions short of ``replicas[topic]`` copies, and wait
    up to ``wait_s`` for the new replicas to catch up (Kafka goes on after
    that by itself). Raises :class:`ReplicasNotAdded` saying how to do it by
    hand when Kafka refuses."""
    try:
        moves = plan_added_replicas(partitions, replicas, brokers)
    except ValueError as e:
        raise ReplicasNotAdded(f"can't add replicas: {e}") from None
    try:
        refused = {tp: error.__name__ for tp, error in admin.alter_partition_reassignments(
            moves, timeout_ms=timeout_ms).items() if error is not None}
    except KafkaError as e:  # a broker before 2.4 does not know the request
        refused = dict.fromkeys(moves, f"{type(e).__name__}: {e}")
    if refused:
        raise ReplicasNotAdded(
            "Kafka refused to add replicas ("
            + "; ".join(f"{tp.topic} partition {tp.partition}: {error}"
                        for tp, error in sorted(refused.items()))
            + "). To add them by hand, save this plan as plan.json and run"
            " kafka-reassign-partitions --bootstrap-server <broker>"
            " --reassignment-json-file plan.json --execute: " + reassignment_json(moves))
    still = wait_reassigned(admin, moves, wait_s)
    if still:
        logger.warning("%d partition(s) are still copying to their new replicas after %.0f s;"
                       " Kafka finishes by itself (kafka-reassign-partitions --list).",
                       len(still), wait_s)
