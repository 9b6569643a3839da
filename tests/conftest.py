"""Fixtures shared by every test: a real Kafka, and names that don't collide.

The session uses the broker at ``KAFKA_BROKER`` if one answers there;
otherwise it starts the project's local Kafka (``broker.localkafka``) and
stops it at the end, but only if it started it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from broker.localkafka import LocalKafka, broker_answers
from willowe_tasks.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """host:port of a live Kafka broker."""
    configured = load_settings().kafka_broker
    if broker_answers(configured, timeout_s=5.0):
        yield configured
        return
    # Nothing answers: start the local Kafka, on the configured port when it
    # names this machine (so `make test KAFKA_BROKER=127.0.0.1:19092` runs
    # beside a development Kafka on 9092).
    host, _, port = configured.split(",")[0].rpartition(":")
    if host not in ("localhost", "127.0.0.1"):
        pytest.exit(f"KAFKA_BROKER={configured} does not answer and is not this machine", 2)
    local = LocalKafka(ROOT / ".cache" / "kafka", port=int(port), controller_port=int(port) + 1)
    started = local.start()
    try:
        yield local.bootstrap_servers
    finally:
        if started:
            local.stop()


@pytest.fixture
def admin(kafka_bootstrap: str) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="tests")
    yield client
    client.close()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A topic/group name no other test (or earlier run) uses."""
    test = request.node.name[:40].replace("[", "-").replace("]", "")
    return f"test-{test}-{uuid.uuid4().hex[:8]}"
