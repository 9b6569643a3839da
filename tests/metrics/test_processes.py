"""The real thing: `dramatiq willowe_tasks --processes 2` and the lag exporter
as the commands an operator runs, scraped by a real Prometheus. One scrape
covers both worker processes; lag still rises, through a scrape and through
Prometheus, once every worker is SIGKILLed; log lines carry trace ids."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from metrics_support import (
    PrometheusServer,
    prometheus_query,
    promtool_check_metrics,
    scrape,
    series,
    total,
    wait_for_scrape,
)
from support import wait_until

from broker.topics import reconcile
from willowe_tasks.app import App
from willowe_tasks.settings import settings_from
from willowe_tasks.testing import worker_command
from willowe_tasks.topics import ALL_TOPIC_SPECS
from willowe_tasks.tracing import trace_id_of

ROOT = Path(__file__).resolve().parents[2]
LOW = "low-priority-notifications"
HIGH = "high-priority-notifications"
EVENTS = 20
LATE_EVENTS = 7


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.fixture
def variables(kafka_bootstrap: str, tmp_path: Path) -> dict[str, str]:
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    reconcile(admin, ALL_TOPIC_SPECS)
    admin.close()
    return {"KAFKA_BROKER": kafka_bootstrap,
            "KAFKA_GROUP_ID": f"test-processes-{uuid.uuid4().hex[:8]}",
            "METRICS_HOST": "127.0.0.1", "METRICS_PORT": str(free_port()),
            "METRICS_EXPORTER_PORT": str(free_port()), "METRICS_DIR": str(tmp_path / "metrics"),
            "DEVICE_REGISTRY_PATH": str(tmp_path / "devices.sqlite3"),
            "DELIVERY_LOG_PATH": str(tmp_path / "delivery-log.sqlite3"),
            "ANALYTICS_PATH": str(tmp_path / "analytics.jsonl")}


@pytest.fixture
def sender(variables: dict[str, str]) -> Iterator[App]:
    app = App(settings_from(variables))
    app.broker.flush_all()
    yield app
    app.close()


@pytest.mark.slow
def test_one_scrape_covers_every_worker_and_lag_outlives_them_all(
        variables: dict[str, str], sender: App, prometheus: PrometheusServer,
        tmp_path: Path) -> None:
    env = {**os.environ, **variables}
    worker_url = f"http://127.0.0.1:{variables['METRICS_PORT']}/metrics"
    exporter_address = f"127.0.0.1:{variables['METRICS_EXPORTER_PORT']}"
    exporter_url = f"http://{exporter_address}/metrics"
    log = tmp_path / "workers.log"
    with ExitStack() as cleanup, log.open("ab") as out:
        # Given the lag exporter and two worker processes, as an operator starts them
        exporter = subprocess.Popen(
            [sys.executable, "-m", "willowe_tasks", "metrics-exporter", "--host", "127.0.0.1"],
            env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
        cleanup.callback(stop, exporter)
        workers = subprocess.Popen(worker_command(processes=2, threads=2), env=env, cwd=ROOT,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        cleanup.callback(stop, workers)
        prometheus.scrape(exporter_address, f"127.0.0.1:{variables['METRICS_PORT']}")
        assert wait_until(lambda: _answers(worker_url) and len(series(
            scrape(worker_url), "willowe_worker_start_time_seconds")) == 2, 180), \
            log.read_text()[-3000:]

        # When analytics events and a notification past its deadline are sent
        for i in range(EVENTS):
            sender.actors.track_event.send("user_login", {"n": i})
        expired = sender.broker.enqueue(sender.actors.send_fast_match.message_with_options(
            args=("user1", {"name": "Анна", "age": 25})).copy(
            message_timestamp=int((time.time() - 3600) * 1000)))

        # Then one scrape of the workers' endpoint counts every process's work
        text = wait_for_scrape(worker_url, lambda t: _processed(t) == EVENTS and total(
            t, "willowe_messages_total", outcome="expired_dropped") == 1, 120)
        assert _processed(text) == EVENTS
        assert total(text, "willowe_messages_total", topic=HIGH, actor="send_fast_match",
                     outcome="expired_dropped") == 1
        assert len(series(text, "willowe_worker_start_time_seconds")) == 2
        checked = promtool_check_metrics(text)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        # and the worker's line about the dropped notification names its trace
        trace_id = trace_id_of(expired.options["traceparent"])
        assert trace_id is not None
        line = re.compile(rf"Dropping expired fast_match notification {expired.message_id}\."
                          rf".*\[trace {trace_id}\]")
        assert wait_until(lambda: line.search(log.read_text()), 30), log.read_text()[-3000:]
        # and the exporter sees the group caught up, with its members
        caught_up = wait_for_scrape(exporter_url, lambda t: total(
            t, "willowe_consumer_lag_messages", topic=LOW) == 0, 60)
        assert total(caught_up, "willowe_consumer_lag_messages", topic=LOW) == 0
        assert total(caught_up, "willowe_group_members") == 2  # one per process

        # When every worker is SIGKILLed and more events come
        os.killpg(workers.pid, signal.SIGKILL)
        workers.wait(timeout=30)
        for i in range(LATE_EVENTS):
            sender.actors.track_event.send("user_login", {"late": i})

        # Then the exporter's scrape still shows the lag rise
        text = scrape(exporter_url)
        assert total(text, "willowe_consumer_lag_messages", topic=LOW) == LATE_EVENTS
        assert total(text, "willowe_consumer_lag_seconds", topic=LOW) > 0
        # and so does Prometheus, while it sees the workers' endpoint down
        query = (f'sum(willowe_consumer_lag_messages{{topic="{LOW}",'
                 f'instance="{exporter_address}"}})')
        assert wait_until(lambda: _value(prometheus_query(prometheus.url, query))
                          == LATE_EVENTS, 60), prometheus_query(prometheus.url, query)
        worker_up = f'up{{instance="127.0.0.1:{variables["METRICS_PORT"]}"}}'
        assert wait_until(lambda: _value(prometheus_query(prometheus.url, worker_up)) == 0, 30)
        # and the killed members leave the group once their sessions expire
        gone = wait_for_scrape(exporter_url,
                               lambda t: total(t, "willowe_group_members") == 0, 60)
        assert total(gone, "willowe_group_members") == 0
    prometheus.scrape()


def _answers(url: str) -> bool:
    try:
        scrape(url)
    except OSError:
        return False
    return True


def _processed(text: str) -> float:
    return total(text, "willowe_messages_total", topic=LOW, actor="track_event",
                 outcome="processed")


def _value(result: list[dict[str, object]]) -> float | None:
    if len(result) != 1:
        return None
    value = result[0]["value"]
    assert isinstance(value, list)
    return float(value[1])
