"""The three-node local Kafka: replicated topics keep taking acks=all writes
and serving reads with one node down, reconcile fits topics to the brokers
that are up, a send with too few replicas in sync fails naming them, and the
node comes back.

One scenario, because each node restart costs tens of seconds here."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import dramatiq
import pytest
from dramatiq.errors import ConnectionFailed
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from support import wait_until

from broker import KafkaBroker
from broker.circuit import NotEnoughReplicas
from broker.localkafka.cluster import LocalKafkaCluster
from broker.topics import TopicSpec, reconcile

ROOT = Path(__file__).resolve().parents[1]

#: Records sent before, and again after, a node is killed.
RECORDS_PER_PHASE = 30


#: How often the test broker's open send circuit asks Kafka again, in milliseconds.
PROBE_INTERVAL_MS = 300

#: Longest wait for the controller to fence a killed node (broker.session.timeout.ms
#: is 1.5 s in the local cluster; this is a bound, not an expectation).
FENCED_WITHIN_S = 60.0


@pytest.mark.slow
def test_with_a_node_killed_writes_go_on_reconcile_fits_the_brokers_up_and_it_comes_back(
    kafka_cluster: LocalKafkaCluster, unique_name: str,
) -> None:
    # Given three nodes, all registered, and a topic on all of them
    cluster = kafka_cluster
    assert cluster.registered_brokers() == {1, 2, 3}
    admin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers)
    admin.create_topics([NewTopic(unique_name, num_partitions=3, replication_factor=3,
                                  topic_configs={"min.insync.replicas": "2"})])
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap_servers, acks="all")
    before = [f"before-{i}".encode() for i in range(RECORDS_PER_PHASE)]
    for value in before:
        producer.send(unique_name, value)
    producer.flush(timeout=60)

    # When one node crashes
    cluster.kill_node(2)
    assert cluster.node(2).pid() is None

    # Then acks=all writes still succeed (two replicas in sync are enough)
    after = [f"after-{i}".encode() for i in range(RECORDS_PER_PHASE)]
    for value in after:
        producer.send(unique_name, value).get(timeout=90)
    producer.close()
    # And a consumer group reads everything, committing to the offsets topic
    consumer = KafkaConsumer(unique_name, bootstrap_servers=cluster.bootstrap_servers,
                             group_id=unique_name, auto_offset_reset="earliest",
                             consumer_timeout_ms=20_000)
    values = []
    for record in consumer:  # ends 20 s after the last record, if one is missing
        values.append(record.value)
        if len(values) == len(before + after):
            break
    consumer.commit()
    consumer.close()
    assert sorted(values) == sorted(before + after)

    # The internal topics are on all three nodes, and need two in sync.
    offsets_topic = admin.describe_topics(["__consumer_offsets"])[0]
    assert {len(p["replica_nodes"]) for p in offsets_topic["partitions"]} == {3}
    configs = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, "__consumer_offsets")], config_filter="all")
    assert configs["topic"]["__consumer_offsets"]["min.insync.replicas"]["value"] == "2"

    # While the node is down (and fenced), reconcile keeps the topic's three
    # copies, creates a new topic with what two brokers can hold, and holds
    # back a min.insync.replicas above the replicas in sync.
    assert wait_until(lambda: cluster.registered_brokers() == {1, 3}, FENCED_WITHIN_S,
                      interval_s=0.5)
    kept = TopicSpec(unique_name, partitions=3, retention_ms=7 * 24 * 3_600_000,
                     replication_factor=3, min_insync_replicas=2)
    new = replace(kept, name=f"{unique_name}-new")
    report = reconcile(admin, [kept, new], check=True)
    assert report.lines() == [
        f"would create {new.name} (partitions=3, replication.factor=2, retention.ms=604800000, "
        "cleanup.policy=delete, min.insync.replicas=1)"]
    assert report.warnings == (
        f"2 broker(s) up, so 1 topic(s) get replication.factor 2 (wished 3) and "
        f"min.insync.replicas 1 (wished 2): each message has 2 copies. Reconcile again once "
        f"more brokers are up to add copies ({new.name}).",)
    strict = replace(kept, min_insync_replicas=3)
    [held] = reconcile(admin, [strict]).drifts
    assert str(held).startswith(f"{unique_name}: min.insync.replicas 2 (spec 3: only 2 replica(s)"
                                " in sync now")

    # With 3 in sync asked for by hand, acks=all sends are refused: the first
    # times out, then every send fails at once naming the cause
    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, unique_name,
                                        {"min.insync.replicas": "3"})])
    broker = KafkaBroker(bootstrap_servers=cluster.bootstrap_servers, create_topics=False,
                         probe_interval_ms=PROBE_INTERVAL_MS)
    try:
        @dramatiq.actor(broker=broker, queue_name=unique_name)
        def noop(n: int) -> None: ...

        assert wait_until(lambda: _refused(noop), 30)
        assert wait_until(lambda: broker._circuit.is_open, 30)
        with pytest.raises(NotEnoughReplicas, match=f"NOT_ENOUGH_REPLICAS: {unique_name} "
                                                    "partition 0 has 2 in sync, "
                                                    "min.insync.replicas is 3"):
            noop.send(0)
        # And once reconcile puts the spec's 2 back, sends go through
        assert reconcile(admin, [kept]).lines() == [
            f"repaired {unique_name}: min.insync.replicas 3 → 2"]
        assert broker._circuit.wait_closed(30)
        noop.send(1)
    finally:
        broker.close()
    admin.close()

    # And the node comes back into the cluster
    assert cluster.start_node(2) is True
    assert cluster.registered_brokers() == {1, 2, 3}
    # Another handle on the same folder (a second `make kafka NODES=3`) finds it up.
    again = LocalKafkaCluster(cluster.home, nodes=3,
                              ports=[node.port for node in cluster.nodes],
                              controller_ports=[node.controller_port for node in cluster.nodes],
                              jars=cluster.nodes[0].libs)
    assert again.start() is False


def _refused(actor: dramatiq.Actor[[int], None]) -> bool:
    """Whether a send fails (it may still go through while the ISR shrinks)."""
    try:
        actor.send(0)
    except ConnectionFailed:
        return True
    return False


def test_a_cluster_needs_two_nodes_and_one_port_each(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nodes must be at least 2 for a cluster, got 1"):
        LocalKafkaCluster(tmp_path, nodes=1)
    with pytest.raises(ValueError, match="ports must list 3 ports, one a node"):
        LocalKafkaCluster(tmp_path, nodes=3, ports=[1, 2], controller_ports=[3, 4, 5])
    with pytest.raises(ValueError, match="node must be 1 to 3, got 4"):
        LocalKafkaCluster(tmp_path, nodes=3).node(4)


def test_the_cli_names_the_node_it_has_no_node_for() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "broker.localkafka", "--nodes", "3", "kill", "--node", "4"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 1
    assert "node must be 1 to 3, got 4" in result.stderr
