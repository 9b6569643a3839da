"""`make topics` logic against the real broker: create, no-op, drift repair, refusal to shrink."""

from __future__ import annotations

from dataclasses import replace

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from broker.topics import PartitionShrinkRefused, TopicSpec, reconcile
from willowe_tasks.__main__ import main as willowe_main
from willowe_tasks.topics import ALL_TOPIC_SPECS


def partitions_of(admin: KafkaAdminClient, name: str) -> int:
    return len(admin.describe_topics([name])[0]["partitions"])


def config_of(admin: KafkaAdminClient, name: str, key: str) -> str:
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, {key: None})], config_filter="all"
    )
    return str(described["topic"][name][key]["value"])


def test_reconcile_creates_a_topic_with_its_companions(
    admin: KafkaAdminClient, unique_name: str
) -> None:
    specs = TopicSpec(unique_name, partitions=3, retention_ms=86_400_000).with_companions()
    changes = reconcile(admin, specs)
    assert [(c.topic, c.action) for c in changes] == [
        (unique_name, "created"),
        (f"{unique_name}.DQ", "created"),
        (f"{unique_name}.XQ", "created"),
    ]
    assert partitions_of(admin, unique_name) == 3
    assert config_of(admin, unique_name, "retention.ms") == "86400000"
    assert config_of(admin, unique_name, "cleanup.policy") == "delete"
    assert config_of(admin, f"{unique_name}.XQ", "retention.ms") == str(7 * 86_400_000)


def test_a_second_run_changes_nothing(admin: KafkaAdminClient, unique_name: str) -> None:
    specs = TopicSpec(unique_name, partitions=2, retention_ms=60_000).with_companions()
    assert reconcile(admin, specs)
    assert reconcile(admin, specs) == []


def test_drifted_retention_is_put_back_and_reported(
    admin: KafkaAdminClient, unique_name: str
) -> None:
    spec = TopicSpec(unique_name, partitions=1, retention_ms=86_400_000)
    reconcile(admin, [spec])
    # Given someone changed the retention by hand
    admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, unique_name, {"retention.ms": "5000"})]
    )
    assert config_of(admin, unique_name, "retention.ms") == "5000"
    # When reconcile runs again
    changes = reconcile(admin, [spec])
    # Then it is back, and the change says from what to what
    assert [str(c) for c in changes] == [f"{unique_name}: altered (retention.ms: 5000 → 86400000)"]
    assert config_of(admin, unique_name, "retention.ms") == "86400000"


def test_a_higher_partition_count_is_added(admin: KafkaAdminClient, unique_name: str) -> None:
    spec = TopicSpec(unique_name, partitions=2, retention_ms=60_000)
    reconcile(admin, [spec])
    changes = reconcile(admin, [replace(spec, partitions=5)])
    assert [(c.action, c.detail) for c in changes] == [("partitions", "2 → 5")]
    assert partitions_of(admin, unique_name) == 5


def test_a_lower_partition_count_is_refused_and_nothing_changes(
    admin: KafkaAdminClient, unique_name: str
) -> None:
    spec = TopicSpec(unique_name, partitions=4, retention_ms=60_000)
    other = TopicSpec(f"{unique_name}-other", partitions=1, retention_ms=60_000)
    reconcile(admin, [spec])
    with pytest.raises(PartitionShrinkRefused, match="cannot remove partitions"):
        reconcile(admin, [other, replace(spec, partitions=2, retention_ms=1000)])
    # The refusal came before any change: the other topic wasn't created, retention untouched.
    assert f"{unique_name}-other" not in admin.list_topics()
    assert partitions_of(admin, unique_name) == 4
    assert config_of(admin, unique_name, "retention.ms") == "60000"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"partitions": 0}, "partitions"), ({"retention_ms": 0}, "retention_ms"),
     ({"replication_factor": 0}, "replication_factor")],
)
def test_a_bad_spec_names_the_field(kwargs: dict[str, int], field: str) -> None:
    base = {"name": "t", "partitions": 1, "retention_ms": 1000}
    with pytest.raises(ValueError, match=field):
        TopicSpec(**(base | kwargs))  # type: ignore[arg-type]


def test_the_guides_topics_are_made_by_the_topics_command(
    admin: KafkaAdminClient, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KAFKA_BROKER", kafka_bootstrap)
    assert willowe_main(["topics"]) == 0
    assert willowe_main(["topics"]) == 0
    assert "no change" in capsys.readouterr().out.split("Reconciling")[-1]
    expected = {
        "high-priority-notifications": (3, "86400000"),
        "medium-priority-notifications": (5, "604800000"),
        "low-priority-notifications": (2, "2592000000"),
    }
    for name, (partitions, retention) in expected.items():
        assert partitions_of(admin, name) == partitions
        assert config_of(admin, name, "retention.ms") == retention
        assert config_of(admin, name, "cleanup.policy") == "delete"
        assert config_of(admin, f"{name}.XQ", "retention.ms") == "604800000"
        assert f"{name}.DQ" in {s.name for s in ALL_TOPIC_SPECS}
