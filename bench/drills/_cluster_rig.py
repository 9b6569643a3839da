"""What the cluster drills share: their private three-node Kafka, a sender
that calls ``send()`` at a steady rate as a web server would, a bench worker
draining the same queue, and the counts a verdict is made of.

The sender runs on a thread of the drill's own process, through
``broker.KafkaBroker`` with the application's send settings (2 s send
timeout, the send circuit), and writes down every send's outcome and time.
A send reported as sent must be processed by the worker (lost must be 0);
a failed send may still have reached Kafka (``maybe_sent``) and be
processed, which is counted, not an error.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import dramatiq
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from bench.drills._common import Context, Result, tally, wait_until
from bench.drills._drain import Drain
from bench.log import say
from bench.redis_server import free_port
from bench.runner import kill
from broker import KafkaBroker
from broker.localkafka.cluster import LocalKafkaCluster
from broker.topics import TopicSpec, reconcile

#: Sends per second, one at a time (each a web request's send()).
RATE = 50.0

#: The drills' topic: the guide's shape (3 copies, 2 in sync for acks=all).
PARTITIONS = 3
REPLICATION_FACTOR = 3
MIN_INSYNC_REPLICAS = 2

#: Seconds each message takes the worker: enough that a fault finds
#: messages in flight, little enough to keep up with RATE at 8 threads.
WORK_MS = 5

#: Longest wait for the drill's steady state, replicas to catch up, or the
#: worker to process everything sent, in seconds.
STEADY_TIMEOUT_S = 60.0
IN_SYNC_TIMEOUT_S = 120.0
FINISH_TIMEOUT_S = 120.0

#: Wait after the drain, so late redeliveries still count as duplicates.
LATE_S = 2.0

#: Failed sends a result lists (the rest are counted).
FAILURES_SHOWN = 10

#: Kafka's internal topic of committed offsets: the workers need it in sync too.
OFFSETS_TOPIC = "__consumer_offsets"


class PrivateCluster:
    """The drills' three-node Kafka in ``home`` on free ports: started on
    first use (30–60 s on 2 cores), stopped at the end of the run."""

    def __init__(self, home: Path, jars: Path) -> None:
        self.home = home
        self.jars = jars
        self._cluster: LocalKafkaCluster | None = None

    def get(self) -> LocalKafkaCluster:
        if self._cluster is None:
            ports = [free_port() for _ in range(6)]
            self._cluster = LocalKafkaCluster(self.home, nodes=3, ports=ports[:3],
                                              controller_ports=ports[3:], jars=self.jars)
            say(f"  starting a three-node Kafka in {self.home} …")
            self._cluster.start()
        return self._cluster

    def close(self) -> None:
        if self._cluster is not None:
            self._cluster.stop()
            self._cluster.kill()


@dataclass(frozen=True)
class SendRecord:
    """One send: its number, when it started (seconds into the run) and how
    long it took, and ``outcome`` "sent" or the exception's class name."""

    n: int
    at: float
    seconds: float
    outcome: str
    error: str = ""
    maybe_sent: bool = False


class Sender:
    """Sends ``0, 1, 2, …`` to ``queue`` at RATE on a thread until stopped."""

    def __init__(self, bootstrap: str, queue: str, *, rate: float = RATE) -> None:
        self.broker = KafkaBroker(bootstrap_servers=bootstrap, client_id="drill-sender",
                                  create_topics=False)
        self.broker.declare_queue(queue)
        # The bench worker's actor: (sent, body), the body being the number.
        self.actor = dramatiq.actor(actor_name="bench_noop", queue_name=queue,
                                    broker=self.broker)(_noop)
        self.rate = rate
        self.records: list[SendRecord] = []
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-sender", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        # kafka-python's close raises for records it could not send; each
        # is a failed send, counted already.
        with contextlib.suppress(KafkaError):
            self.broker.close()

    def clock(self) -> float:
        """Seconds into the run, as ``SendRecord.at``."""
        return time.monotonic() - self.started

    def _run(self) -> None:
        n = 0
        pace = time.monotonic()
        while not self._stop.is_set():
            at = self.clock()
            try:
                self.actor.send(0.0, str(n))
                record = SendRecord(n, at, self.clock() - at, "sent")
            except Exception as e:  # the drill counts whatever send() raised
                record = SendRecord(n, at, self.clock() - at, type(e).__name__, str(e)[:300],
                                    bool(getattr(e, "maybe_sent", False)))
            self.records.append(record)
            n += 1
            pace += 1 / self.rate
            time.sleep(max(0.0, pace - time.monotonic()))

    def sent(self) -> set[str]:
        """The numbers whose send() returned: Kafka has them."""
        return {str(r.n) for r in self.records if r.outcome == "sent"}

    def failed(self, since: float = 0.0) -> list[SendRecord]:
        return [r for r in self.records if r.outcome != "sent" and r.at >= since]

    def count_sent(self, since: float = 0.0) -> int:
        return sum(1 for r in self.records if r.outcome == "sent" and r.at >= since)

    def summary(self) -> Result:
        """Outcomes by kind, and send times (ms) of the sends that went through."""
        records = list(self.records)
        seconds = [r.seconds for r in records if r.outcome == "sent"]
        p99 = statistics.quantiles(seconds, n=100)[98] if len(seconds) > 1 else 0.0
        return {"outcomes": dict(Counter(r.outcome for r in records)),
                "send_p99_ms": round(p99 * 1000, 1),
                "send_max_ms": round(max(seconds, default=0.0) * 1000, 1),
                # The first few failures, with when (seconds into the run) and why.
                "failures": [{"at": round(r.at, 2), "seconds": round(r.seconds, 2),
                              "outcome": r.outcome, "error": r.error[:160]}
                             for r in records if r.outcome != "sent"][:FAILURES_SHOWN]}


