"""`make topics` on the three-node Kafka: topics get the copies they wish
for, and a topic with too few gets them added by a partition reassignment,
with its min.insync.replicas raised once they are in sync."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from support import config_of, settle

from broker.localkafka.cluster import LocalKafkaCluster
from broker.topics import TopicSpec
from willowe_tasks.__main__ import main as willowe_main

pytestmark = pytest.mark.slow


@pytest.fixture
def admin_of_cluster(kafka_cluster: LocalKafkaCluster,
                     monkeypatch: pytest.MonkeyPatch) -> Iterator[KafkaAdminClient]:
    """An admin client on the cluster, which the topics command uses too."""
    monkeypatch.setenv("KAFKA_BROKER", kafka_cluster.bootstrap_servers)
    admin = KafkaAdminClient(bootstrap_servers=kafka_cluster.bootstrap_servers)
    yield admin
    admin.close()


@pytest.fixture
def wished(unique_name: str, monkeypatch: pytest.MonkeyPatch) -> list[TopicSpec]:
    """Topics of the test's own, shaped as the guide's (3 copies, 2 in sync),
    for the topics command."""
    specs = TopicSpec(unique_name, partitions=2, retention_ms=86_400_000, replication_factor=3,
                      min_insync_replicas=2).with_companions()
    monkeypatch.setattr("willowe_tasks.__main__.ALL_TOPIC_SPECS", specs)
    return specs


def known_topics(address: str) -> set[str]:
    """The topics in the metadata of the broker at ``address`` (a client
    bootstrapped from one broker asks it first)."""
    admin = KafkaAdminClient(bootstrap_servers=address)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def replicas_and_in_sync(admin: KafkaAdminClient, name: str) -> set[tuple[int, int]]:
    return {(len(p["replica_nodes"]), len(p["isr_nodes"]))
            for p in admin.describe_topics([name])[0]["partitions"]}


def test_on_three_brokers_the_topics_get_three_copies_and_need_two_in_sync(
    admin_of_cluster: KafkaAdminClient, wished: list[TopicSpec],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert willowe_main(["topics"]) == 0
    out = capsys.readouterr().out
    name = wished[0].name
    assert (f"created {name} (partitions=2, replication.factor=3, retention.ms=86400000, "
            "cleanup.policy=delete, min.insync.replicas=2)") in out
    assert "warning:" not in out
    assert f"{name}.XQ".ljust(36) + " partitions≥2   replicas=3 min.insync.replicas=2" in out
    for spec in wished:
        assert replicas_and_in_sync(admin_of_cluster, spec.name) == {(3, 3)}
        assert config_of(admin_of_cluster, spec.name, "min.insync.replicas") == "2"


def test_a_topic_with_one_copy_gets_two_more_then_needs_two_in_sync(
    admin_of_cluster: KafkaAdminClient, wished: list[TopicSpec],
    capsys: pytest.CaptureFixture[str], kafka_cluster: LocalKafkaCluster,
) -> None:
    # Given the topics were made with one copy each (as on a single broker)
    admin_of_cluster.create_topics([
        NewTopic(spec.name, num_partitions=2, replication_factor=1, topic_configs={
            **spec.configs, "min.insync.replicas": "1"})
        for spec in wished])
    name = wished[0].name
    # (once every broker's metadata has them: the command may ask any broker)
    names = {spec.name for spec in wished}
    for address in kafka_cluster.bootstrap_servers.split(","):
        settle(lambda: names <= known_topics(address), True)  # noqa: B023
    # When checked, the missing copies and the min.insync.replicas are drift
    assert willowe_main(["topics", "--check"]) == 1
    out = capsys.readouterr().out
    assert f"would add replicas {name}: replication.factor 1 → 3" in out
    assert f"would repair {name}: min.insync.replicas 1 → 2" in out
    # Then a plain run adds the copies (a reassignment), waits for them to
    # catch up, and raises min.insync.replicas
    assert willowe_main(["topics"]) == 0
    out = capsys.readouterr().out
    assert f"added replicas {name}: replication.factor 1 → 3" in out
    assert f"repaired {name}: min.insync.replicas 1 → 2" in out
    for spec in wished:
        settle(lambda: replicas_and_in_sync(admin_of_cluster, spec.name), {(3, 3)})  # noqa: B023
        settle(lambda: config_of(admin_of_cluster, spec.name, "min.insync.replicas"),  # noqa: B023
               "2")
    assert willowe_main(["topics", "--check"]) == 0
