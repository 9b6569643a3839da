"""The three-node local Kafka: replicated topics keep taking acks=all writes
and serving reads with one node down, and the node comes back."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

from broker.localkafka.cluster import LocalKafkaCluster

ROOT = Path(__file__).resolve().parents[1]

#: Records sent before, and again after, a node is killed.
RECORDS_PER_PHASE = 30


@pytest.fixture
def cluster(tmp_path: Path, kafka_bootstrap: str,
            free_ports: Callable[[int], list[int]]) -> Iterator[LocalKafkaCluster]:
    # kafka_bootstrap first: by then the shared jars have been fetched.
    ports = free_ports(6)
    cluster = LocalKafkaCluster(tmp_path / "cluster", nodes=3, ports=ports[:3],
                                controller_ports=ports[3:],
                                jars=ROOT / ".cache" / "kafka" / "libs")
    yield cluster
    cluster.kill()


@pytest.mark.slow
def test_a_replicated_topic_takes_writes_and_serves_reads_with_one_node_down(
    cluster: LocalKafkaCluster, unique_name: str,
) -> None:
    # Given three nodes, all registered, and a topic on all of them
    assert cluster.start() is True
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
    assert cluster.stop() is True
    assert all(node.pid() is None for node in cluster.nodes)


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
