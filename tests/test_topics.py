"""`make topics` logic against the real broker: create, no-op, drift repair,
partitions raised by hand kept, and the report-only check."""

from __future__ import annotations

from dataclasses import replace

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from support import config_of, settle

from broker.replication import live_brokers
from broker.topics import TopicAction, TopicReconcileError, TopicSpec, reconcile
from willowe_tasks.__main__ import main as willowe_main
from willowe_tasks.topics import ALL_TOPIC_SPECS


def partitions_of(admin: KafkaAdminClient, name: str) -> int:
    return len(admin.describe_topics([name])[0]["partitions"])


def raise_partitions_by_hand(admin: KafkaAdminClient, name: str, count: int) -> None:
    # What the README's troubleshooting tells on-call to do.
    admin.create_partitions({name: count})
    settle(lambda: partitions_of(admin, name), count)


def set_retention_by_hand(admin: KafkaAdminClient, name: str, retention_ms: str) -> None:
    admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, {"retention.ms": retention_ms})]
    )
    settle(lambda: config_of(admin, name, "retention.ms"), retention_ms)


def test_reconcile_creates_a_topic_with_its_companions(
    admin: KafkaAdminClient, unique_name: str
) -> None:
    specs = TopicSpec(unique_name, partitions=3, retention_ms=86_400_000).with_companions()
    report = reconcile(admin, specs)
    assert report.applied
    assert [(d.topic, d.action) for d in report.changes] == [
        (unique_name, TopicAction.CREATE),
        (f"{unique_name}.DQ", TopicAction.CREATE),
        (f"{unique_name}.XQ", TopicAction.CREATE),
    ]
    assert report.lines()[0] == (
        f"created {unique_name} (partitions=3, retention.ms=86400000, cleanup.policy=delete)"
    )
    # Created topics are described right away: reconcile waited for the metadata.
    assert partitions_of(admin, unique_name) == 3
    assert config_of(admin, unique_name, "retention.ms") == "86400000"
    assert config_of(admin, unique_name, "cleanup.policy") == "delete"
    assert config_of(admin, f"{unique_name}.XQ", "retention.ms") == str(7 * 86_400_000)


def test_a_second_run_changes_nothing(admin: KafkaAdminClient, unique_name: str) -> None:
    specs = TopicSpec(unique_name, partitions=2, retention_ms=60_000).with_companions()
    assert not reconcile(admin, specs).in_sync
    again = reconcile(admin, specs)
    assert again.in_sync and again.drifts == ()


def test_drifted_retention_is_put_back_and_reported(
    admin: KafkaAdminClient, unique_name: str
) -> None:
    spec = TopicSpec(unique_name, partitions=1, retention_ms=86_400_000)
    reconcile(admin, [spec])
    # Given someone changed the retention by hand
    set_retention_by_hand(admin, unique_name, "5000")
    # When reconcile runs again
    report = reconcile(admin, [spec])
    # Then it is back, and the report says from what to what
    assert report.lines() == [f"repaired {unique_name}: retention.ms 5000 → 86400000"]
    assert config_of(admin, unique_name, "retention.ms") == "86400000"


def test_a_check_reports_drift_and_changes_nothing(
    admin: KafkaAdminClient, unique_name: str
) -> None:
    spec = TopicSpec(unique_name, partitions=2, retention_ms=86_400_000)
    missing = TopicSpec(f"{unique_name}-missing", partitions=1, retention_ms=60_000)
    reconcile(admin, [spec])
    set_retention_by_hand(admin, unique_name, "5000")

    report = reconcile(admin, [spec, missing], check=True)

    assert not report.applied and not report.in_sync
    assert report.lines() == [
        f"would repair {unique_name}: retention.ms 5000 → 86400000",
        f"would create {missing.name} (partitions=1, retention.ms=60000, cleanup.policy=delete)",
    ]
    assert config_of(admin, unique_name, "retention.ms") == "5000"
    assert missing.name not in admin.list_topics()


def test_a_higher_partition_count_in_the_spec_is_added(
    admin: KafkaAdminClient, unique_name: str
) -> None:
    spec = TopicSpec(unique_name, partitions=2, retention_ms=60_000)
    reconcile(admin, [spec])
    report = reconcile(admin, [replace(spec, partitions=5)])
    assert [(d.action, d.found, d.wanted) for d in report.drifts] == [
        (TopicAction.ADD_PARTITIONS, "2", "5")
    ]
    assert report.lines() == [f"added partitions {unique_name}: partitions 2 → 5"]
    settle(lambda: partitions_of(admin, unique_name), 5)


