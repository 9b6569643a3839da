"""The kafka-python workarounds (broker/_kafka_python_fixes.py) still apply,
and what they work around does not come back."""

from __future__ import annotations

import logging
import threading

import dramatiq
import pytest
from broker_support import BrokerFactory, WorkerFactory

from broker import KafkaBroker
from broker._kafka_python_fixes import FIXES, apply_fixes


def test_every_workaround_still_finds_the_internals_it_patches(kafka_bootstrap: str) -> None:
    # If kafka-python moves them, a fix turns itself off: this says which one
    # to check against its upstream behaviour again.
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id="fixes-probe",
                             enable_auto_commit=False)
    consumer.subscribe(["fixes-probe"])
    try:
        assert apply_fixes(consumer) == list(FIXES)
    finally:
        consumer.close()


def test_a_worker_on_new_topics_starts_without_metadata_warnings_and_works(
    make_broker: BrokerFactory, start_worker: WorkerFactory, queue_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a broker with two queues (four consumers, one group) on topics it
    # has just created
    broker: KafkaBroker = make_broker()
    done = {"first": threading.Event(), "second": threading.Event()}

    @dramatiq.actor(broker=broker, queue_name=f"{queue_name}-a")
    def first() -> None:
        done["first"].set()

    @dramatiq.actor(broker=broker, queue_name=f"{queue_name}-b")
    def second() -> None:
        done["second"].set()

    # When a worker starts and each queue gets a message
    with caplog.at_level(logging.WARNING):
        start_worker(broker)
        first.send()
        second.send()
        assert done["first"].wait(60) and done["second"].wait(60)
    # Then whichever consumer led the group knew every topic from the start
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [w for w in warnings if "No partition metadata" in w], warnings
