"""Running the Node.js client (clients/node) from tests: its own test suite,
its tools, and a driver process that sends what a test asks it to."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from broker.topics import reconcile
from willowe_tasks.topics import ALL_TOPIC_SPECS

ROOT = Path(__file__).resolve().parents[1]
NODE_CLIENT = ROOT / "clients" / "node"
#: The topics the client writes to.
TOPICS = ["high-priority-notifications", "medium-priority-notifications",
          "low-priority-notifications"]
#: Generous: the point is 2 s rather than kafkajs's 25, on a slow, shared machine.
FIRST_FAILURE_SLACK_MS = 1500
#: `make test` installs the package's dependencies (npm ci) and leaves this behind.
INSTALLED_STAMP = NODE_CLIENT / "node_modules" / ".installed"


def node() -> str:
    """The node executable, once the package's dependencies are installed."""
    executable = shutil.which("node")
    if executable is None:
        pytest.fail("Node.js 20+ is needed for clients/node (node is not on PATH)")
    if not INSTALLED_STAMP.exists():
        pytest.fail("clients/node has no node_modules: run the tests with `make test`, "
                    "which runs npm ci there first")
    return executable


def node_env(**settings: str) -> dict[str, str]:
    """The environment of a Node process: this one's, minus any Kafka settings
    a developer has exported, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    return {**env, **settings}


def make_topics(bootstrap: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="tests")
    try:
        reconcile(admin, ALL_TOPIC_SPECS)
    finally:
        admin.close()


def report_vectors(message_id: str, timestamp_ms: int) -> dict[str, dict[str, Any]]:
    """What the Node client makes of each shared vector, by name
    (clients/node/testing/report-vectors.js), with this id and time."""
    report = subprocess.run(
        [node(), "testing/report-vectors.js", message_id, str(timestamp_ms)], cwd=NODE_CLIENT,
        capture_output=True, text=True, timeout=120, check=True, env=node_env(),
    )
    return {line["name"]: line for line in map(json.loads, report.stdout.splitlines())}


class NodeDriver:
    """A Node process holding one KafkaService (clients/node/testing/driver.js).
    Each call sends one command line and waits, bounded, for its answer."""

    def __init__(self, env: dict[str, str]) -> None:
        self._process = subprocess.Popen(
            [node(), "testing/driver.js"], cwd=NODE_CLIENT, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self._answers: queue.Queue[str] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read, args=(self._process.stdout, self._answers.put),
                         daemon=True).start()
        threading.Thread(target=self._read, args=(self._process.stderr, self._stderr.append),
                         daemon=True).start()

    @staticmethod
    def _read(stream: Any, put: Any) -> None:
        for line in stream:
            put(line)

    def call(self, op: str, timeout_s: float = 60.0, **fields: Any) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self._process.stdin.flush()
        try:
            answer: dict[str, Any] = json.loads(self._answers.get(timeout=timeout_s))
        except queue.Empty:
            raise AssertionError(f"the Node driver did not answer {op!r} within {timeout_s} s;"
                                 f" stderr: {''.join(self._stderr)[-2000:]}") from None
        return answer

    def send(self, method: str, *args: Any, timeout_s: float = 60.0) -> dict[str, Any]:
        return self.call("send", timeout_s=timeout_s, method=method, args=list(args))

    def close(self) -> None:
        if self._process.poll() is None:
            with contextlib.suppress(AssertionError):  # it died: nothing to disconnect
                self.call("disconnect", timeout_s=30)
            assert self._process.stdin is not None
            self._process.stdin.close()
            deadline = time.monotonic() + 30
            while self._process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait(timeout=10)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def __enter__(self) -> NodeDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def end_offsets(bootstrap: str, client_options: dict[str, Any] | None = None
                ) -> dict[TopicPartition, int]:
    """Where each partition of the notification topics ends now."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, **(client_options or {}))
    try:
        partitions = [TopicPartition(t, p) for t in TOPICS
                      for p in sorted(consumer.partitions_for_topic(t) or ())]
        return dict(consumer.end_offsets(partitions))
    finally:
        consumer.close()


def read_records(bootstrap: str, start: dict[TopicPartition, int], ids: set[str],
                 timeout_s: float = 60, keep_all: bool = False,
                 client_options: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The records whose dramatiq-message-id is in ``ids``, read from ``start`` on
    until all are found (``keep_all``: every record read by then)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, **(client_options or {}))
    found: dict[str, dict[str, Any]] = {}
    try:
        consumer.assign(list(start))
        for partition, offset in start.items():
            consumer.seek(partition, offset)
        deadline = time.monotonic() + timeout_s
        while not ids <= set(found) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    headers = {k: v.decode() for k, v in record.headers}
                    if keep_all or headers.get("dramatiq-message-id") in ids:
                        found[headers["dramatiq-message-id"]] = {
                            "topic": record.topic, "partition": record.partition,
                            "key": record.key, "headers": headers, "value": record.value}
    finally:
        consumer.close()
    assert ids <= set(found), f"missing on Kafka: {ids - set(found)}"
    return found


def without_timestamp(value: bytes) -> bytes:
    # On the bytes as written: decoding and encoding again would hide differences.
    return re.sub(rb'"message_timestamp":\d+', b'"message_timestamp":0', value)


def without_traceparent(value: bytes) -> bytes:
    """A Python send()'s record without the traceparent option its trace
    middleware adds: the Node client sets none, and the worker starts the
    trace of such a record when it consumes it (willowe_tasks.tracing)."""
    return re.sub(rb',"traceparent":"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}"', b"", value)