def _noop(sent: float, body: str) -> None:
    """Never runs here: the worker processes it."""


class ClusterRun:
    """One drill's queue on the cluster (3 copies, 2 in sync), with a bench
    worker draining it and a sender filling it; on exit the sender stops and
    the worker is given time to process all that was sent."""

    def __init__(self, ctx: Context, name: str) -> None:
        self.cluster = ctx.need_cluster().get()
        self.ctx = replace(ctx, bootstrap=self.cluster.bootstrap_servers)
        self.drain = Drain(self.ctx, name, 0, partitions=PARTITIONS, work_ms=WORK_MS)
        self.queue = self.drain.queue
        self.topics = [s.name for s in self._specs()]
        self.admin = KafkaAdminClient(bootstrap_servers=self.cluster.bootstrap_servers,
                                      client_id="drills")
        self.sender = Sender(self.cluster.bootstrap_servers, self.queue)
        self.finished: float | None = None

    def _specs(self) -> list[TopicSpec]:
        return TopicSpec(self.queue, partitions=PARTITIONS, retention_ms=3_600_000,
                         replication_factor=REPLICATION_FACTOR,
                         min_insync_replicas=MIN_INSYNC_REPLICAS).with_companions()

    def __enter__(self) -> Self:
        for node in self.cluster.node_ids:  # an earlier drill may have left one down
            self.cluster.start_node(node)
        reconcile(self.admin, self._specs())
        self.wait_in_sync()
        self.worker = self.drain.start_worker()
        self.sender.start()
        steady = wait_until(lambda: self.drain.distinct() >= RATE, STEADY_TIMEOUT_S,
                            progress=self.progress)
        if steady is None:
            raise RuntimeError(f"sends never flowed: {self.progress()}")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.sender.stop()
        try:
            if kind is None:
                sent = self.sender.sent()
                self.finished = wait_until(lambda: sent <= set(self.drain.seen()),
                                           FINISH_TIMEOUT_S, progress=self.progress)
                time.sleep(LATE_S)
        finally:
            kill(self.worker)
            self.admin.close()

    def progress(self) -> str:
        outcomes = Counter(r.outcome for r in self.sender.records)
        return (f"{self.drain.progress()}; sends {dict(outcomes)}; "
                f"brokers up {sorted(self.cluster.registered_brokers())}")

    def in_sync(self) -> bool:
        """Whether every partition of the drill's topics (and the offsets
        topic) has all its replicas in sync."""
        described = self.admin.describe_topics([*self.topics, OFFSETS_TOPIC])
        return all(len(p["isr_nodes"]) == len(p["replica_nodes"])
                   for t in described for p in t["partitions"])

    def wait_in_sync(self) -> float:
        took = wait_until(self.in_sync, IN_SYNC_TIMEOUT_S, progress=self.progress)
        if took is None:
            raise RuntimeError(f"replicas never caught up: {self.progress()}")
        return took

    def leaders(self) -> dict[int, int]:
        """The leader of each partition of the queue's topic."""
        [topic] = self.admin.describe_topics([self.queue])
        return {p["partition_index"]: p["leader_id"] for p in topic["partitions"]}

    def active_controller(self) -> int:
        """The node leading the KRaft quorum (the active controller)."""
        quorum: dict[str, Any] = self.admin.describe_metadata_quorum()
        return int(quorum["topics"][0]["partitions"][0]["leader_id"])

    def verdict(self) -> Result:
        """Every number sent processed (lost 0); what else was counted."""
        failed = self.sender.failed()
        return {**send_verdict(self.sender.sent(), {str(r.n) for r in failed if r.maybe_sent},
                               self.drain.seen()),
                "attempted": len(self.sender.records), "failed_sends": len(failed),
                **self.sender.summary(),
                **({} if self.finished is not None else {"ok": False})}


def send_verdict(sent: set[str], maybe_sent: set[str], seen: Counter[str]) -> Result:
    """Counts of a send drill: each number whose send returned must be
    processed (else lost); a number processed must have been sent, or its
    send failed after the record reached the producer (``maybe_sent``:
    counted as failed but stored); anything else is a stray."""
    counts = tally(sent, seen)
    strays = set(seen) - sent - maybe_sent
    return {**counts, "failed_but_stored": len(set(seen) & maybe_sent),
            "strays": len(strays), "ok": counts["lost"] == 0 and not strays}
