"""A provider outage on the real Kafka: the provider's devices wait behind its
circuit breaker without spending the notification's retries, the other
provider's devices are served at once, and nothing is dead-lettered."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from notification_support import (
    ANDROID_TOKEN,
    HIGH,
    IOS_TOKEN,
    IOS_TOKEN_2,
    Rig,
    read_dead_letters,
    register_both,
    rig_on_fakes,
)

from willowe_tasks import dispatch
from willowe_tasks.events import BreakerChanged, NotificationDeferred
from willowe_tasks.testing import FakeAPNs, FakeFCM

#: An outage answered to every push for the test's length.
OUTAGE_PUSHES = 10_000

#: Longest any wait of these tests lasts, in seconds.
WAIT_S = 60.0


@pytest.fixture
def quick_breakers(kafka_bootstrap: str, fakes: tuple[FakeAPNs, FakeFCM], tmp_path: Path
                   ) -> Iterator[Rig]:
    """An app whose breakers open after 2 outage answers and probe twice a
    second, deferring for 0.2 s up to 1 s, throttled devices waiting 0.5 s up
    to 1 s; a worker runs in this process."""
    with rig_on_fakes(kafka_bootstrap, fakes, tmp_path, worker=True, env={
            "PROVIDER_BREAKER_FAILURES": "2", "PROVIDER_PROBE_INTERVAL_S": "0.5",
            "DEFER_INITIAL_S": "0.2", "DEFER_MAX_S": "1",
            "DEVICE_BACKOFF_INITIAL_S": "0.5", "DEVICE_BACKOFF_MAX_S": "1"}) as rig:
        yield rig


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def custom(user_id: str, ttl_s: int | None = None) -> dict[str, object]:
    notification: dict[str, object] = {
        "type": "custom-notification", "targetUserId": user_id, "title": "Hi", "body": "Hi"}
    if ttl_s is not None:
        notification["ttl_s"] = ttl_s
    return notification


def test_an_apns_outage_defers_ios_without_spending_retries_and_android_goes_at_once(
        quick_breakers: Rig) -> None:
    app = quick_breakers
    changes: list[tuple[str, str]] = []
    deferrals: list[NotificationDeferred] = []
    app.services.events.subscribe(BreakerChanged, lambda e: changes.append((e.old, e.new)))
    app.services.events.subscribe(NotificationDeferred, deferrals.append)
    register_both(app)
    app.apns.fail(503, "ServiceUnavailable", times=OUTAGE_PUSHES)
    message = app.actors.send_notification.send_with_options(
        args=(custom("user123"),), priority="high", max_retries=1)
    # Android is pushed at once, whatever APNs does
    [android] = app.fcm.wait_for(1)
    assert android.ok
    # iOS waits through more deferrals than the message has retries
    wait_until(lambda: dispatch.stats["deferred"] >= 4, "four deferrals")
    assert ("closed", "open") in changes
    assert {(d.provider, d.reason) for d in deferrals} == {("apns", "provider_down")}
    assert all(not r.ok for r in app.apns.received)
    # APNs comes back: the next probe goes through and the breaker closes
    app.apns.heal()
    wait_until(lambda: any(r.ok for r in app.apns.received), "a push accepted by APNs")
    app.join(HIGH)
    assert [r.status for r in app.apns.received if r.ok] == [200]
    assert changes[-1] == ("half_open", "closed")
    assert len(app.fcm.received) == 1  # the ledger skipped Android on every return
    assert read_dead_letters(app, f"{HIGH}.XQ", message.message_id) == []


def test_a_notification_whose_deadline_passes_during_an_outage_expires_unpushed(
        quick_breakers: Rig) -> None:
    app = quick_breakers
    app.services.registry.register("user5", "ios", IOS_TOKEN, app.apns.bundle_id)
    app.apns.fail(503, "ServiceUnavailable", times=OUTAGE_PUSHES)
    message = app.actors.send_notification.send_with_options(
        args=(custom("user5", ttl_s=3),), priority="high", max_retries=1)
    wait_until(lambda: dispatch.stats["expired"] == 1, "the notification to expire")
    app.join(HIGH)
    app.apns.heal()
    assert not any(r.ok for r in app.apns.received)
    assert dispatch.stats["deferred"] >= 2
    assert read_dead_letters(app, f"{HIGH}.XQ", message.message_id) == []


def test_android_devices_are_not_held_back_by_an_apns_outage(quick_breakers: Rig) -> None:
    app = quick_breakers
    app.apns.fail(503, "ServiceUnavailable", times=OUTAGE_PUSHES)
    for n in range(3):
        app.services.registry.register(f"ios-user-{n}", "ios", IOS_TOKEN[:-2] + f"{n:02x}",
                                       app.apns.bundle_id)
        app.actors.send_notification.send(custom(f"ios-user-{n}"), "high")
    wait_until(lambda: dispatch.stats["deferred"] >= 3, "the iOS notifications to defer")
    app.services.registry.register("droid", "android", ANDROID_TOKEN, "com.willowe.android")
    app.actors.send_notification.send(custom("droid"), "high")
    [android] = app.fcm.wait_for(1)
    assert android.ok
    assert not any(r.ok for r in app.apns.received)
    app.apns.heal()
    wait_until(lambda: sum(r.ok for r in app.apns.received) == 3, "three iOS pushes")
    app.join(HIGH)
    assert sorted(str(r.token) for r in app.apns.received if r.ok) == sorted(
        IOS_TOKEN[:-2] + f"{n:02x}" for n in range(3))



def test_a_throttled_iphone_waits_alone_without_spending_retries(quick_breakers: Rig) -> None:
    app = quick_breakers
    app.services.registry.register("busy", "ios", IOS_TOKEN, app.apns.bundle_id)
    app.services.registry.register("calm", "ios", IOS_TOKEN_2, app.apns.bundle_id)
    app.apns.fail(429, "TooManyRequests", token=IOS_TOKEN, times=3)
    busy = app.actors.send_notification.send_with_options(
        args=(custom("busy"),), priority="high", max_retries=0)
    app.actors.send_notification.send(custom("calm"), "high")
    wait_until(lambda: sum(r.ok for r in app.apns.received) == 2, "both iPhones pushed")
    app.join(HIGH)
    by_token = {token: [r.status for r in app.apns.received if r.token == token]
                for token in (IOS_TOKEN, IOS_TOKEN_2)}
    assert by_token == {IOS_TOKEN: [429, 429, 429, 200], IOS_TOKEN_2: [200]}
    assert dispatch.stats["deferred"] >= 3  # at least once per 429, none of them a retry
    assert read_dead_letters(app, f"{HIGH}.XQ", busy.message_id) == []


def test_fcm_quota_exceeded_defers_instead_of_dead_lettering(quick_breakers: Rig) -> None:
    app = quick_breakers
    app.services.registry.register("droid", "android", ANDROID_TOKEN, "com.willowe.android")
    app.fcm.fail(429, "QUOTA_EXCEEDED", retry_after=1, times=2)
    message = app.actors.send_notification.send_with_options(
        args=(custom("droid"),), priority="high", max_retries=0)
    wait_until(lambda: any(r.ok for r in app.fcm.received), "the push after the quota")
    app.join(HIGH)
    assert [r.status for r in app.fcm.received] == [429, 429, 200]
    assert read_dead_letters(app, f"{HIGH}.XQ", message.message_id) == []
