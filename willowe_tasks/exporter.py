"""The lag exporter: what Kafka knows about the workers' group, for Prometheus.

``python -m willowe_tasks metrics-exporter`` (or ``willowe-metrics-exporter``)
reads the group's committed offsets from Kafka on every scrape, so the lag
an alert needs most, the one while every worker is down, is there too:

=============================  =====  ================  =========================================
metric                         type   labels            meaning
=============================  =====  ================  =========================================
willowe_consumer_lag_messages  gauge  topic, partition  records the group has not finished
willowe_consumer_lag_seconds   gauge  topic             age of the oldest of them (time lag)
willowe_dead_letters_waiting   gauge  topic             records on a ``.XQ`` topic (end − start)
willowe_group_members          gauge  group             members of the group (one per worker
                                                        process, whatever topics it reads)
willowe_kafka_up               gauge                    1 when the last scrape could read Kafka
=============================  =====  ================  =========================================

When Kafka can't be read, a scrape says so with ``willowe_kafka_up 0`` and
nothing else, rather than stale figures.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from dramatiq.common import xq_name
from dramatiq.errors import ConnectionFailed
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec
from kafka.errors import KafkaError
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from broker.admin import QueueAdmin
from willowe_tasks.priorities import BANDS
from willowe_tasks.settings import Settings, load_settings
from willowe_tasks.worker_metrics import MetricsServer

__all__ = ["KafkaLagCollector", "add_parser", "serve_exporter"]

logger = logging.getLogger(__name__)


class KafkaLagCollector:
    """A prometheus-client collector that asks Kafka on each scrape.

    ``topics``: those whose lag is reported (their ``.XQ`` companions give the
    dead letters waiting); ``queue_admin`` reads the group's lag, ``admin``
    is the admin client for the rest.
    """

    def __init__(self, queue_admin: QueueAdmin, admin: Callable[[], KafkaAdminClient],
                 topics: Sequence[str]) -> None:
        self._queue_admin = queue_admin
        self._admin = admin
        self.topics = list(topics)
        self.group_id = queue_admin.group_id
        # One scrape at a time: they share the admin client and the reader.
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        # Without this, registering the collector would call collect(): a
        # round of Kafka requests at start-up, failing if Kafka is away.
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            try:
                lags = self._queue_admin.lag(self.topics)
                waiting = self._records_waiting([xq_name(t) for t in self.topics])
                members = self._members()
            except (KafkaError, ConnectionFailed) as e:
                logger.warning("Can't read the lag of group %r from Kafka: %s", self.group_id, e)
                yield self._up(False)
                return
        messages, seconds, dead, group = self._families()
        oldest: dict[str, float] = dict.fromkeys(self.topics, 0.0)
        for lag in lags:
            messages.add_metric([lag.topic, str(lag.partition)], lag.messages)
            oldest[lag.topic] = max(oldest[lag.topic], lag.seconds())
        for topic, age in oldest.items():
            seconds.add_metric([topic], age)
        for topic, count in waiting.items():
            dead.add_metric([topic], count)
        group.add_metric([self.group_id], members)
        yield from (messages, seconds, dead, group, self._up(True))

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily("willowe_consumer_lag_messages",
                              "Records the group has not finished, from its committed offsets.",
                              labels=["topic", "partition"]),
            GaugeMetricFamily("willowe_consumer_lag_seconds",
                              "Age of the oldest record the group has not finished (time lag).",
                              labels=["topic"]),
            GaugeMetricFamily("willowe_dead_letters_waiting",
                              "Records on a dead-letter (.XQ) topic: end minus start offsets.",
                              labels=["topic"]),
            GaugeMetricFamily("willowe_group_members", "Members of the consumer group.",
                              labels=["group"]),
        )

    @staticmethod
    def _up(up: bool) -> GaugeMetricFamily:
        return GaugeMetricFamily("willowe_kafka_up",
                                 "Whether the last scrape could read Kafka (1) or not (0).",
                                 value=1.0 if up else 0.0)

    def _records_waiting(self, topics: Sequence[str]) -> dict[str, int]:
        partitions: list[TopicPartition] = [
            tp for topic in topics for tp in self._queue_admin.partitions(topic)]
        admin = self._admin()
        ends = admin.list_partition_offsets(dict.fromkeys(partitions, OffsetSpec.LATEST))
        starts = admin.list_partition_offsets(dict.fromkeys(partitions, OffsetSpec.EARLIEST))
        waiting = dict.fromkeys(topics, 0)
        for tp in partitions:
            waiting[tp.topic] += max(0, ends[tp].offset - starts[tp].offset)
        return waiting

    def _members(self) -> int:
        described = self._admin().describe_groups([self.group_id]).get(self.group_id, {})
        return len(described.get("members") or ())


def app_topics() -> list[str]:
    """The application's topics, one per priority band."""
    return [band.topic.name for band in BANDS]


def serve_exporter(settings: Settings, host: str, port: int,
                   topics: Sequence[str] | None = None) -> tuple[MetricsServer, Any]:
    """Serve the lag of ``settings``' group on ``host:port`` (0: a free port),
    from a thread; returns the server and the broker whose clients it uses
    (close both when done)."""
    from willowe_tasks.app import build_broker

    broker = build_broker(settings)
    registry = CollectorRegistry()
    registry.register(KafkaLagCollector(broker.queue_admin, lambda: broker.admin,
                                        topics or app_topics()))
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread), broker


def exporter_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    port = settings.metrics_exporter_port if args.port is None else args.port
    host = settings.metrics_host if args.host is None else args.host
    try:
        server, broker = serve_exporter(settings, host, port)
    except OSError as e:
        print(f"error: can't listen on {host}:{port} (--host/--port, METRICS_HOST/"
              f"METRICS_EXPORTER_PORT): {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"Serving the lag of group {settings.kafka_group_id!r} on {settings.kafka_broker} "
          f"at http://{host}:{server.port}/metrics", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        broker.close()
    return 0


def add_parser(sub: Any) -> None:
    """The ``metrics-exporter`` command of ``python -m willowe_tasks``."""
    parser = sub.add_parser(
        "metrics-exporter",
        help="serve consumer lag, dead letters waiting and group members for Prometheus",
        description="Serve what Kafka knows about the workers' group (lag in messages and "
                    "seconds, dead letters waiting, group members) for Prometheus, read on "
                    "each scrape: it is there while every worker is down.")
    parser.add_argument("--host", help="address to listen on (default: METRICS_HOST)")
    parser.add_argument("--port", type=_port,
                        help="port to listen on (default: METRICS_EXPORTER_PORT, 9192)")
    parser.set_defaults(run=exporter_command)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) < 65_536:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    """The console script: ``willowe-metrics-exporter [--host H] [--port P]``."""
    from willowe_tasks.__main__ import main as cli

    return cli(["metrics-exporter", *(sys.argv[1:] if argv is None else argv)])
