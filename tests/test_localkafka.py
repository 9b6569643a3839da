"""The local Kafka runner: a second, private broker on free ports survives a crash with its data."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from broker.localkafka import LocalKafka
from broker.topics import TopicSpec, reconcile

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def private_kafka(tmp_path: Path, kafka_bootstrap: str) -> Iterator[LocalKafka]:
    # kafka_bootstrap first: the shared jars are fetched by then.
    kafka = LocalKafka(tmp_path / "kafka", port=free_port(), controller_port=free_port(),
                       jars=ROOT / ".cache" / "kafka" / "libs", heap="256m")
    yield kafka
    kafka.kill()


@pytest.mark.slow
def test_kafka_comes_back_with_its_data_after_kill_9(private_kafka: LocalKafka) -> None:
    assert private_kafka.start() is True
    # Running start again while it is up does nothing.
    assert private_kafka.start() is False

    admin = KafkaAdminClient(bootstrap_servers=private_kafka.bootstrap_servers)
    reconcile(admin, [TopicSpec("survivor", partitions=2, retention_ms=3_600_000)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=private_kafka.bootstrap_servers)
    producer.send("survivor", b"still here", partition=1).get(timeout=30)
    producer.close()

    private_kafka.kill()
    assert private_kafka.pid() is None
    assert not private_kafka.answers(timeout_s=1.0)

    assert private_kafka.start() is True
    consumer = KafkaConsumer(
        "survivor", bootstrap_servers=private_kafka.bootstrap_servers,
        auto_offset_reset="earliest", consumer_timeout_ms=20_000, group_id=None,
    )
    values = [record.value for record in consumer]
    consumer.close()
    assert values == [b"still here"]


def test_the_cli_wrapper_runs_kafkas_own_topic_tool(kafka_bootstrap: str) -> None:
    subprocess.run([sys.executable, "-m", "willowe_tasks", "topics"], check=True,
                   env={"KAFKA_BROKER": kafka_bootstrap, "PATH": "/usr/bin:/bin"},
                   capture_output=True, cwd=ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "broker.localkafka", "tool", "kafka-topics", "--describe",
         "--topic", "medium-priority-notifications", "--bootstrap-server", kafka_bootstrap],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "PartitionCount: 5" in result.stdout
    assert "retention.ms=604800000" in result.stdout


def test_an_unknown_tool_is_named_in_the_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "broker.localkafka", "tool", "kafka-nonsense"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 1
    assert "unknown Kafka tool 'kafka-nonsense'" in result.stderr


def test_cluster_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given uuid4 returns bytes whose base64 starts with "-" first
    import uuid

    from broker import localkafka

    dash_first = uuid.UUID(bytes=b"\xf8" + bytes(15))
    ids = iter([dash_first, uuid.UUID(int=1)])
    monkeypatch.setattr(localkafka.uuid, "uuid4", lambda: next(ids))
    # Then the id made skips it
    cluster_id = localkafka._cluster_id()
    assert not cluster_id.startswith("-")
    assert len(cluster_id) == 22


def make_kafka_command(kafka_broker: str) -> str:
    """The command ``make kafka`` would run for this KAFKA_BROKER (make -n: nothing runs)."""
    command = ["make", "--no-print-directory", "-n", "kafka", f"KAFKA_BROKER={kafka_broker}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    return next(line for line in done.stdout.splitlines()
                if "broker.localkafka" in line and line.rstrip().endswith(" start"))


@pytest.mark.parametrize(("kafka_broker", "ports"), [
    ("127.0.0.1:19092", "--port 19092 --controller-port 19093"),
    ("localhost:20592,localhost:20594", "--port 20592 --controller-port 20593"),
])
def test_make_kafka_listens_on_the_port_kafka_broker_names(kafka_broker: str, ports: str) -> None:
    # It used to start on 9092 whatever KAFKA_BROKER said, so `make bench`
    # against another port measured a Kafka it hadn't started (or none).
    assert ports in make_kafka_command(kafka_broker)


def test_make_kafka_keeps_its_default_ports_for_a_kafka_elsewhere() -> None:
    assert "--port" not in make_kafka_command("kafka-1.example:9092")