def test_partitions_raised_by_hand_are_kept_and_reported_while_the_rest_is_repaired(
    admin: KafkaAdminClient, unique_name: str
) -> None:
    spec = TopicSpec(unique_name, partitions=2, retention_ms=60_000)
    other = TopicSpec(f"{unique_name}-other", partitions=1, retention_ms=60_000)
    reconcile(admin, [spec])
    # Given on-call raised the partitions and cut the retention during an incident
    raise_partitions_by_hand(admin, unique_name, 4)
    set_retention_by_hand(admin, unique_name, "1000")

    report = reconcile(admin, [spec, other])

    # Then the extra partitions are a note, not an error, and everything else went ahead
    [kept] = report.kept
    assert (kept.topic, kept.key, kept.found, kept.wanted) == (unique_name, "partitions", "4", "2")
    assert report.lines()[0].startswith(f"kept {unique_name}: partitions 4 (spec 2: ")
    assert [(d.topic, d.action) for d in report.changes] == [
        (unique_name, TopicAction.SET_CONFIG), (other.name, TopicAction.CREATE),
    ]
    assert partitions_of(admin, unique_name) == 4
    assert config_of(admin, unique_name, "retention.ms") == "60000"
    assert other.name in admin.list_topics()
    # And a run after that only notes the partitions again
    again = reconcile(admin, [spec, other])
    assert again.in_sync and [d.action for d in again.drifts] == [TopicAction.KEEP]


@pytest.mark.parametrize(
    ("configs", "check", "message"),
    [
        # alter_configs answers a refusal instead of raising: it must not pass as repaired.
        ({"max.message.bytes": "-5"}, False, "Kafka refused config changes: {topic} "
                                             r"\(max.message.bytes\): .*at least 0"),
        # describe_configs leaves an unknown key out instead of failing.
        ({"retention.msec": "1000"}, True, "{topic}: Kafka returned no value for retention.msec"),
    ],
    ids=["refused", "unknown"],
)
def test_a_config_kafka_refuses_or_does_not_know_is_an_error_naming_topic_and_key(
    admin: KafkaAdminClient, unique_name: str, configs: dict[str, str], check: bool,
    message: str,
) -> None:
    spec = TopicSpec(unique_name, partitions=1, retention_ms=60_000)
    reconcile(admin, [spec])
    with pytest.raises(TopicReconcileError, match=message.format(topic=unique_name)):
        reconcile(admin, [replace(spec, extra_configs=configs)], check=check)
    # Nothing else was touched on the way.
    assert reconcile(admin, [spec], check=True).in_sync


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"partitions": 0}, "partitions"), ({"retention_ms": 0}, "retention_ms"),
     ({"replication_factor": 0}, "replication_factor of t must be ≥ 1"),
     ({"min_insync_replicas": 0}, "min_insync_replicas of t must be ≥ 1"),
     ({"replication_factor": 2, "min_insync_replicas": 3},
      r"min_insync_replicas of t \(3\) must not exceed its replication_factor \(2\)")],
)
def test_a_bad_spec_names_the_field(kwargs: dict[str, int], message: str) -> None:
    base = {"name": "t", "partitions": 1, "retention_ms": 1000}
    with pytest.raises(ValueError, match=message):
        TopicSpec(**(base | kwargs))  # type: ignore[arg-type]


# -- replication on the session's Kafka ------------------------------------------


def test_on_fewer_brokers_than_wished_a_topic_gets_what_they_hold_with_a_warning(
    admin: KafkaAdminClient, unique_name: str
) -> None:
    # Given a spec that wishes for 3 copies and 2 in sync (the guide's topics do)
    spec = TopicSpec(unique_name, partitions=1, retention_ms=60_000, replication_factor=3,
                     min_insync_replicas=2)
    brokers = len(live_brokers(admin))
    replicas, min_insync = min(3, brokers), 1 if brokers < 3 else 2
    # When reconcile creates it
    report = reconcile(admin, [spec])
    # Then it has as many copies as there are brokers, up to 3, and acks=all
    # writes need no more copies than that allows
    assert report.lines() == [
        f"created {unique_name} (partitions=1, replication.factor={replicas}, "
        f"retention.ms=60000, cleanup.policy=delete, min.insync.replicas={min_insync})"]
    assert [(s.replication_factor, s.min_insync_replicas) for s in report.specs] == [
        (replicas, min_insync)]
    assert partitions_of(admin, unique_name) == 1
    assert {len(p["replica_nodes"]) for p in admin.describe_topics([unique_name])[0]["partitions"]
            } == {replicas}
    assert config_of(admin, unique_name, "min.insync.replicas") == str(min_insync)
    # And the report warns when that is less than wished
    if brokers < 3:
        [warning] = report.warnings
        assert warning.startswith(f"{brokers} broker(s) up, so 1 topic(s) get replication.factor"
                                  f" {replicas} (wished 3)")
    else:
        assert report.warnings == ()
    assert reconcile(admin, [spec], check=True).in_sync


