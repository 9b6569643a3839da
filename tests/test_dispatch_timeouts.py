"""A push that timed out may have reached the provider: it must not be pushed
again, or a slow provider gets the same notification once per timeout."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dramatiq
import pytest

from willowe_tasks.analytics import JsonlAnalyticsSink
from willowe_tasks.dispatch import Notification, deliver
from willowe_tasks.ledger import SQLiteLedger
from willowe_tasks.providers import PushProvider, TransientDeliveryError
from willowe_tasks.providers.apns.auth import TokenAuth
from willowe_tasks.providers.apns.client import APNsClient
from willowe_tasks.providers.push import Push
from willowe_tasks.registry import SQLiteDeviceRegistry
from willowe_tasks.services import Services
from willowe_tasks.testing import FakeAPNs
from willowe_tasks.token_guard import TokenRemovalGuard
from willowe_tasks.tokens import token_key

IOS_TOKEN = "7e" * 32
#: The client gives up after this; the fake answers (and accepts) later.
PUSH_TIMEOUT_S = 0.3
PROVIDER_LATENCY_S = 1.0


def notification() -> Notification:
    return Notification(id="timeout-test-1", kind="match", user_id="slow-user",
                        title="У вас новый мэтч! 💘", body="Анна, 25", priority="high",
                        expires_at=time.time() + 600)


@pytest.fixture
def make_services(tmp_path: Path) -> Iterator[Callable[[PushProvider], Services]]:
    made: list[Services] = []

    def make(ios: PushProvider) -> Services:
        services = Services(
            registry=SQLiteDeviceRegistry(tmp_path / "devices.sqlite3"),
            ledger=SQLiteLedger(tmp_path / "ledger.sqlite3"),
            analytics=JsonlAnalyticsSink(tmp_path / "analytics.jsonl"),
            token_guard=TokenRemovalGuard(max_share=0.5, window_s=60, min_pushes=20),
            providers={"ios": ios},
            push_timeout_s=PUSH_TIMEOUT_S,
        )
        services.registry.register("slow-user", "ios", IOS_TOKEN, "com.willowe.app")
        made.append(services)
        return services

    yield make
    for services in made:
        services.close()


def test_a_push_that_timed_out_is_not_pushed_again_on_redelivery(
    make_services: Callable[[PushProvider], Services],
) -> None:
    with FakeAPNs(latency_s=PROVIDER_LATENCY_S) as apns:
        services = make_services(APNsClient(
            endpoint=apns.url, default_topic=apns.bundle_id, ca_file=apns.ca_file,
            timeout_s=PUSH_TIMEOUT_S,
            auth=TokenAuth(key_path=apns.signing_key_path, key_id=apns.key_id,
                           team_id=apns.team_id),
        ))
        # Given a provider slower than the push timeout, when the notification
        # is run again (a retry, or Kafka's redelivery) during and after the lease
        for _ in range(4):
            with contextlib.suppress(dramatiq.Retry):
                deliver(notification(), services)
            time.sleep(PUSH_TIMEOUT_S * 2)
        # (any second push would have been answered by now)
        time.sleep(PROVIDER_LATENCY_S + 0.5)
        # Then the phone got it once: the first, timed-out push went through
        assert [r.ok for r in apns.received] == [True]
        # and the ledger holds the pair as maybe delivered, not as pushable
        key = token_key(IOS_TOKEN)
        assert services.ledger.maybe_delivered("timeout-test-1") == {key}
        assert not services.ledger.claim("timeout-test-1", key, lease_s=10)


class _NeverConnects:
    """An APNs client whose every push times out while connecting."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, push: Push) -> None:
        self.sent += 1
        raise TransientDeliveryError("Timeout", provider="apns", detail="ConnectTimeout",
                                     maybe_sent=False)

    def close(self) -> None:
        pass


def test_a_push_that_never_left_is_retried(
    make_services: Callable[[PushProvider], Services],
) -> None:
    client = _NeverConnects()
    services = make_services(client)
    # The client says the request never left: the provider never saw it, retry
    with pytest.raises(dramatiq.Retry):
        deliver(notification(), services)
    with pytest.raises(dramatiq.Retry):
        deliver(notification(), services)
    assert client.sent == 2
    assert services.ledger.maybe_delivered("timeout-test-1") == set()
