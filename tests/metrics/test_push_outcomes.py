"""How dispatch's push outcomes become metrics, through the event bus: every
outcome, including the ones the fakes make awkward (a timeout after sending,
a token registered again after the provider dropped it)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dramatiq
import pytest
from dramatiq.errors import ConnectionFailed
from prometheus_client import CollectorRegistry

from broker import KafkaBroker
from willowe_tasks.analytics import JsonlAnalyticsSink
from willowe_tasks.dispatch import Notification, NotificationFailed, deliver
from willowe_tasks.events import EventBus, PushFinished
from willowe_tasks.ledger import SQLiteLedger
from willowe_tasks.metrics import Metrics
from willowe_tasks.providers import (
    DeliveryError,
    PermanentDeliveryError,
    TokenRejected,
    TransientDeliveryError,
)
from willowe_tasks.providers.push import Push
from willowe_tasks.registry import SQLiteDeviceRegistry
from willowe_tasks.services import Services
from willowe_tasks.token_guard import TokenRemovalGuard

IOS_TOKEN = "5a" * 32


class Answers:
    """A push provider that answers with ``error`` (or accepts, if None)."""

    def __init__(self, error: DeliveryError | None) -> None:
        self.error = error

    def send(self, push: Push) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        pass


def notification(priority: str = "high") -> Notification:
    now = time.time()
    return Notification(id=f"n-{time.time_ns()}", kind="match", user_id="u1", title="t",
                        body="b", priority=priority,  # type: ignore[arg-type]
                        expires_at=now + 600, sent_at=now - 2.0)


class Counted:
    """Metrics in a registry of their own, read the way a scrape would."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)

    def get_sample_value(self, name: str, labels: dict[str, str]) -> float | None:
        self.metrics.flush()
        return self.registry.get_sample_value(name, labels)


@pytest.fixture
def counted(tmp_path: Path) -> Iterator[Callable[..., tuple[Services, Counted]]]:
    made: list[Services] = []

    def make(error: DeliveryError | None, min_pushes: int = 20) -> tuple[Services, Counted]:
        bus = EventBus()
        registry = Counted()
        registry.metrics.subscribe(bus)
        services = Services(
            registry=SQLiteDeviceRegistry(tmp_path / f"devices{len(made)}.sqlite3"),
            ledger=SQLiteLedger(tmp_path / f"ledger{len(made)}.sqlite3"),
            analytics=JsonlAnalyticsSink(tmp_path / "analytics.jsonl"),
            token_guard=TokenRemovalGuard(max_share=0.5, window_s=60, min_pushes=min_pushes),
            providers={"ios": Answers(error)}, events=bus)
        services.registry.register("u1", "ios", IOS_TOKEN, "com.willowe.app")
        made.append(services)
        return services, registry

    yield make
    for services in made:
        services.close()


def pushes(registry: Counted, outcome: str, reason: str) -> float | None:
    return registry.get_sample_value("willowe_pushes_total",
                                     {"provider": "apns", "outcome": outcome, "reason": reason})


@pytest.mark.parametrize(("error", "outcome", "reason", "raised"), [
    (None, "accepted", "", None),
    (TransientDeliveryError("Timeout", provider="apns", maybe_sent=True), "maybe_delivered",
     "Timeout", None),
    (TransientDeliveryError("ServiceUnavailable", provider="apns", status_code=503),
     "retry_later", "ServiceUnavailable", dramatiq.Retry),
    (PermanentDeliveryError("BadTopic", provider="apns", status_code=400), "refused",
     "BadTopic", NotificationFailed),
    # Marked invalid, and looked at again until the guard has seen enough pushes.
    (TokenRejected("BadDeviceToken", provider="apns", status_code=400), "token_removed",
     "BadDeviceToken", dramatiq.Retry),
], ids=lambda v: v if isinstance(v, str) else None)
def test_each_push_outcome_is_counted_with_the_providers_reason(
        counted: Callable[..., tuple[Services, Counted]],
        error: DeliveryError | None, outcome: str, reason: str,
        raised: type[BaseException] | None) -> None:
    services, registry = counted(error)
    if raised is None:
        deliver(notification(), services)
    else:
        with pytest.raises(raised):
            deliver(notification(), services)
    assert pushes(registry, outcome, reason) == 1
    assert registry.get_sample_value("willowe_push_round_trip_seconds_count",
                                     {"provider": "apns"}) == 1
    accepted = registry.get_sample_value("willowe_send_to_accepted_seconds_count",
                                         {"priority": "high"})
    assert accepted == (1 if outcome == "accepted" else None)


