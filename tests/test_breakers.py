"""The circuit breaker, the deferral policy and the gates dispatch asks, on a
clock of the test's own."""

from __future__ import annotations

from typing import Any, cast

import dramatiq
import pytest
from dramatiq.errors import ConnectionFailed

from willowe_tasks.breakers import BreakerState, CircuitBreaker, is_outage
from willowe_tasks.deferral import (
    DEFERRALS_OPTION,
    DEVICE_THROTTLED,
    PAST_DEADLINE_S,
    PROVIDER_DOWN,
    PROVIDER_THROTTLED,
    Deferral,
    DeferralPolicy,
    DeliveryDeferred,
    defer,
)
from willowe_tasks.device_backoff import DeviceBackoff
from willowe_tasks.events import EventBus, NotificationDeferred
from willowe_tasks.provider_gates import ProviderGates
from willowe_tasks.providers import TransientDeliveryError
from willowe_tasks.providers.errors import THROTTLED_DEVICE, THROTTLED_SENDER


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def outage(status: int | None = 503) -> TransientDeliveryError:
    return TransientDeliveryError("ServiceUnavailable", provider="apns", status_code=status)


def breaker(clock: Clock, changes: list[tuple[str, str]] | None = None,
            failures: int = 3) -> CircuitBreaker:
    def note(old: BreakerState, new: BreakerState) -> None:
        if changes is not None:
            changes.append((old.value, new.value))
    return CircuitBreaker("apns:T/K", failures=failures, probe_interval_s=5.0, on_change=note,
                          clock=clock)


def test_outages_are_5xx_and_no_answer_but_not_throttles() -> None:
    assert is_outage(outage(503)) and is_outage(outage(500)) and is_outage(outage(None))
    assert not is_outage(outage(429))
    assert not is_outage(TransientDeliveryError("QUOTA_EXCEEDED", provider="fcm",
                                                status_code=429, throttled=THROTTLED_SENDER))


def test_a_run_of_failures_opens_the_breaker_and_one_answer_resets_the_run() -> None:
    clock, changes = Clock(), list[tuple[str, str]]()
    b = breaker(clock, changes)
    b.failed()
    b.failed()
    b.succeeded()  # the run starts over
    b.failed()
    assert b.failed() is BreakerState.CLOSED
    assert b.failed() is BreakerState.OPEN
    assert changes == [("closed", "open")]
    assert b.blocked_for() == pytest.approx(5.0)


def test_an_open_breaker_lets_one_probe_through_per_interval() -> None:
    clock, changes = Clock(), list[tuple[str, str]]()
    b = breaker(clock, changes, failures=1)
    b.failed()
    assert not b.allow()
    clock.now += 5.0
    assert b.blocked_for() is None
    assert b.allow()  # the probe
    assert b.state is BreakerState.HALF_OPEN
    assert not b.allow()  # one probe, not one per caller
    assert b.failed() is BreakerState.OPEN  # the probe failed: wait another interval
    assert b.blocked_for() == pytest.approx(5.0)
    clock.now += 5.0
    assert b.allow()
    b.succeeded()
    assert b.state is BreakerState.CLOSED and b.allow()
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "open"),
                       ("open", "half_open"), ("half_open", "closed")]


def test_a_breaker_with_no_failures_set_never_opens() -> None:
    b = breaker(Clock(), failures=0)
    for _ in range(100):
        assert b.failed() is BreakerState.CLOSED


def test_bad_breaker_settings_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="failures"):
        CircuitBreaker("x", failures=-1, probe_interval_s=1)
    with pytest.raises(ValueError, match="probe_interval_s"):
        CircuitBreaker("x", failures=1, probe_interval_s=0)


