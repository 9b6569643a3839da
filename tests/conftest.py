"""Fixtures shared by every test: a real Kafka, a real PostgreSQL, and names
that don't collide.

The session uses the broker at ``KAFKA_BROKER`` if one answers there;
otherwise it starts the project's local Kafka (``broker.localkafka``) and
stops it at the end, but only if it started it. The secured Kafka
(``secure_kafka``) follows the same rule, in its own folder on free ports.
PostgreSQL is started on first use (``willowe_tasks.testing.localpostgres``),
on a free port.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from broker.localkafka import LocalKafka, broker_answers
from broker.localkafka.cluster import LocalKafkaCluster
from broker.localkafka.secure import ADMIN_USER, SecureLocalKafka
from willowe_tasks.settings import load_settings
from willowe_tasks.testing.localpostgres import LocalPostgres

ROOT = Path(__file__).resolve().parents[1]

#: The jars every local Kafka of the tests runs from.
KAFKA_JARS = ROOT / ".cache" / "kafka" / "libs"

#: The secured Kafka's folder for the tests (wiped when a session starts it).
SECURE_KAFKA_HOME = ROOT / ".cache" / "kafka-secure-tests"


@pytest.fixture(scope="session", autouse=True)
def stores_chosen_by_each_test() -> Iterator[None]:
    """A DATABASE_URL exported in the shell (for `make demo`) must not send
    the tests' workers to that database: a test that wants PostgreSQL says so."""
    outside = os.environ.pop("DATABASE_URL", None)
    yield
    if outside is not None:
        os.environ["DATABASE_URL"] = outside


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


@pytest.fixture(scope="session")
def local_postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL server for the session. Its home, .cache/test-postgres,
    keeps the cluster between sessions (initdb runs once); a server of that
    home still running from an earlier session is used as it is."""
    home = ROOT / ".cache" / "test-postgres"
    scratch_home = None
    if not LocalPostgres(home).server_can_reach_home():
        # As root the server runs as `postgres`, which cannot get into a
        # checkout under a private folder; the temp folder it can.
        scratch_home = home = Path(tempfile.mkdtemp(prefix="willowe-test-postgres-"))
        home.chmod(0o755)
    leftover_port = LocalPostgres(home).running_port
    server = LocalPostgres(home, port=leftover_port or _free_tcp_port())
    started = server.start()
    try:
        yield server
    finally:
        if started:
            server.stop()
        if scratch_home is not None:
            shutil.rmtree(scratch_home, ignore_errors=True)


@pytest.fixture
def postgres_database_url(local_postgres: LocalPostgres, request: pytest.FixtureRequest
                          ) -> Iterator[str]:
    """The URL of a new, empty database for this test alone; dropped afterwards."""
    test = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40]
    name = f"test_{test}_{uuid.uuid4().hex[:8]}"
    url = local_postgres.create_database(name)
    yield url
    local_postgres.drop_database(name)


@pytest.fixture
def unused_tcp_port() -> int:
    """A port on 127.0.0.1 that nothing listened on a moment ago."""
    return _free_tcp_port()


def _free_tcp_port() -> int:
    return pick_free_ports(1)[0]


def pick_free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


@pytest.fixture
def free_ports() -> Callable[[int], list[int]]:
    """Call it with a count to get that many distinct free ports."""
    return pick_free_ports


@pytest.fixture(scope="session")
def secure_kafka(kafka_bootstrap: str) -> Iterator[SecureLocalKafka]:
    """The session's secured Kafka: SASL_SSL with SCRAM users, ACLs enforced.

    One that an earlier or parallel session left running in its folder is
    used as it is (and left running); otherwise a fresh one is started on
    free ports and stopped at the end."""
    # kafka_bootstrap first: by then the shared jars have been fetched.
    running = _running_secure_kafka(SECURE_KAFKA_HOME)
    if running is not None:
        yield running
        return
    shutil.rmtree(SECURE_KAFKA_HOME, ignore_errors=True)
    port, controller_port = pick_free_ports(2)
    # 384m, as a cluster node gets: with 256m its log cleaner's 128 MiB
    # dedupe buffer sometimes found no room ("OutOfMemoryError: Java heap
    # space ... Error starting LogManager") and the session had no secured Kafka.
    kafka = SecureLocalKafka(SECURE_KAFKA_HOME, port=port, controller_port=controller_port,
                             jars=KAFKA_JARS, heap="384m")
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture
def secure_admin(secure_kafka: SecureLocalKafka) -> Iterator[KafkaAdminClient]:
    """An admin client of the secured Kafka, as its super user."""
    client = KafkaAdminClient(bootstrap_servers=secure_kafka.bootstrap_servers,
                              **secure_kafka.client_options(ADMIN_USER))
    yield client
    client.close()


@pytest.fixture(scope="session")
def kafka_cluster(kafka_bootstrap: str,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafkaCluster]:
    """A three-node KRaft cluster on free ports, started on first use (30–60 s
    on 2 shared cores) and shared by the session's cluster tests, which leave
    every node running when they end; stopped at the end."""
    # kafka_bootstrap first: by then the shared jars have been fetched.
    ports = pick_free_ports(6)
    cluster = LocalKafkaCluster(tmp_path_factory.mktemp("kafka-cluster"), nodes=3,
                                ports=ports[:3], controller_ports=ports[3:], jars=KAFKA_JARS)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        cluster.kill()  # any node a failed test left half-started


def _running_secure_kafka(home: Path) -> SecureLocalKafka | None:
    """The secured Kafka running in ``home``, on the ports its configuration names."""
    try:
        listeners = re.search(r"^listeners=(.*)$", (home / "server.properties").read_text(),
                              re.MULTILINE)
    except FileNotFoundError:
        return None
    ports = dict(re.findall(r"(\w+)://[^:,]+:(\d+)", listeners.group(1) if listeners else ""))
    if "SASL_SSL" not in ports or "CONTROLLER" not in ports:
        return None
    kafka = SecureLocalKafka(home, port=int(ports["SASL_SSL"]),
                             controller_port=int(ports["CONTROLLER"]), jars=KAFKA_JARS)
    return kafka if kafka.pid() is not None and kafka.answers() else None