def test_a_rejection_the_guard_holds_back_is_a_push_to_retry_later(
        counted: Callable[..., tuple[Services, Counted]]) -> None:
    # Every push of the window rejected for one reason: the setup, not the tokens.
    services, registry = counted(TokenRejected("BadDeviceToken", provider="apns",
                                               status_code=400), min_pushes=1)
    with pytest.raises(dramatiq.Retry):
        deliver(notification(), services)
    assert pushes(registry, "retry_later", "BadDeviceToken") == 1
    assert registry.get_sample_value("willowe_token_guard_verdicts_total", {
        "provider": "apns", "reason": "BadDeviceToken", "verdict": "hold"}) == 1


def test_send_to_accepted_starts_at_the_send_not_at_the_push(
        counted: Callable[..., tuple[Services, Counted]]) -> None:
    services, registry = counted(None)
    deliver(notification("medium"), services)  # sent 2 s before the worker got to it
    latency = registry.get_sample_value("willowe_send_to_accepted_seconds_sum",
                                        {"priority": "medium"})
    assert latency is not None and 2.0 <= latency < 60


def test_a_token_registered_again_since_the_rejection_is_counted_as_kept(
        counted: Callable[..., tuple[Services, Counted]]) -> None:
    # The provider found the token invalid an hour ago; the phone registered it since.
    services, registry = counted(TokenRejected("Unregistered", provider="apns", status_code=410,
                                               invalid_since=time.time() - 3600))
    deliver(notification(), services)
    assert pushes(registry, "token_kept", "Unregistered") == 1
    assert pushes(registry, "token_removed", "Unregistered") is None


def test_a_handler_that_fails_never_fails_the_delivery(
        counted: Callable[..., tuple[Services, Counted]]) -> None:
    services, registry = counted(None)

    def broken(event: PushFinished) -> None:
        raise RuntimeError("listener bug")

    services.events.subscribe(PushFinished, broken)
    deliver(notification(), services)  # no exception
    assert pushes(registry, "accepted", "") == 1  # and the other listener still ran
    services.events.unsubscribe(PushFinished, broken)
    assert services.events.wants(PushFinished)


def test_tallies_of_many_threads_add_up_once_each_however_often_flushed() -> None:
    # Given counts made on four threads, with flushes in between
    counted = Counted()
    bus = EventBus()
    counted.metrics.subscribe(bus)
    event = PushFinished("apns", "accepted", "", "high", time.time(), time.time(), 0.02)

    def push(times: int) -> None:
        for _ in range(times):
            bus.emit(event)

    threads = [threading.Thread(target=push, args=(500,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for _ in range(5):
        counted.metrics.flush()
    for thread in threads:
        thread.join(timeout=30)
    # Then every push is counted once, and its latency in the right bucket
    assert pushes(counted, "accepted", "") == 2000
    assert counted.get_sample_value("willowe_push_round_trip_seconds_bucket",
                                    {"provider": "apns", "le": "0.01"}) == 0
    assert counted.get_sample_value("willowe_push_round_trip_seconds_bucket",
                                    {"provider": "apns", "le": "0.025"}) == 2000
    assert counted.get_sample_value("willowe_push_round_trip_seconds_sum",
                                    {"provider": "apns"}) == pytest.approx(40.0)
    assert pushes(counted, "accepted", "") == 2000  # a flush with nothing new adds nothing


def test_a_send_kafka_does_not_take_is_counted_as_failed() -> None:
    # Given a broker whose Kafka is away, counting its sends
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    counted = Counted()
    bus = EventBus()
    counted.metrics.subscribe(bus)
    broker = KafkaBroker(bootstrap_servers=f"127.0.0.1:{closed}", events=bus.emit,
                         create_topics=False, producer_options={"max_block_ms": 1000})
    broker.declare_queue("nowhere")
    # When a message is sent
    message: dramatiq.Message[None] = dramatiq.Message(queue_name="nowhere", actor_name="a",
                                                       args=(), kwargs={}, options={})
    with pytest.raises(ConnectionFailed):
        broker.enqueue(message)
    broker.close()
    # Then the failure is counted, and nothing as sent
    assert counted.get_sample_value("willowe_producer_sends_total", {"outcome": "failed"}) == 1
    assert counted.get_sample_value("willowe_producer_sends_total", {"outcome": "ok"}) is None