def test_a_min_insync_replicas_changed_by_hand_is_put_back(
    admin: KafkaAdminClient, unique_name: str
) -> None:
    spec = TopicSpec(unique_name, partitions=1, retention_ms=60_000, replication_factor=1,
                     min_insync_replicas=1)
    reconcile(admin, [spec])
    # Given someone asked for 2 in sync on a topic with one copy (Kafka asks
    # for the one there is, but the config now says otherwise)
    admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, unique_name, {"min.insync.replicas": "2"})])
    settle(lambda: config_of(admin, unique_name, "min.insync.replicas"), "2")
    # When reconcile runs, it says so and puts it back
    report = reconcile(admin, [spec])
    assert report.lines() == [f"repaired {unique_name}: min.insync.replicas 2 → 1"]
    settle(lambda: config_of(admin, unique_name, "min.insync.replicas"), "1")


# -- the topics command --------------------------------------------------------


def test_the_guides_topics_are_made_by_the_topics_command(
    admin: KafkaAdminClient, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KAFKA_BROKER", kafka_bootstrap)
    assert willowe_main(["topics"]) == 0
    assert willowe_main(["topics"]) == 0
    assert "no change" in capsys.readouterr().out.split("Reconciling")[-1]
    assert willowe_main(["topics", "--check"]) == 0
    out = capsys.readouterr().out
    assert "no change: every topic meets its spec" in out
    # Each topic with the copies the brokers hold, and a warning when fewer than 3
    brokers = len(live_brokers(admin))
    replicas, min_insync = min(3, brokers), 1 if brokers < 3 else 2
    assert (f"high-priority-notifications.XQ       partitions≥3   replicas={replicas} "
            f"min.insync.replicas={min_insync} retention.ms=604800000") in out
    assert (f"warning: {brokers} broker(s) up, so 9 topic(s) get replication.factor {replicas}"
            in out) is (brokers < 3)
    expected = {
        "high-priority-notifications": (3, "86400000"),
        "medium-priority-notifications": (5, "604800000"),
        "low-priority-notifications": (2, "2592000000"),
    }
    for name, (partitions, retention) in expected.items():
        # At least: the test Kafka may have had them raised by hand, as the README shows.
        assert partitions_of(admin, name) >= partitions
        assert config_of(admin, name, "retention.ms") == retention
        assert config_of(admin, name, "cleanup.policy") == "delete"
        assert config_of(admin, f"{name}.XQ", "retention.ms") == "604800000"
        assert f"{name}.DQ" in {s.name for s in ALL_TOPIC_SPECS}


@pytest.fixture
def command_specs(
    unique_name: str, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> list[TopicSpec]:
    """The topics command on topics of this test's own, so changes made by
    hand don't outlive it on the guide's topics that other tests use."""
    specs = TopicSpec(unique_name, partitions=2, retention_ms=86_400_000).with_companions()
    monkeypatch.setenv("KAFKA_BROKER", kafka_bootstrap)
    monkeypatch.setattr("willowe_tasks.__main__.ALL_TOPIC_SPECS", specs)
    return specs


def test_the_topics_command_keeps_partitions_raised_by_hand_and_exits_0(
    admin: KafkaAdminClient, command_specs: list[TopicSpec],
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = command_specs[0].name
    assert willowe_main(["topics"]) == 0
    raise_partitions_by_hand(admin, name, 6)
    capsys.readouterr()

    assert willowe_main(["topics"]) == 0
    out = capsys.readouterr().out
    assert f"kept {name}: partitions 6 (spec 2: " in out
    assert "no change: every topic meets its spec" in out
    # Nothing to change, so a check passes too and still says what it saw.
    assert willowe_main(["topics", "--check"]) == 0
    assert f"kept {name}: partitions 6" in capsys.readouterr().out
    assert partitions_of(admin, name) == 6


def test_the_topics_check_reports_drift_exits_1_and_leaves_it_then_a_run_repairs_it(
    admin: KafkaAdminClient, command_specs: list[TopicSpec],
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = command_specs[0].name
    assert willowe_main(["topics"]) == 0
    set_retention_by_hand(admin, name, "5000")
    capsys.readouterr()

    assert willowe_main(["topics", "--check"]) == 1
    out = capsys.readouterr().out
    assert f"would repair {name}: retention.ms 5000 → 86400000" in out
    assert "1 change(s) needed; nothing was changed" in out
    assert config_of(admin, name, "retention.ms") == "5000"

    assert willowe_main(["topics"]) == 0
    assert f"repaired {name}: retention.ms 5000 → 86400000" in capsys.readouterr().out
    assert config_of(admin, name, "retention.ms") == "86400000"
    assert willowe_main(["topics", "--check"]) == 0


def test_the_topics_command_exits_2_naming_what_kafka_could_not_describe(
    admin: KafkaAdminClient, command_specs: list[TopicSpec], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert willowe_main(["topics"]) == 0
    typo = [replace(s, extra_configs={"retention.msec": "1"}) for s in command_specs]
    monkeypatch.setattr("willowe_tasks.__main__.ALL_TOPIC_SPECS", typo)
    assert willowe_main(["topics", "--check"]) == 2
    assert f"error: {command_specs[0].name}: Kafka returned no value for retention.msec" in (
        capsys.readouterr().err
    )

