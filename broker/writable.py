"""Can Kafka take a send now? The send circuit's probe (see
:mod:`broker.circuit`).

Kafka can't when no broker answers a metadata request, or, for ``acks=all``
sends, when a partition of the topic has fewer in-sync replicas than its
``min.insync.replicas``: the leader then refuses every write with
NOT_ENOUGH_REPLICAS rather than acknowledge a message kept on too few disks.
The producer retries that error until its delivery timeout, so a send only
times out; the probe is what can name the cause.
"""

from __future__ import annotations

from collections.abc import Callable

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError

from broker.circuit import CircuitOpen, NotEnoughReplicas, Unwritable

__all__ = ["probe_writable"]

#: Partitions named in a not-enough-replicas message, at most.
NAMED_PARTITIONS = 3

#: Tries at reading a topic's in-sync replicas, one broker after another.
DESCRIBE_ATTEMPTS = 3


def probe_writable(make_admin: Callable[[], KafkaAdminClient], topic: str | None, *,
                   acks_all: bool) -> Unwritable | None:
    """Why a send to ``topic`` can't succeed now, or None when it can (as
    far as Kafka's metadata tells)."""
    try:
        # Bootstrapping is a metadata request some broker answered.
        admin = make_admin()
    except KafkaError as e:
        return Unwritable(CircuitOpen, f"{type(e).__name__}: {e}"[:300])
    try:
        short = _short_of_replicas(admin, topic) if topic is not None and acks_all else []
    finally:
        admin.close()
    if not short:
        return None
    return Unwritable(NotEnoughReplicas, "NOT_ENOUGH_REPLICAS: " + ", ".join(
        short[:NAMED_PARTITIONS]) + (", …" if len(short) > NAMED_PARTITIONS else ""))


def _short_of_replicas(admin: KafkaAdminClient, topic: str) -> list[str]:
    """The partitions of ``topic`` with fewer in-sync replicas than its
    ``min.insync.replicas``, described for a message; none when Kafka
    doesn't say."""
    for _ in range(DESCRIBE_ATTEMPTS):
        try:
            return _described_short_of_replicas(admin, topic)
        except KafkaError:
            # The request went to a broker that has died but is not fenced
            # yet (the metadata still names it); the client keeps away from
            # it for a while, so the next try asks another.
            continue
    return []


def _described_short_of_replicas(admin: KafkaAdminClient, topic: str) -> list[str]:
    [described] = admin.describe_topics([topic])
    if described["error_code"]:
        return []  # no such topic: the send says so itself
    configs = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, {"min.insync.replicas": None})],
        config_filter="all",
    ).get("topic", {}).get(topic, {})
    if "min.insync.replicas" not in configs:
        return []
    wanted = int(configs["min.insync.replicas"]["value"])
    # The leader asks for no more copies than the partition has
    # (Partition.effectiveMinIsr in Kafka 4.1).
    return [f"{topic} partition {p['partition_index']} has {len(p['isr_nodes'])} in sync, "
            f"min.insync.replicas is {wanted}"
            for p in sorted(described["partitions"], key=lambda p: p["partition_index"])
            if len(p["isr_nodes"]) < min(wanted, len(p["replica_nodes"]))]
