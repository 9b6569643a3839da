"""What send() does when Kafka is away (SEND_FALLBACK): raise fast, keep the
message in a spool until Kafka answers, or deliver it in the sending process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from dramatiq.errors import ConnectionFailed
from notification_support import HIGH, IOS_TOKEN, Rig, register_both
from support import Gate, wait_until

from broker.circuit import CircuitOpen
from willowe_tasks.app import App

ROOT = Path(__file__).resolve().parents[2]

#: What a web process gets from send() while the circuit is open, at most.
FAST_S = 0.05


@pytest.fixture
def gate(kafka_bootstrap: str) -> Iterator[Gate]:
    host, _, port = kafka_bootstrap.rpartition(":")
    gate = Gate((host, int(port)))
    yield gate
    gate.close()


def web_app(sender: Rig, gate: Gate, **settings: object) -> App:
    """A web process's app: the test's settings, reaching Kafka through the gate."""
    return App(sender.app.settings.model_copy(update={
        "kafka_broker": gate.address, "kafka_probe_interval_ms": 300, **settings}))


def test_raise_fails_within_two_seconds_then_at_once(sender: Rig, gate: Gate) -> None:
    web = web_app(sender, gate)
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionFailed):
            web.actors.send_like.send("user456", {"name": "Мария", "age": 28})
        assert time.monotonic() - started < 2.5
        slowest = 0.0
        for _ in range(20):
            started = time.monotonic()
            with pytest.raises(CircuitOpen):
                web.actors.send_like.send("user456", {"name": "Мария", "age": 28})
            slowest = max(slowest, time.monotonic() - started)
        assert slowest < FAST_S
    finally:
        web.close()


def test_spool_keeps_sends_while_kafka_is_away_and_they_are_pushed_once_it_answers(
    sender: Rig, gate: Gate, tmp_path: Path,
) -> None:
    register_both(sender, "user-spool")
    web = web_app(sender, gate, send_fallback="spool", spool_path=tmp_path / "spool.sqlite3")
    worker = dramatiq.Worker(sender.broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        for n in range(5):
            web.actors.send_match.send("user-spool", {"name": f"Анна {n}", "age": 25})
        assert web.broker.spool is not None and web.broker.spool.depth() == 5
        assert sender.apns.received == []
        gate.open()
        assert wait_until(lambda: len(sender.apns.delivered) == 5, 60)
        sender.join(HIGH)
    finally:
        worker.stop()
        web.close()
    assert len(sender.fcm.delivered) == 5
    assert sorted(r.json["aps"]["alert"]["body"] for r in sender.apns.delivered) == [
        f"Анна {n}, 25" for n in range(5)]


def test_direct_delivers_in_the_sending_process_and_the_worker_skips_it_later(
    sender: Rig, gate: Gate,
) -> None:
    register_both(sender)
    web = web_app(sender, gate, send_fallback="direct")
    try:
        message = web.actors.send_match.send("user123", {"name": "Анна", "age": 25})
    finally:
        web.close()
    # Pushed at once, by the web process itself
    [ios] = sender.apns.wait_for(1)
    assert ios.token == IOS_TOKEN
    assert ios.data["notification_id"] == message.message_id
    # If Kafka took the record after all, the worker finds both pairs delivered
    sender.broker.enqueue(message)
    worker = dramatiq.Worker(sender.broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        sender.join(HIGH)
    finally:
        worker.stop()
    assert len(sender.apns.received) == 1 and len(sender.fcm.received) == 1


def test_spool_flush_sends_what_a_dead_sender_left(
    sender: Rig, gate: Gate, tmp_path: Path, kafka_bootstrap: str,
) -> None:
    path = tmp_path / "spool.sqlite3"
    web = web_app(sender, gate, send_fallback="spool", spool_path=path,
                  kafka_probe_interval_ms=60_000)
    try:
        for n in range(3):
            web.actors.send_like.send("user456", {"name": f"Мария {n}", "age": 28})
    finally:
        web.close()  # the sender is gone; its spool stays
    result = subprocess.run(
        [sys.executable, "-m", "willowe_tasks", "spool", "flush", "--path", str(path)],
        env={**os.environ, "KAFKA_BROKER": kafka_bootstrap}, cwd=ROOT, capture_output=True,
        text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 sent, 0 waiting" in result.stdout
    status = subprocess.run(
        [sys.executable, "-m", "willowe_tasks", "spool", "status", "--path", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "0 record(s) waiting" in status.stdout
