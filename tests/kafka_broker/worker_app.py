"""A Dramatiq app for the broker's process tests, configured by environment.

Run by the tests from the project root as ``python -m tests.<folder>.worker_app``
(one Worker in this process; SIGTERM stops it cleanly) or through the real CLI
as ``dramatiq tests.<folder>.worker_app``. Each queue in ``BROKER_TEST_QUEUES`` gets an actor
``record_<i>`` that appends ``pid queue n partition offset`` to the file
``BROKER_TEST_RECORD`` and then sleeps ``BROKER_TEST_DELAY_S``. Appends use
O_APPEND, one short write per line, so lines from concurrent processes and
threads never interleave, and whatever was written survives a SIGKILL.

Environment: BROKER_TEST_BOOTSTRAP, BROKER_TEST_GROUP, BROKER_TEST_QUEUES
(comma-separated), BROKER_TEST_RECORD, BROKER_TEST_DELAY_S (default 0),
BROKER_TEST_THREADS (default 4), BROKER_TEST_PARTITIONS (default 1),
BROKER_TEST_SLOTS (a folder: static membership), BROKER_TEST_SESSION_MS (6000).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage, default_middleware

from broker import KafkaBroker
from broker.consumer import KafkaMessageProxy

BOOTSTRAP = os.environ.get("BROKER_TEST_BOOTSTRAP", "127.0.0.1:9092")
GROUP = os.environ.get("BROKER_TEST_GROUP", "broker-tests-app")
QUEUES = [q for q in os.environ.get("BROKER_TEST_QUEUES", "broker-tests-app").split(",") if q]
RECORD = Path(os.environ.get("BROKER_TEST_RECORD", "broker-tests-app.log"))
DELAY_S = float(os.environ.get("BROKER_TEST_DELAY_S", "0"))
THREADS = int(os.environ.get("BROKER_TEST_THREADS", "4"))
PARTITIONS = int(os.environ.get("BROKER_TEST_PARTITIONS", "1"))
#: Static membership: a folder for the slots (unset: dynamic members).
SLOTS = os.environ.get("BROKER_TEST_SLOTS")
SESSION_MS = int(os.environ.get("BROKER_TEST_SESSION_MS", "6000"))

app_broker = KafkaBroker(
    bootstrap_servers=BOOTSTRAP, group_id=GROUP, client_id="broker-tests-app",
    topic_partitions=PARTITIONS,
    middleware=[m() for m in default_middleware] + [CurrentMessage()],
    # A killed process's partitions move to the others after 6 s, not 45 s.
    consumer_options={"session_timeout_ms": SESSION_MS, "heartbeat_interval_ms": 500},
    static_membership=SLOTS is not None, membership_dir=SLOTS,
)
dramatiq.set_broker(app_broker)


def record_line(queue: str, n: int) -> None:
    message = CurrentMessage.get_current_message()
    partition = offset = -1
    if isinstance(message, KafkaMessageProxy):
        partition, offset = message.kafka_record.partition, message.kafka_record.offset
    line = f"{os.getpid()} {queue} {n} {partition} {offset}\n".encode()
    fd = os.open(RECORD, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def make_actor(index: int, queue: str) -> Callable[..., Any]:
    def record(n: int) -> None:
        record_line(queue, n)
        if DELAY_S:
            time.sleep(DELAY_S)

    return dramatiq.actor(actor_name=f"record_{index}", queue_name=queue, max_retries=0)(record)


actors = [make_actor(i, queue) for i, queue in enumerate(QUEUES)]


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    worker = dramatiq.Worker(app_broker, worker_threads=THREADS, worker_timeout=100)
    worker.start()
    try:
        stop.wait()
    finally:
        worker.stop(timeout=20_000)
        app_broker.close()


if __name__ == "__main__":
    main()
