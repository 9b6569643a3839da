"""Our broker with the application's metrics on, as a worker of
``dramatiq willowe_tasks`` has them: the MessageEvents middleware and the
broker's events on an event bus, counted by the Prometheus listener into
prometheus-client's multiprocess files. Compared with ``ours.py`` it gives
the cost of metrics per message."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import dramatiq
from _common import Params
from _dramatiq_peer import run
from ours import Ours
from prometheus_client import CollectorRegistry

from broker.instrumentation import MessageEvents
from willowe_tasks.events import EventBus
from willowe_tasks.metrics import Metrics
from willowe_tasks.worker_metrics import use_multiprocess_directory


class OursWithMetrics(Ours):
    def make_broker(self, params: Params) -> dramatiq.Broker:
        bus = EventBus()
        broker = self.kafka_broker(params, events=bus.emit)
        broker.add_middleware(MessageEvents(bus.emit))
        directory = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
        atexit.register(shutil.rmtree, directory, True)
        use_multiprocess_directory(directory)
        metrics = Metrics(CollectorRegistry())
        metrics.subscribe(bus)
        # Written out every second, as a worker process does: what the files
        # cost is part of what metrics cost.
        metrics.flush_every()
        atexit.register(metrics.stop)
        return broker


if __name__ == "__main__":
    run(OursWithMetrics())
