"""How finished messages become ``willowe_messages_total`` and
``willowe_processing_seconds``: each thread tallies a message as one row,
and a flush splits the rows into the two series."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry

from broker.instrumentation import PROCESSED, RETRIED, MessageFinished
from willowe_tasks.events import EventBus
from willowe_tasks.metrics import Metrics

TOPIC = "high-priority-notifications"


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_messages_finished_on_many_threads_mid_flush_are_counted_once_in_their_buckets(
) -> None:
    # Given metrics counting a bus's events
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    bus = EventBus()
    metrics.subscribe(bus)
    events = [
        MessageFinished(TOPIC, "send_match", PROCESSED, 0.003),
        # A run that raised: timed, and counted later by what follows it.
        MessageFinished(TOPIC, "send_match", None, 0.2),
        # Its retry being scheduled: counted, not timed.
        MessageFinished(TOPIC, "send_match", RETRIED, None),
        MessageFinished(TOPIC, "analytics", PROCESSED, 100.0),
    ]

    # When four threads report them 300 times each while flushes run
    def report() -> None:
        for _ in range(300):
            for event in events:
                bus.emit(event)

    threads = [threading.Thread(target=report) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(5):
        metrics.flush()
    for thread in threads:
        thread.join(timeout=30)
    metrics.flush()

    # Then each outcome is counted once a report, the raised run not at all
    def messages(actor: str, outcome: str) -> float:
        return sample(registry, "willowe_messages_total", topic=TOPIC, actor=actor,
                      outcome=outcome)

    assert messages("send_match", PROCESSED) == 1200
    assert messages("send_match", RETRIED) == 1200
    assert messages("analytics", PROCESSED) == 1200
    assert sample(registry, "willowe_messages_total", topic=TOPIC, actor="send_match",
                  outcome="None") == 0

    # And each timed run is in its bucket (cumulative, as a scrape reads them)
    def bucket(actor: str, le: str) -> float:
        return sample(registry, "willowe_processing_seconds_bucket", actor=actor, le=le)

    assert bucket("send_match", "0.0025") == 0
    assert bucket("send_match", "0.005") == 1200
    assert bucket("send_match", "0.1") == 1200
    assert bucket("send_match", "0.25") == 2400
    assert bucket("send_match", "+Inf") == 2400
    assert sample(registry, "willowe_processing_seconds_count", actor="send_match") == 2400
    assert sample(registry, "willowe_processing_seconds_sum",
                  actor="send_match") == pytest.approx(1200 * 0.203)
    # Past the last bound, only +Inf holds it.
    assert bucket("analytics", "60.0") == 0
    assert bucket("analytics", "+Inf") == 1200
    assert sample(registry, "willowe_processing_seconds_sum",
                  actor="analytics") == pytest.approx(120_000.0)

    # And a flush with nothing new adds nothing
    metrics.flush()
    assert messages("send_match", PROCESSED) == 1200
    assert sample(registry, "willowe_processing_seconds_count", actor="send_match") == 2400