def test_deferrals_grow_and_stop_at_the_deadline() -> None:
    policy = DeferralPolicy(initial_s=1.0, max_s=8.0)
    down = [Deferral("apns", PROVIDER_DOWN, 0.5)]

    def delay(count: int, expires_in_s: float = 3600) -> float:
        return policy.delay_s(down, count, expires_at=100 + expires_in_s, now=100,
                              jitter=lambda: 0.5)

    assert [delay(n) for n in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    # Never past the deadline: the last deferral comes back just after it
    assert delay(4, expires_in_s=3) == pytest.approx(3 + PAST_DEADLINE_S)
    # Jitter spreads the waits by ±20 %
    assert policy.delay_s(down, 1, expires_at=1e12, now=0, jitter=lambda: 0.0) == \
        pytest.approx(1.6)
    assert policy.delay_s(down, 1, expires_at=1e12, now=0, jitter=lambda: 1.0) == \
        pytest.approx(2.4)


def test_a_throttled_device_waits_what_it_was_told_not_a_growing_wait() -> None:
    policy = DeferralPolicy(initial_s=1.0, max_s=30.0)
    throttled = [Deferral("apns", DEVICE_THROTTLED, 3.0, grows=False)]
    assert policy.delay_s(throttled, 6, expires_at=1e12, now=0, jitter=lambda: 0.5) == 3.0


def test_delivery_deferred_needs_a_device_and_names_no_token() -> None:
    with pytest.raises(ValueError):
        DeliveryDeferred([], expires_at=0, kind="match", priority="high")
    deferred = DeliveryDeferred([Deferral("apns", PROVIDER_DOWN, 2.0)], expires_at=0,
                                kind="match", priority="high")
    assert str(deferred) == "deferred: apns provider_down"


def test_a_throttled_device_backs_off_doubling_and_is_forgotten_once_pushed() -> None:
    clock = Clock()
    backoff = DeviceBackoff(initial_s=1.0, max_s=4.0, clock=clock)
    assert backoff.wait_s("k") is None
    assert [backoff.throttled("k") for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
    assert backoff.throttled("k", retry_after_s=10.0) == 10.0  # the provider's word wins
    assert backoff.wait_s("other") is None
    clock.now += 10.0
    assert backoff.wait_s("k") is None
    backoff.delivered("k")
    assert backoff.throttled("k") == 1.0  # a fresh start


def test_device_backoff_remembers_a_bounded_number_of_devices() -> None:
    backoff = DeviceBackoff(initial_s=1.0, max_s=4.0, max_devices=2, clock=Clock())
    for key in "abc":
        backoff.throttled(key)
    assert len(backoff) == 2 and backoff.wait_s("a") is None


def gates(clock: Clock) -> ProviderGates:
    return ProviderGates("apns", "apns:T/K", breaker=breaker(clock, failures=2),
                         backoff=DeviceBackoff(initial_s=2.0, max_s=8.0, clock=clock))


def test_gates_defer_a_device_only_once_the_provider_is_down() -> None:
    clock = Clock()
    g = gates(clock)
    assert g.failed(outage(), "k1") is None  # one failure: an ordinary retry
    down = g.failed(outage(), "k2")
    assert down is not None and down.reason == PROVIDER_DOWN
    waits = g.before_claim("k3")
    assert waits is not None and waits.reason == PROVIDER_DOWN
    assert waits.wait_s == pytest.approx(5.0)
    clock.now += 5.0
    assert g.before_claim("k3") is None
    assert g.admit() is None  # the probe
    assert g.admit() is not None  # nobody else meanwhile
    g.answered("k3", accepted=True)
    assert g.admit() is None and g.before_claim("k4") is None


def test_gates_back_off_the_throttled_device_and_not_the_others() -> None:
    clock = Clock()
    g = gates(clock)
    too_many = TransientDeliveryError("TooManyRequests", provider="apns", status_code=429,
                                      throttled=THROTTLED_DEVICE)
    waits = g.failed(too_many, "busy")
    assert waits == Deferral("apns", DEVICE_THROTTLED, 2.0, grows=False)
    assert g.before_claim("busy") is not None
    assert g.before_claim("calm") is None
    assert g.breaker.state is BreakerState.CLOSED


def test_gates_defer_everyone_after_a_sender_wide_throttle() -> None:
    g = gates(Clock())
    quota = TransientDeliveryError("QUOTA_EXCEEDED", provider="fcm", status_code=429,
                                   retry_after_s=7.0, throttled=THROTTLED_SENDER)
    assert g.failed(quota, "k") == Deferral("apns", PROVIDER_THROTTLED, 7.0)
    assert g.breaker.state is BreakerState.CLOSED


class RefusingBroker:
    """A broker whose first ``refusals`` enqueues fail as a Kafka away does."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.enqueued: list[tuple[dramatiq.Message[Any], int | None]] = []

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> None:
        if self.refusals:
            self.refusals -= 1
            raise ConnectionFailed("Kafka did not take it")
        self.enqueued.append((message, delay))


def deferred_now() -> DeliveryDeferred:
    return DeliveryDeferred([Deferral("apns", PROVIDER_DOWN, 2.0)], expires_at=1e12,
                            kind="match", priority="high")


def running_message(deferrals: int = 0) -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name="q", actor_name="send_match", args=(), kwargs={},
                            options={"retries": 2, DEFERRALS_OPTION: deferrals})


def test_a_deferral_keeps_the_retries_and_counts_itself() -> None:
    broker, events = RefusingBroker(0), EventBus()
    heard: list[NotificationDeferred] = []
    events.subscribe(NotificationDeferred, heard.append)
    delay_s = defer(cast(dramatiq.Broker, broker), running_message(deferrals=3), deferred_now(),
                    DeferralPolicy(initial_s=1.0, max_s=30.0), events)
    [(copy, delay_ms)] = broker.enqueued
    assert copy.options["retries"] == 2 and copy.options[DEFERRALS_OPTION] == 4
    assert delay_ms == int(delay_s * 1000) and 8 * 0.8 <= delay_s <= 8 * 1.2
    assert [(e.provider, e.reason) for e in heard] == [("apns", PROVIDER_DOWN)]


def test_a_deferral_waits_out_a_kafka_hiccup_then_gives_up() -> None:
    clock = Clock()

    def sleep(seconds: float) -> None:
        clock.now += seconds

    broker = RefusingBroker(3)
    defer(cast(dramatiq.Broker, broker), running_message(), deferred_now(), DeferralPolicy(),
          EventBus(), sleep=sleep, clock=clock)
    assert len(broker.enqueued) == 1 and clock.now - 1000.0 == pytest.approx(0.5 + 1 + 2)
    with pytest.raises(ConnectionFailed):
        defer(cast(dramatiq.Broker, RefusingBroker(1000)), running_message(), deferred_now(),
              DeferralPolicy(), EventBus(), sleep=sleep, clock=clock)
