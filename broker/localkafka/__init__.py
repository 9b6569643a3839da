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
code (``LocalKafka(home).start()``), as the test fixtures do.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

__all__ = ["CLI_TOOLS", "KafkaNotReady", "LocalKafka", "POM_PATH"]

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
    "kafka-storage": "kafka.tools.StorageTool",
}

#: How long ``start`` waits for the broker to answer a metadata request.
DEFAULT_START_TIMEOUT_S = 90.0

#: How long ``stop`` waits for a clean shutdown before SIGKILL.
DEFAULT_STOP_TIMEOUT_S = 30.0

#: JVM heap for the local broker; small, since it shares a 2-core machine.
DEFAULT_HEAP = "512m"


class KafkaNotReady(RuntimeError):
    """The local broker did not start, or did not answer in time."""


@dataclass(frozen=True)
class LocalKafka:
    """A local single-node Kafka living in ``home``, listening on ``host:port``
    for clients and ``host:controller_port`` for its KRaft controller."""

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
        _say(f"Fetching Apache Kafka jars (about 55 MB, once) into {self.libs} …")
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
        return pid if b"kafka.Kafka" in cmdline else None

    def answers(self, timeout_s: float = 5.0) -> bool:
        """Whether a Kafka broker answers a metadata request at our address."""
        return broker_answers(self.bootstrap_servers, timeout_s=timeout_s)

    def start(self, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> bool:
        """Start the broker unless one already answers; return whether it started one."""
        if self.answers(timeout_s=2.0):
            _say(f"Kafka already answers on {self.bootstrap_servers}; nothing to do.")
            return False
        if _port_taken(self.host, self.port) or _port_taken(self.host, self.controller_port):
            raise KafkaNotReady(
                f"port {self.port} or {self.controller_port} on {self.host} is taken by something "
                "that is not a Kafka broker; stop it or pick other ports"
            )
        self._check_java()
        self.fetch_jars()
        self._write_config()
        self._format_once()
        log = self.log_file.open("ab")
        proc = subprocess.Popen(
            self._java("kafka.Kafka", str(self.properties_file)),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives `make kafka` and the test session's signals
        )
        self.pid_file.write_text(str(proc.pid))
        _say(f"Starting Kafka (pid {proc.pid}) on {self.bootstrap_servers} …")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise KafkaNotReady(
                    f"Kafka exited with status {proc.returncode}; see {self.log_file}:\n"
                    + self.log_tail()
                )
            if self.answers(timeout_s=2.0):
                _say(f"Kafka is up on {self.bootstrap_servers}; log: {self.log_file}")
                return True
            time.sleep(0.5)
        proc.kill()
        raise KafkaNotReady(
            f"Kafka did not answer on {self.bootstrap_servers} within {timeout_s:.0f}s; "
            f"see {self.log_file}:\n" + self.log_tail()
        )

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
        """Stop the broker this home started (SIGTERM, then SIGKILL); return
        whether one was running."""
        pid = self.pid()
        if pid is None:
            _say("Local Kafka is not running.")
            return False
        _say(f"Stopping Kafka (pid {pid}) …")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            _say(f"Kafka did not stop within {timeout_s:.0f}s; killing it.")
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        _say("Kafka stopped.")
        return True

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would (fault drills and tests)."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)

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
        return self._java(CLI_TOOLS[name], *args, heap="256m", log_config="tools-log4j2.properties")

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
        self.properties_file.write_text(_SERVER_PROPERTIES.format(
            host=self.host, port=self.port, controller_port=self.controller_port,
            data_dir=self.data_dir,
        ))
        (self.home / "log4j2.properties").write_text(_LOG4J2_PROPERTIES)
        # CLI tools print their answers on stdout: keep their logging off it.
        (self.home / "tools-log4j2.properties").write_text(_TOOLS_LOG4J2_PROPERTIES)

    def _format_once(self) -> None:
        # Formatting twice would refuse (or wipe); the meta file says it was done.
        if (self.data_dir / "meta.properties").exists():
            return
        _say(f"Formatting KRaft storage in {self.data_dir} …")
        subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "--standalone",
                       "-t", _cluster_id(), "-c", str(self.properties_file), heap="256m",
                       log_config="tools-log4j2.properties"),
            check=True, stdout=subprocess.DEVNULL,
        )


def broker_answers(bootstrap_servers: str, timeout_s: float = 5.0) -> bool:
    """Whether any broker in the comma-separated list answers a metadata request."""
    hosts = [h.strip() for h in bootstrap_servers.split(",") if h.strip()]
    if not any(_port_taken(*_split_host_port(h)) for h in hosts):
        return False  # nothing listens: skip the client's slower failure path
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=hosts, request_timeout_ms=int(timeout_s * 1000),
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def _cluster_id() -> str:
    # Kafka wants a base64url-encoded 16-byte UUID. One starting with "-"
    # (1 in 64) would be read as an option by the storage formatter.
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _split_host_port(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host.strip("[]") or "localhost", int(port or 9092)


def _port_taken(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


_SERVER_PROPERTIES = """\
# Written by broker.localkafka on every start; edit the code, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers={host}:{controller_port}
listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data_dir}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# One node: no reason to wait for other members before the first rebalance.
group.initial.rebalance.delay.ms=0
log.retention.check.interval.ms=300000
"""

_LOG4J2_PROPERTIES = """\
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
logger.raft.name = org.apache.kafka.raft
logger.raft.level = WARN
"""

_TOOLS_LOG4J2_PROPERTIES = """\
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %p %m%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
"""
