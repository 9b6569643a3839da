"""The lag exporter reads Kafka, not the workers: a known lag in messages and
seconds, dead letters waiting and group members, from a scrape."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from metrics_support import promtool_check_metrics, scrape, series, total, wait_for_scrape

from broker.topics import reconcile
from willowe_tasks.app import App
from willowe_tasks.exporter import app_topics, serve_exporter
from willowe_tasks.settings import Settings, settings_from
from willowe_tasks.topics import ALL_TOPIC_SPECS

HIGH = "high-priority-notifications"
LOW = "low-priority-notifications"


@pytest.fixture
def settings(kafka_bootstrap: str) -> Settings:
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    reconcile(admin, ALL_TOPIC_SPECS)
    admin.close()
    return settings_from({"KAFKA_BROKER": kafka_bootstrap, "METRICS_ENABLED": "false",
                          "KAFKA_GROUP_ID": f"test-exporter-{uuid.uuid4().hex[:8]}"})


@pytest.fixture
def exporter(settings: Settings) -> Iterator[str]:
    """The exporter's URL, its topics emptied first (records, dead letters)."""
    server, broker = serve_exporter(settings, "127.0.0.1", 0)
    for topic in app_topics():
        broker.declare_queue(topic)
    broker.flush_all()
    try:
        yield f"http://127.0.0.1:{server.port}/metrics"
    finally:
        server.close()
        broker.close()


def produce(bootstrap: str, topic: str, count: int, *, age_s: float, partition: int = 0) -> None:
    """``count`` records on one partition, stamped ``age_s`` seconds ago."""
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    stamp = int((time.time() - age_s) * 1000)
    for i in range(count):
        producer.send(topic, f"record {i}".encode(), partition=partition, timestamp_ms=stamp)
    producer.flush(timeout=30)
    producer.close()


def test_lag_in_messages_and_seconds_comes_from_the_groups_committed_offsets(
        exporter: str, kafka_bootstrap: str) -> None:
    # Given a group that finished nothing: 4 records on high's partition 0,
    # sent 90 s ago, and 2 on low's partition 1, sent 30 s ago
    produce(kafka_bootstrap, HIGH, 4, age_s=90, partition=0)
    produce(kafka_bootstrap, LOW, 2, age_s=30, partition=1)
    # When Prometheus scrapes the exporter
    text = scrape(exporter)
    # Then each partition's lag and each topic's time lag are there
    lag = "willowe_consumer_lag_messages"
    assert total(text, lag, topic=HIGH, partition="0") == 4
    assert total(text, lag, topic=HIGH) == 4
    assert total(text, lag, topic=LOW, partition="1") == 2
    assert total(text, lag, topic="medium-priority-notifications") == 0
    assert len([s for s in series(text, lag) if s.labels["topic"] == HIGH]) == 3  # partitions
    assert 90 <= total(text, "willowe_consumer_lag_seconds", topic=HIGH) < 90 + 60
    assert 30 <= total(text, "willowe_consumer_lag_seconds", topic=LOW) < 30 + 60
    assert total(text, "willowe_consumer_lag_seconds", topic="medium-priority-notifications") == 0
    assert total(text, "willowe_kafka_up") == 1
    checked = promtool_check_metrics(text)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dead_letters_waiting_and_members_while_a_worker_drains(
        exporter: str, kafka_bootstrap: str, settings: Settings) -> None:
    # Given 3 dead letters already waiting, and 5 records no worker can decode
    produce(kafka_bootstrap, f"{HIGH}.XQ", 3, age_s=0)
    produce(kafka_bootstrap, HIGH, 5, age_s=0, partition=1)
    before = scrape(exporter)
    assert total(before, "willowe_dead_letters_waiting", topic=f"{HIGH}.XQ") == 3
    assert total(before, "willowe_group_members", group=settings.kafka_group_id) == 0
    # When a worker of the group runs
    app = App(settings)
    worker = dramatiq.Worker(app.broker, worker_threads=2)
    worker.start()
    try:
        # Then the worker process is a member (one for all its topics), the
        # records it dead-lettered wait on .XQ, and the lag is gone
        text = wait_for_scrape(exporter, lambda t: total(
            t, "willowe_dead_letters_waiting", topic=f"{HIGH}.XQ") == 8 and total(
            t, "willowe_consumer_lag_messages", topic=HIGH) == 0)
        assert total(text, "willowe_dead_letters_waiting", topic=f"{HIGH}.XQ") == 8
        assert total(text, "willowe_consumer_lag_messages", topic=HIGH) == 0
        assert total(text, "willowe_consumer_lag_seconds", topic=HIGH) == 0
        assert total(text, "willowe_group_members", group=settings.kafka_group_id) == 1
    finally:
        worker.stop()
        app.close()


def test_an_unreachable_kafka_is_a_scrape_that_says_so(kafka_bootstrap: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    settings = settings_from({"KAFKA_BROKER": f"127.0.0.1:{closed}"})
    server, broker = serve_exporter(settings, "127.0.0.1", 0)
    try:
        text = scrape(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        server.close()
        broker.close()
    assert total(text, "willowe_kafka_up") == 0
    assert series(text, "willowe_consumer_lag_messages") == []


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "willowe_tasks", "metrics-exporter"],
    [str(Path(sys.executable).with_name("willowe-metrics-exporter"))],  # the console script
], ids=["module", "script"])
def test_the_exporter_command_refuses_a_bad_port_naming_it(tmp_path: Path,
                                                           command: list[str]) -> None:
    done = subprocess.run([*command, "--port", "70000"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert "--port" in done.stderr and "70000" in done.stderr
