"""Dramatiq's own middleware, on this broker: each one's promise holds on Kafka."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from broker_support import BrokerFactory, WorkerFactory, read_records
from dramatiq.common import xq_name
from dramatiq.middleware import (
    AsyncIO,
    CurrentMessage,
    Middleware,
    TimeLimitExceeded,
    default_middleware,
)
from dramatiq.results import ResultFailure, Results
from dramatiq.results.backends import StubBackend

from broker import KafkaBroker
from broker.dead_letters import header_dict


def booted_broker(make_broker: BrokerFactory, *extra: Middleware) -> KafkaBroker:
    broker = make_broker(middleware=[m() for m in default_middleware] + list(extra))
    # The dramatiq CLI announces process boot; TimeLimit and Prometheus start there.
    broker.emit_after("process_boot")
    return broker


@pytest.fixture
def broker(make_broker: BrokerFactory) -> KafkaBroker:
    """Dramatiq's defaults (AgeLimit, TimeLimit, ShutdownNotifications, Callbacks,
    Pipelines, Retries) plus CurrentMessage, AsyncIO and Results."""
    return booted_broker(make_broker, CurrentMessage(), AsyncIO(),
                         Results(backend=StubBackend()))


@pytest.fixture
def running(broker: KafkaBroker, start_worker: WorkerFactory) -> Iterator[KafkaBroker]:
    start_worker(broker, threads=4)
    yield broker


def dead_letters(kafka_bootstrap: str, queue_name: str) -> list[dict[str, str]]:
    return [header_dict(r.headers) for r in read_records(kafka_bootstrap, xq_name(queue_name))]


def test_retries_skip_exceptions_the_actor_throws_on_purpose(
    running: KafkaBroker, queue_name: str, kafka_bootstrap: str,
) -> None:
    # Given an actor that declares PermissionError as expected (no retry)
    attempts: list[int] = []

    @dramatiq.actor(broker=running, queue_name=queue_name, throws=(PermissionError,),
                    max_retries=5, min_backoff=50)
    def guarded() -> None:
        attempts.append(1)
        raise PermissionError("not yours")

    # When it raises it
    guarded.send()
    running.join(queue_name, timeout=30_000)

    # Then it ran once and went straight to the dead letters
    assert attempts == [1]
    [headers] = dead_letters(kafka_bootstrap, queue_name)
    assert headers["x-dead-letter-exception"] == "PermissionError"


def test_time_limit_stops_an_actor_that_runs_too_long(
    running: KafkaBroker, queue_name: str, kafka_bootstrap: str,
) -> None:
    # Given an actor limited to 200 ms that would run for 20 s
    finished: list[bool] = []

    @dramatiq.actor(broker=running, queue_name=queue_name, time_limit=200, max_retries=0)
    def endless() -> None:
        for _ in range(400):
            time.sleep(0.05)  # short sleeps: the limit is raised between them
        finished.append(True)

    # When it runs
    endless.send()
    running.join(queue_name, timeout=30_000)

    # Then it was interrupted with TimeLimitExceeded and dead-lettered
    assert finished == []
    [headers] = dead_letters(kafka_bootstrap, queue_name)
    assert headers["x-dead-letter-exception"] == TimeLimitExceeded.__name__


def test_age_limit_skips_a_message_that_waited_too_long(
    broker: KafkaBroker, queue_name: str, kafka_bootstrap: str, start_worker: WorkerFactory,
) -> None:
    # Given a message allowed to wait 100 ms, sent while no worker runs
    ran: list[int] = []

    @dramatiq.actor(broker=broker, queue_name=queue_name)
    def perishable(n: int) -> None:
        ran.append(n)

    perishable.send_with_options(args=(1,), max_age=100)
    perishable.send_with_options(args=(2,), max_age=3_600_000)
    time.sleep(0.2)

    # When a worker picks it up later
    start_worker(broker)
    broker.join(queue_name, timeout=30_000)

    # Then it was skipped and dead-lettered, while the fresh one ran
    assert ran == [2]
    [headers] = dead_letters(kafka_bootstrap, queue_name)
    assert headers["x-dead-letter-exception"] == "SkipMessage"


def test_callbacks_receive_results_and_failures(running: KafkaBroker, queue_name: str) -> None:
    # Given an actor with success and failure callbacks
    outcomes: list[tuple[str, Any]] = []
    done = threading.Semaphore(0)

    @dramatiq.actor(broker=running, queue_name=queue_name)
    def on_ok(message: dict[str, Any], result: Any) -> None:
        outcomes.append(("ok", (message["args"], result)))
        done.release()

    @dramatiq.actor(broker=running, queue_name=queue_name)
    def on_error(message: dict[str, Any], error: dict[str, str]) -> None:
        outcomes.append(("error", (message["args"], error)))
        done.release()

    @dramatiq.actor(broker=running, queue_name=queue_name, on_success="on_ok",
                    on_failure="on_error", max_retries=0)
    def divide(a: int, b: int) -> float:
        return a / b

    # When it succeeds once and fails once
    divide.send(6, 3)
    divide.send(1, 0)
    assert done.acquire(timeout=60) and done.acquire(timeout=60)

    # Then each callback got the message and the result or the error
    assert sorted(outcomes, key=str) == [
        ("error", ([1, 0], {"type": "ZeroDivisionError", "message": "division by zero"})),
        ("ok", ([6, 3], 2.0)),
    ]


def test_pipelines_feed_each_result_to_the_next_actor(
    running: KafkaBroker, queue_name: str,
) -> None:
    # Given two actors piped together
    received: list[tuple[Any, ...]] = []

    @dramatiq.actor(broker=running, queue_name=queue_name)
    def double(n: int) -> int:
        return n * 2

    @dramatiq.actor(broker=running, queue_name=queue_name)
    def label(prefix: str, n: int) -> None:
        received.append((prefix, n))

    # When the pipeline runs
    (double.message(21) | label.message_with_options(args=("answer",))).run()
    running.join(queue_name, timeout=30_000)

    # Then the second got the first's result as its last argument
    assert received == [("answer", 42)]


def test_current_message_is_the_message_being_processed(
    running: KafkaBroker, queue_name: str,
) -> None:
    # Given an actor that looks up its own message
    seen: dict[int, str] = {}

    @dramatiq.actor(broker=running, queue_name=queue_name)
    def introspect(n: int) -> None:
        current = CurrentMessage.get_current_message()
        assert current is not None
        seen[n] = current.message_id

    # When two messages are processed
    first, second = introspect.send(1), introspect.send(2)
    running.join(queue_name, timeout=30_000)

    # Then each saw itself
    assert seen == {1: first.message_id, 2: second.message_id}


def test_async_actors_run_on_the_event_loop(running: KafkaBroker, queue_name: str) -> None:
    # Given an async actor
    results: list[tuple[str, bool]] = []

    @dramatiq.actor(broker=running, queue_name=queue_name)
    async def fetch(name: str) -> None:
        await asyncio.sleep(0.01)
        results.append((name, asyncio.get_running_loop().is_running()))

    # When it is sent messages
    for name in ("a", "b", "c"):
        fetch.send(name)
    running.join(queue_name, timeout=30_000)

    # Then each ran to completion inside a running event loop
    assert sorted(results) == [("a", True), ("b", True), ("c", True)]


def test_results_are_stored_and_failures_reported(running: KafkaBroker, queue_name: str) -> None:
    # Given actors that store their results
    @dramatiq.actor(broker=running, queue_name=queue_name, store_results=True)
    def square(n: int) -> int:
        return n * n

    @dramatiq.actor(broker=running, queue_name=queue_name, store_results=True, max_retries=0)
    def broken() -> None:
        raise LookupError("nothing here")

    # When they are sent
    ok = square.send(12)
    bad = broken.send()

    # Then the result comes back, and the failure is raised to the caller
    assert ok.get_result(block=True, timeout=30_000) == 144
    with pytest.raises(ResultFailure, match="nothing here"):
        bad.get_result(block=True, timeout=30_000)


def test_prometheus_counts_processed_and_dead_lettered_messages(
    make_broker: BrokerFactory, queue_name: str, start_worker: WorkerFactory,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (Its HTTP exposition server only runs in processes the dramatiq CLI forks,
    # so nothing listens on a port here; the metrics are read directly.)
    pytest.importorskip("prometheus_client")
    from dramatiq.middleware import prometheus

    # Given a broker with the Prometheus middleware, its files in a private folder
    monkeypatch.setattr(prometheus, "DB_PATH", str(tmp_path))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setenv("prometheus_multiproc_dir", str(tmp_path))
    metrics = prometheus.Prometheus()
    broker = booted_broker(make_broker, metrics)

    @dramatiq.actor(broker=broker, queue_name=queue_name, max_retries=0)
    def counted(fail: bool) -> None:
        if fail:
            raise RuntimeError("counted failure")

    # When three messages succeed and one fails
    for fail in (False, False, False, True):
        counted.send(fail)
    start_worker(broker)
    broker.join(queue_name, timeout=30_000)

    # Then the counters say so
    labels = (queue_name, "counted")
    assert metrics.total_messages.labels(*labels)._value.get() == 4
    assert metrics.total_errored_messages.labels(*labels)._value.get() == 1
    assert metrics.total_rejected_messages.labels(*labels)._value.get() == 1
