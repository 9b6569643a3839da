"""Several local Kafka nodes on this machine forming one KRaft cluster: each
node is broker and controller, with its own ports and data, and all of them
are the voters of one controller quorum.

The home holds one folder a node (``node-1/``, ``node-2/`` …, each laid out
like a single local Kafka's home) and ``quorum.json``: the cluster id and
each voter's directory id, chosen once and given to the storage formatter of
every node (``--initial-controllers``, KIP-853's dynamic quorum; Kafka 4.1's
formatter takes ``--standalone`` only for a quorum of one).

Start-up waits on readiness, never on time: the cluster is up when every
node answers and the controller has all of them registered and unfenced.
Fault drills kill or stop single nodes (``kill_node``, ``stop_node``) and
bring them back (``start_node``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from broker.localkafka import DEFAULT_STOP_TIMEOUT_S, LocalKafka, _cluster_id
from broker.localkafka._process import say, terminate, wait_until_ready

__all__ = ["LocalKafkaCluster"]

#: Nodes in the cluster unless told otherwise.
DEFAULT_NODES = 3

#: Client port of node 1; node n listens on this + n - 1.
DEFAULT_FIRST_PORT = 9192

#: Controller port of node 1; node n listens on this + n - 1.
DEFAULT_FIRST_CONTROLLER_PORT = 9292

#: JVM heap of each node: three of them share a 2-core machine.
DEFAULT_NODE_HEAP = "384m"

#: How long ``start`` waits for every node to be registered: three JVMs
#: starting at once on 2 cores take several times one's start-up.
CLUSTER_START_TIMEOUT_S = 240.0

#: How long ``start_node`` waits for one node to be back and registered.
NODE_START_TIMEOUT_S = 120.0

#: Replicas of every internal topic, and the default of new topics.
MAX_REPLICATION_FACTOR = 3

#: How long the controller waits for a broker's heartbeat before fencing it
#: (KRaft's broker.session.timeout.ms, 9,000 by default), in milliseconds.
#: Until then a SIGKILLed broker still leads its partitions and counts as in
#: sync, so every acks=all write waits for it; a send gives up after
#: KAFKA_SEND_TIMEOUT_MS (2,000). Production clusters need the same relation
#: (README, "A three-node cluster").
BROKER_SESSION_TIMEOUT_MS = 1_500

#: How often each broker heartbeats to the controller (broker.heartbeat.interval.ms,
#: 2,000 by default), in milliseconds: several beats fit in one session, so
#: one late beat on a busy machine does not fence a live broker.
BROKER_HEARTBEAT_INTERVAL_MS = 300

#: Readiness probes answer within this, in seconds.
PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class _ClusterNode(LocalKafka):
    """One combined broker+controller of a cluster."""

    node_id: int = 1
    #: controller.quorum.bootstrap.servers: every voter's controller address.
    quorum: str = ""
    #: The formatter's --initial-controllers: id@host:port:directory-id of every voter.
    initial_controllers: str = ""
    cluster_id: str = ""
    replication_factor: int = MAX_REPLICATION_FACTOR

    def _server_properties(self) -> dict[str, str]:
        replicas = str(self.replication_factor)
        # One replica may be down while acks=all writes still succeed.
        min_isr = str(max(1, self.replication_factor - 1))
        return {
            **super()._server_properties(),
            "node.id": str(self.node_id),
            "controller.quorum.bootstrap.servers": self.quorum,
            "offsets.topic.replication.factor": replicas,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min_isr,
            "default.replication.factor": replicas,
            # The offsets topic has no min ISR setting of its own: it takes the
            # broker's default, as does every topic that doesn't set one.
            "min.insync.replicas": min_isr,
            # A crashed broker stays in every in-sync replica set, holding up
            # each acks=all write, until the controller fences it: fence it
            # well within a send's 2 s (KAFKA_SEND_TIMEOUT_MS), not after 9 s.
            "broker.session.timeout.ms": str(BROKER_SESSION_TIMEOUT_MS),
            "broker.heartbeat.interval.ms": str(BROKER_HEARTBEAT_INTERVAL_MS),
        }

    def _format_options(self) -> list[str]:
        return ["-t", self.cluster_id, "--initial-controllers", self.initial_controllers]


class LocalKafkaCluster:
    """``nodes`` local Kafka nodes in ``home``, node ``n`` (from 1) listening
    on ``ports[n - 1]`` for clients and ``controller_ports[n - 1]`` for the
    quorum. The node numbers are the brokers' ids."""

    def __init__(
        self,
        home: Path,
        nodes: int = DEFAULT_NODES,
        host: str = "127.0.0.1",
        ports: Sequence[int] | None = None,
        controller_ports: Sequence[int] | None = None,
        heap: str = DEFAULT_NODE_HEAP,
        jars: Path | None = None,
    ) -> None:
        if nodes < 2:
            raise ValueError(f"nodes must be at least 2 for a cluster, got {nodes}")
        ports = list(ports or range(DEFAULT_FIRST_PORT, DEFAULT_FIRST_PORT + nodes))
        controller_ports = list(controller_ports or range(
            DEFAULT_FIRST_CONTROLLER_PORT, DEFAULT_FIRST_CONTROLLER_PORT + nodes))
        for name, given in (("ports", ports), ("controller_ports", controller_ports)):
            if len(given) != nodes:
                raise ValueError(f"{name} must list {nodes} ports, one a node; got {given}")
        self.home = home
        self.host = host
        self._ids = ids = self._quorum_ids(nodes)
        directory_ids = ids["directory_ids"]
        voters = list(zip(range(1, nodes + 1), controller_ports, strict=True))
        self.nodes = tuple(
            _ClusterNode(
                home / f"node-{node_id}", host=host, port=port, controller_port=controller_port,
                heap=heap, jars=jars or home / "libs", node_id=node_id,
                quorum=",".join(f"{host}:{c}" for _, c in voters),
                initial_controllers=",".join(
                    f"{i}@{host}:{c}:{directory_ids[str(i)]}" for i, c in voters),
                cluster_id=ids["cluster_id"],
                replication_factor=min(MAX_REPLICATION_FACTOR, nodes),
            )
            for (node_id, controller_port), port in zip(voters, ports, strict=True)
        )

    def __repr__(self) -> str:
        return f"LocalKafkaCluster({str(self.home)!r}, nodes={len(self.nodes)})"

    @property
    def bootstrap_servers(self) -> str:
        """Every node's client address, comma-separated."""
        return ",".join(node.bootstrap_servers for node in self.nodes)

    @property
    def node_ids(self) -> list[int]:
        return [node.node_id for node in self.nodes]

    @property
    def quorum_file(self) -> Path:
        return self.home / "quorum.json"

    def node(self, node_id: int) -> LocalKafka:
        """Node ``node_id`` (1 to the number of nodes), to start, stop or read its log."""
        if not 1 <= node_id <= len(self.nodes):
            raise ValueError(f"node must be 1 to {len(self.nodes)}, got {node_id}")
        return self.nodes[node_id - 1]

    # -- state ---------------------------------------------------------------

    def registered_brokers(self, timeout_s: float = PROBE_TIMEOUT_S) -> set[int]:
        """The ids of the brokers the cluster has registered and unfenced
        (empty if no node answers)."""
        timeout_ms = int(timeout_s * 1000)
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers.split(","),
                request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms,
            )
        except (KafkaError, OSError):
            return set()
        try:
            # The request goes to any broker the metadata names, a dead one
            # not yet fenced included; the client then keeps away from that
            # one for a while, so the next try asks another.
            for _ in self.nodes:
                try:
                    brokers: list[dict[str, Any]] = admin.describe_cluster()["brokers"]
                except (KafkaError, OSError):
                    continue
                return {b["broker_id"] for b in brokers if not b.get("is_fenced")}
            return set()
        finally:
            admin.close()

    def answers(self) -> bool:
        """Whether every node answers and is registered with the cluster."""
        return (self.registered_brokers() == set(self.node_ids)
                and all(node.answers(timeout_s=PROBE_TIMEOUT_S) for node in self.nodes))

    def status(self) -> list[str]:
        """One line a node, then the registered brokers."""
        registered = self.registered_brokers()
        lines = []
        for node in self.nodes:
            pid = node.pid()
            state = ("answers" if node.answers(timeout_s=PROBE_TIMEOUT_S)
                     else "does not answer") if pid else "is not running"
            lines.append(f"node {node.node_id} on {node.bootstrap_servers} {state}"
                         + (f" (pid {pid}, log {node.log_file})" if pid else ""))
        lines.append("registered brokers: " + (", ".join(map(str, sorted(registered))) or "none"))
        return lines

    # -- lifecycle -----------------------------------------------------------

    def start(self, timeout_s: float = CLUSTER_START_TIMEOUT_S) -> bool:
        """Start every node that isn't running and wait until all are
        registered; return whether any was started."""
        if self.answers():
            say(f"The cluster already answers on {self.bootstrap_servers}; nothing to do.")
            return False
        self._prepare_all()
        started = [(node, node.launch()) for node in self.nodes if node.pid() is None]
        say(f"Starting {len(started)} of {len(self.nodes)} Kafka nodes "
            f"(pids {', '.join(str(p.pid) for _, p in started) or 'none'}) …")
        wait_until_ready(self.answers, started, timeout_s,
                         f"The cluster on {self.bootstrap_servers}")
        say(f"The cluster is up: KAFKA_BROKER={self.bootstrap_servers}; logs: "
            f"{self.home}/node-*/server.log")
        return bool(started)

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
        """Stop every node at once (SIGTERM, then SIGKILL after ``timeout_s``);
        return whether any was running."""
        running = [(node, pid) for node in self.nodes if (pid := node.pid()) is not None]
        if not running:
            say("The local Kafka cluster is not running.")
            return False
        say(f"Stopping {len(running)} Kafka nodes …")
        killed = terminate([pid for _, pid in running], timeout_s)
        if killed:
            say(f"{len(killed)} did not stop within {timeout_s:.0f}s; killed them.")
        for node, _ in running:
            node.pid_file.unlink(missing_ok=True)
        say("The cluster stopped.")
        return True

    def kill(self) -> None:
        """SIGKILL every node, as a power cut would."""
        for node in self.nodes:
            node.kill()

    def start_node(self, node_id: int, timeout_s: float = NODE_START_TIMEOUT_S) -> bool:
        """Start one node unless it runs, and wait until it answers and is
        registered; return whether it was started. With the quorum lost (a
        majority down) it is ready only once enough voters are back."""
        node = self.node(node_id)
        if node.pid() is not None and self._node_ready(node_id):
            return False
        self._save_quorum_ids()
        started = [] if node.pid() is not None else [(node, node.launch())]
        wait_until_ready(lambda: self._node_ready(node_id), started, timeout_s,
                         f"Node {node_id} on {node.bootstrap_servers}")
        return bool(started)

    def stop_node(self, node_id: int, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
        """Stop one node cleanly (a rolling restart's step)."""
        return self.node(node_id).stop(timeout_s)

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node, as a crash would."""
        self.node(node_id).kill()

    # -- internals -----------------------------------------------------------

    def _node_ready(self, node_id: int) -> bool:
        return (self.node(node_id).answers(timeout_s=PROBE_TIMEOUT_S)
                and node_id in self.registered_brokers())

    def _prepare_all(self) -> None:
        """Configure every node and format the new ones, in parallel: each
        format is a JVM of its own."""
        self._save_quorum_ids()
        self.nodes[0].fetch_jars()  # once, before the nodes share the folder
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            for done in [pool.submit(node.prepare) for node in self.nodes]:
                done.result()

    def _quorum_ids(self, nodes: int) -> dict[str, Any]:
        """The cluster id and voters' directory ids: those the nodes were
        formatted with, or new ones (saved when the first node is formatted)."""
        try:
            ids: dict[str, Any] = json.loads(self.quorum_file.read_text())
        except FileNotFoundError:
            return {"cluster_id": _cluster_id(),
                    "directory_ids": {str(i): _cluster_id() for i in range(1, nodes + 1)}}
        if sorted(ids["directory_ids"]) != sorted(str(i) for i in range(1, nodes + 1)):
            raise ValueError(
                f"{self.home} holds a cluster of {len(ids['directory_ids'])} nodes, not {nodes}; "
                "use that number or delete the folder"
            )
        return ids

    def _save_quorum_ids(self) -> None:
        if not self.quorum_file.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            self.quorum_file.write_text(json.dumps(self._ids, indent=2) + "\n")
