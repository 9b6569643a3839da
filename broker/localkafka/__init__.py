"""A single-node Apache Kafka (KRaft, broker and controller in one JVM) for
development and tests, run from the jars that ``pom.xml`` beside this file
lists. No Docker: Java 17+ and the jars are all it needs.

Everything it owns lives in one folder (the *home*)::

    home/libs/        the jars (fetched by ``mvn dependency:copy-dependencies``)
    home/data/        KRaft metadata and topic logs; survives stop/start
    home/server.properties, home/log4j2.properties
    home/server.log   what the broker printed
    home/kafka.pid

Use it from the command line (``python -m broker.localkafka --help``) or from
code (``LocalKafka(home).start()``), as the test fixtures do. Two more shapes
build on it: a secured broker (``broker.localkafka.secure``) and a cluster of
several nodes (``broker.localkafka.cluster``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from broker.localkafka._files import (
    LOG4J2_PROPERTIES,
    TOOLS_LOG4J2_PROPERTIES,
    render_properties,
    write_private,
)
from broker.localkafka._process import (
    KafkaNotReady,
    alive,
    kill,
    port_taken,
    say,
    split_host_port,
    terminate,
    wait_until_ready,
)

__all__ = ["CLI_TOOLS", "KafkaNotReady", "LocalKafka", "POM_PATH", "broker_answers"]

#: The pom whose dependencies are the broker's and CLI tools' jars.
POM_PATH = Path(__file__).with_name("pom.xml")

#: Kafka's shell scripts, mapped to the classes they run, so the guide's ops
#: commands (``kafka-topics.sh --describe …``) have an equivalent here.
CLI_TOOLS = {
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-configs": "kafka.admin.ConfigCommand",
    "kafka-get-offsets": "org.apache.kafka.tools.GetOffsetShell",
    "kafka-reassign-partitions": "org.apache.kafka.tools.reassign.ReassignPartitionsCommand",
    "kafka-storage": "kafka.tools.StorageTool",
}

#: How long ``start`` waits for the broker to answer a metadata request.
DEFAULT_START_TIMEOUT_S = 90.0

#: How long ``stop`` waits for a clean shutdown before SIGKILL.
DEFAULT_STOP_TIMEOUT_S = 30.0

#: JVM heap for the local broker; small, since it shares a 2-core machine.
DEFAULT_HEAP = "512m"

#: JVM heap for the storage formatter and the CLI tools.
TOOLS_HEAP = "256m"


@dataclass(frozen=True)
class LocalKafka:
    """A local single-node Kafka living in ``home``, listening on ``host:port``
    for clients and ``host:controller_port`` for its KRaft controller.

    The other shapes (secured, cluster node) subclass it and override the
    hooks below the lifecycle: ``_server_properties``, ``_format_options``,
    ``_probe_options``."""

    home: Path
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    heap: str = DEFAULT_HEAP
    #: Where the jars are, if not in ``home/libs`` (several homes can share them).
    jars: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def libs(self) -> Path:
        return self.jars or self.home / "libs"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    # -- jars ------------------------------------------------------------

    def has_jars(self) -> bool:
        return any(self.libs.glob("kafka_2.13-*.jar")) and any(self.libs.glob("kafka-tools-*.jar"))

    def fetch_jars(self) -> None:
        """Copy the broker's and tools' jars from Maven Central into ``libs``."""
        if self.has_jars():
            return
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaNotReady("Maven (mvn) is needed to fetch the Kafka jars; install it first")
        say(f"Fetching Apache Kafka jars (about 55 MB, once) into {self.libs} …")
        self.libs.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [mvn, "-q", "-B", "-f", str(POM_PATH), "dependency:copy-dependencies",
             f"-DoutputDirectory={self.libs}", "-DincludeScope=runtime"],
            check=True,
        )

    # -- lifecycle ---------------------------------------------------------

    def pid(self) -> int | None:
        """The pid of the broker this home started, if that process still runs."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        # A reused pid belongs to some other program: only trust a java process.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return pid
        return pid if b"kafka.Kafka" in cmdline and alive(pid) else None

    def answers(self, timeout_s: float = 5.0) -> bool:
        """Whether a Kafka broker answers a metadata request at our address."""
        options = self._probe_options()
        if options is None:
            return False
        return broker_answers(self.bootstrap_servers, timeout_s=timeout_s, **options)

    def start(self, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> bool:
        """Start the broker unless one already answers; return whether it started one."""
        if self.answers(timeout_s=2.0):
            say(f"Kafka already answers on {self.bootstrap_servers}; nothing to do.")
            return False
        proc = self.launch()
        say(f"Starting Kafka (pid {proc.pid}) on {self.bootstrap_servers} …")
        wait_until_ready(lambda: self.answers(timeout_s=2.0), [(self, proc)], timeout_s,
                         f"Kafka on {self.bootstrap_servers}")
        say(f"Kafka is up on {self.bootstrap_servers}; log: {self.log_file}")
        return True

    def launch(self) -> subprocess.Popen[bytes]:
        """Write the configuration, format the storage if it is new, and start
        the JVM in the background without waiting for it to answer."""
        if port_taken(self.host, self.port) or port_taken(self.host, self.controller_port):
            raise KafkaNotReady(
                f"port {self.port} or {self.controller_port} on {self.host} is taken by something "
                "that is not this Kafka answering; stop it or pick other ports"
            )
        self.prepare()
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                self._java("kafka.Kafka", str(self.properties_file)),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives `make kafka` and the test session's signals
            )
        self.pid_file.write_text(str(proc.pid))
        return proc

    def prepare(self) -> None:
        """Fetch the jars, write the configuration, and format the storage
        if it is new: all a start needs but the JVM."""
        self._check_java()
        self.fetch_jars()
        self._write_config()
        self._format_once()

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
        """Stop the broker this home started (SIGTERM, then SIGKILL); return
        whether one was running."""
        pid = self.pid()
        if pid is None:
            say("Local Kafka is not running.")
            return False
        say(f"Stopping Kafka (pid {pid}) …")
        if terminate([pid], timeout_s):
            say(f"Kafka did not stop within {timeout_s:.0f}s; killed it.")
        self.pid_file.unlink(missing_ok=True)
        say("Kafka stopped.")
        return True

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would (fault drills and tests)."""
        pid = self.pid()
        if pid is not None:
            kill(pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log yet)"

    # -- CLI tools -----------------------------------------------------------

    def tool_command(self, tool: str, args: Sequence[str]) -> list[str]:
        """The command line that runs one of Kafka's CLI tools (see ``CLI_TOOLS``)."""
        name = tool.removesuffix(".sh")
        if name not in CLI_TOOLS:
            raise ValueError(f"unknown Kafka tool {tool!r}; known: {', '.join(sorted(CLI_TOOLS))}")
        self.fetch_jars()
        self._write_config()
        return self._java(CLI_TOOLS[name], *args, heap=TOOLS_HEAP,
                          log_config="tools-log4j2.properties")

    # -- hooks for the other shapes ------------------------------------------

    def _server_properties(self) -> dict[str, str]:
        """The broker's configuration, in the order it is written."""
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{self.host}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},"
                         f"CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # Local use: no reason to wait for other members before the first rebalance.
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.check.interval.ms": "300000",
        }

    def _format_options(self) -> list[str]:
        """What the storage formatter gets besides ``-c <properties>``: a new
        cluster id, and a quorum of this one node."""
        return ["--standalone", "-t", _cluster_id()]

    def _probe_options(self) -> dict[str, Any] | None:
        """kafka-python settings (besides the address) of the readiness probe;
        None when no client could be ours yet."""
        return {}

    # -- internals -----------------------------------------------------------

    def _java(
        self, main_class: str, *args: str, heap: str | None = None,
        log_config: str = "log4j2.properties",
    ) -> list[str]:
        return [
            "java", f"-Xmx{heap or self.heap}", f"-Xms{heap or self.heap}",
            "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / log_config}",
            "-cp", f"{self.libs}/*", main_class, *args,
        ]

    def _check_java(self) -> None:
        if shutil.which("java") is None:
            raise KafkaNotReady("Java 17+ is needed to run Kafka; install a JDK first")

    def _write_config(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        # Owner-only: the secured shape's configuration holds a password.
        write_private(self.properties_file, render_properties(self._server_properties()))
        (self.home / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        # CLI tools print their answers on stdout: keep their logging off it.
        (self.home / "tools-log4j2.properties").write_text(TOOLS_LOG4J2_PROPERTIES)

    def is_formatted(self) -> bool:
        return (self.data_dir / "meta.properties").exists()

    def _format_command(self) -> list[str]:
        return self._java("kafka.tools.StorageTool", "format", "-c", str(self.properties_file),
                          *self._format_options(), heap=TOOLS_HEAP,
                          log_config="tools-log4j2.properties")

    def _format_once(self) -> None:
        # Formatting twice would refuse (or wipe); the meta file says it was done.
        if self.is_formatted():
            return
        say(f"Formatting KRaft storage in {self.data_dir} …")
        result = subprocess.run(self._format_command(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            # Not the command line: a secured Kafka's holds the users' passwords.
            raise KafkaNotReady(
                f"formatting {self.data_dir} failed with status {result.returncode}:\n"
                + "\n".join(result.stderr.splitlines()[-20:])
            )


def broker_answers(bootstrap_servers: str, timeout_s: float = 5.0, **client_options: Any) -> bool:
    """Whether any broker in the comma-separated list answers a metadata
    request; ``client_options`` are kafka-python settings (security, …)."""
    hosts = [h.strip() for h in bootstrap_servers.split(",") if h.strip()]
    if not any(port_taken(*split_host_port(h)) for h in hosts):
        return False  # nothing listens: skip the client's slower failure path
    timeout_ms = int(timeout_s * 1000)
    try:
        # The client's bootstrap is a metadata request to one of the hosts,
        # so that it succeeds is the answer; a further request could go to
        # any broker the metadata names, a dead one of a cluster included.
        # Without bootstrap_timeout_ms it would retry for 30 s on a port that
        # is open but not (yet) a broker.
        admin = KafkaAdminClient(
            bootstrap_servers=hosts, request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms, **client_options,
        )
    except (KafkaError, OSError, ValueError):
        return False
    admin.close()
    return True


def _cluster_id() -> str:
    # Kafka wants a base64url-encoded 16-byte UUID. One starting with "-"
    # (1 in 64) would be read as an option by the storage formatter.
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
