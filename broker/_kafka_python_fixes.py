"""Workarounds for kafka-python behaviours that hurt a Dramatiq worker.

Each is guarded: it touches one client only, and does nothing when
kafka-python's internals no longer look as expected, so an upgrade turns it
off rather than breaking the client. ``tests/kafka_broker/test_kafka_python_fixes.py``
fails when one of them stops applying (the internals moved), so an upgrade
says which workaround to re-check against the upstream behaviour described
here.

Seen with kafka-python 3.0.12. Consumers get :data:`FIXES`, producers
:data:`PRODUCER_FIXES`.
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import UnknownBrokerIdError

__all__ = ["FIXES", "PRODUCER_FIXES", "apply_fixes", "apply_producer_fixes"]


def apply_fixes(consumer: KafkaConsumer) -> list[str]:
    """Apply every workaround to a subscribed ``consumer`` (``subscribe()``
    resets what metadata it keeps); return the names of those applied."""
    return [name for name, fix in FIXES.items() if fix(consumer)]


def finish_every_join(consumer: KafkaConsumer) -> bool:
    """Make kafka-python finish every group join it starts.

    Upstream: ``join_group_async`` waits for the JoinGroup/SyncGroup task only
    as long as the current ``poll()`` allows, leaving the task running when the
    poll times out. Two bugs follow; both leave a member in REBALANCING with no
    partitions until the group expels it, and both bite a group like a
    Dramatiq worker's, whose consumers subscribe to different topics and poll
    with short timeouts:

    1. If the task finished while no poll was waiting for it, the next poll
       sees ``is_done`` and sends a *new* JoinGroup, throwing the finished
       join's assignment away (and restarting the rebalance for everyone).
    2. When the leader joins because its metadata changed, its own
       assignment records the new metadata, so ``need_rejoin()`` turns false
       while the join is still in flight: no later poll collects its result.

    The fix hands a finished join's result to the next poll instead of
    dropping it, and keeps ``need_rejoin()`` true until a started join has
    been collected.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    needed = ("_join_task", "rejoining", "join_group_async", "need_rejoin", "_manager")
    if coordinator is None or not all(hasattr(coordinator, name) for name in needed):
        return False
    join_group_async = coordinator.join_group_async
    need_rejoin = coordinator.need_rejoin

    async def collect_finished_join(timeout_ms: int | None = None) -> Any:
        task = coordinator._join_task
        if task is not None and task.is_done and task.succeeded():
            assignment = task.value
            # A pending task that yields the finished join's result: not
            # is_done yet, so join_group_async awaits it instead of rejoining.
            coordinator._join_task = coordinator._manager.call_soon(lambda: assignment)
        return await join_group_async(timeout_ms=timeout_ms)

    def need_rejoin_or_unfinished() -> bool:
        return bool(coordinator.rejoining) or bool(need_rejoin())

    coordinator.join_group_async = collect_finished_join
    coordinator.need_rejoin = need_rejoin_or_unfinished
    return True


def know_every_topic(consumer: KafkaConsumer) -> bool:
    """Keep metadata for every topic, not only the ones this consumer reads.

    Upstream: the group's leader assigns every member's topics, but asks for
    metadata of the topics other members subscribe to only while assigning,
    where it "cannot block on metadata updates" (ConsumerCoordinator.
    _perform_assignment). The first assignment therefore leaves those topics
    out, logs "No partition metadata for topic …" for each (a worker's
    consumers subscribe to one topic each), and a second rebalance follows
    once the metadata arrives: a noisy and slower start. Worse, a consumer's
    first join usually completes before its first metadata answer, so even
    its own topic is unknown to it then.

    The fix keeps metadata for all topics, and fetches it once before the
    first join (``KafkaConsumer.topics()``, a blocking call), so whichever
    consumer leads already knows every topic.
    """
    cluster = getattr(consumer, "_cluster", None)
    if cluster is None or not hasattr(cluster, "need_all_topic_metadata"):
        return False
    cluster.need_all_topic_metadata = True
    consumer.topics()
    return True


def renew_a_dropped_producer_id(producer: KafkaProducer) -> bool:
    """Let an idempotent producer get a new producer id after dropping its own.

    Upstream: when a batch that was already sent expires (a send that timed
    out while a broker failed over: the in-sync replicas still counted a
    crashed broker), the sender calls ``TransactionManager.reset_producer_id``,
    which clears the producer id but leaves the state READY. From then on the
    sender sends nothing until it has a producer id, and asks for one only in
    state UNINITIALIZED (``init_producer_id``): it never asks, and every later
    send times out until the process restarts. Seen on the three-node local
    Kafka when a node was SIGKILLed (``make drills``' cluster drills).

    The fix puts the state back to UNINITIALIZED when the id is dropped, so
    the sender's next loop asks for a new one, as it did for the first.
    """
    manager = getattr(producer, "_transaction_manager", None)
    needed = ("reset_producer_id", "is_transactional", "init_producer_id", "_lock",
              "_current_state")
    if manager is None or not all(hasattr(manager, name) for name in needed):
        return False
    if manager.is_transactional():
        return False  # a transactional producer must not reset (kafka-python raises)
    reset_producer_id = manager.reset_producer_id
    uninitialized = type(manager._current_state).UNINITIALIZED

    def reset_and_ask_again() -> None:
        reset_producer_id()
        with manager._lock:
            manager._current_state = uninitialized

    manager.reset_producer_id = reset_and_ask_again
    return True


def refresh_a_leader_that_is_no_broker(producer: KafkaProducer) -> bool:
    """Treat a partition leader the metadata lists no broker for as not
    ready, and fetch fresh metadata, instead of failing every sender loop.

    Upstream: when the controller fences a crashed broker, a metadata answer
    can list the brokers without it while a partition it led still names it
    as leader. The sender then calls ``maybe_connect`` on that leader, which
    raises ``UnknownBrokerIdError`` ("Uncaught error in kafka producer I/O
    thread") on every loop, before the loop sends or asks for metadata: the
    stale leader stays (the next refresh is ``metadata_max_age_ms``, 5 min,
    away) and the producer sends nothing until the broker is back. Seen when
    the node of the active controller was SIGKILLed on the three-node local
    Kafka.
    """
    sender = getattr(producer, "_sender", None)
    client: Any = getattr(sender, "_client", None)
    metadata: Any = getattr(producer, "_metadata", None)
    if not hasattr(client, "maybe_connect") or not hasattr(metadata, "request_update"):
        return False
    maybe_connect = client.maybe_connect

    def maybe_connect_to_a_known_broker(node_id: int, **kwargs: Any) -> Any:
        try:
            return maybe_connect(node_id, **kwargs)
        except UnknownBrokerIdError:
            metadata.request_update()
            return None

    client.maybe_connect = maybe_connect_to_a_known_broker
    return True


def apply_producer_fixes(producer: KafkaProducer) -> list[str]:
    """Apply every producer workaround; return the names of those applied."""
    return [name for name, fix in PRODUCER_FIXES.items() if fix(producer)]


#: Every workaround, by name, in the order applied.
FIXES = {
    "finish_every_join": finish_every_join,
    "know_every_topic": know_every_topic,
}

#: Every producer workaround, by name.
PRODUCER_FIXES = {
    "renew_a_dropped_producer_id": renew_a_dropped_producer_id,
    "refresh_a_leader_that_is_no_broker": refresh_a_leader_that_is_no_broker,
}
