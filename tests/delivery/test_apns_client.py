"""APNsClient against FakeAPNs, over real HTTP/2 and TLS."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

import pytest
from delivery_support import APNS_TOKEN, FakeClock, make_push

from willowe_tasks.providers import PermanentDeliveryError, TokenRejected, TransientDeliveryError
from willowe_tasks.providers.apns.auth import CertificateAuth, TokenAuth
from willowe_tasks.providers.apns.client import APNsClient
from willowe_tasks.testing import FakeAPNs

#: Worker threads sending at once in the multiplexing test, as in a Dramatiq worker.
THREADS = 16

#: Pushes per thread in the multiplexing test.
PUSHES_PER_THREAD = 10

#: Server latency in the multiplexing test, as from a distant APNs.
LATENCY_S = 0.02


def test_send_uses_apple_headers_and_payload(fake_apns: FakeAPNs, apns_client: APNsClient) -> None:
    push = make_push(expires_at=time.time() + 600.7)
    apns_client.send(push)

    [request] = fake_apns.wait_for(1)
    assert request.ok
    assert request.http_version == "2"
    assert request.path == f"/3/device/{APNS_TOKEN}"
    assert request.headers["apns-topic"] == fake_apns.bundle_id
    assert request.headers["apns-push-type"] == "alert"
    assert request.headers["apns-priority"] == "10"
    assert request.headers["apns-expiration"] == str(int(push.expires_at))
    assert request.headers["apns-collapse-id"] == "notif-0001"
    assert request.headers["authorization"].startswith("bearer ")
    assert request.json == {
        "aps": {"alert": {"title": "It's a match!", "body": "You and Alex liked each other"}},
        "kind": "match",
        "match_id": "m-42",
    }


@pytest.mark.parametrize(
    ("priority", "push_type", "expected"),
    [
        ("high", "alert", "10"),
        ("medium", "alert", "10"),
        ("low", "alert", "5"),
        ("high", "background", "5"),
    ],
)
def test_priority_mapping(
    fake_apns: FakeAPNs,
    apns_client: APNsClient,
    priority: str,
    push_type: str,
    expected: str,
) -> None:
    apns_client.send(make_push(priority=priority, push_type=push_type))
    [request] = fake_apns.wait_for(1)
    assert request.ok, request.reason
    assert request.headers["apns-priority"] == expected
    assert request.headers["apns-push-type"] == push_type


def test_background_push_is_content_available_without_alert(
    fake_apns: FakeAPNs, apns_client: APNsClient
) -> None:
    apns_client.send(make_push(push_type="background", title=None, body=None))
    [request] = fake_apns.wait_for(1)
    assert request.json == {"aps": {"content-available": 1}, "kind": "match", "match_id": "m-42"}


def test_expired_push_asks_for_immediate_delivery_only(
    fake_apns: FakeAPNs, apns_client: APNsClient
) -> None:
    apns_client.send(make_push(expires_at=time.time() - 5))
    [request] = fake_apns.wait_for(1)
    assert request.headers["apns-expiration"] == "0"


def test_push_topic_overrides_the_default(fake_apns: FakeAPNs, apns_client: APNsClient) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        apns_client.send(make_push(topic="com.other.app"))
    assert caught.value.reason == "TopicDisallowed"
    assert fake_apns.received[0].headers["apns-topic"] == "com.other.app"


def test_concurrent_sends_multiplex_on_one_connection(
    fake_apns: FakeAPNs, apns_client: APNsClient
) -> None:
    fake_apns.latency_s = LATENCY_S
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker() -> None:
        start.wait(timeout=10)
        for _ in range(PUSHES_PER_THREAD):
            try:
                apns_client.send(make_push())
            except BaseException as exc:  # reported below
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    received = fake_apns.wait_for(THREADS * PUSHES_PER_THREAD)
    assert all(request.ok for request in received)
    assert len(fake_apns.connections()) == 1
    # Requests were in flight together: many arrived within one latency period.
    arrivals = sorted(request.received_at for request in received)
    overlap = max(
        sum(1 for other in arrivals if first <= other < first + LATENCY_S) for first in arrivals
    )
    assert overlap >= 4


def test_provider_token_is_reused_then_refreshed_after_50_minutes(
    fake_apns: FakeAPNs, apns_client: APNsClient, clock: FakeClock
) -> None:
    for _ in range(3):
        apns_client.send(make_push())
    clock.advance(30 * 60)
    apns_client.send(make_push())
    clock.advance(21 * 60)  # 51 minutes after the first token
    apns_client.send(make_push())

    received = fake_apns.wait_for(5)
    assert all(request.ok for request in received)
    tokens = [request.headers["authorization"] for request in received]
    assert len(set(tokens[:4])) == 1
    assert tokens[4] != tokens[0]


def test_expired_provider_token_is_transient_and_replaced_early(
    fake_apns: FakeAPNs, make_apns_client: Callable[..., APNsClient], clock: FakeClock
) -> None:
    # Our clock lags Apple's by an hour (a paused VM): APNs calls the token
    # expired although we think it is fresh.
    our_clock = FakeClock(clock.now)
    auth = TokenAuth(
        key_pem=fake_apns.signing_key_pem,
        key_id=fake_apns.key_id,
        team_id=fake_apns.team_id,
        clock=our_clock,
    )
    client = make_apns_client(auth=auth)
    client.send(make_push())
    first = auth.token()
    clock.advance(61 * 60)
    with pytest.raises(TransientDeliveryError) as caught:
        client.send(make_push())
    assert caught.value.reason == "ExpiredProviderToken"
    assert auth.token() == first  # never replaced sooner than 20 minutes
    our_clock.advance(20 * 60)
    client.send(make_push())  # replaced at 20 minutes instead of 50
    assert auth.token() != first
    assert fake_apns.received[-1].ok


@pytest.mark.parametrize(
    ("status", "reason"),
    [(410, "Unregistered"), (400, "BadDeviceToken"), (400, "DeviceTokenNotForTopic")],
)
def test_dead_tokens_are_rejected(
    fake_apns: FakeAPNs, apns_client: APNsClient, status: int, reason: str
) -> None:
    fake_apns.fail(status, reason)
    with pytest.raises(TokenRejected) as caught:
        apns_client.send(make_push())
    assert (caught.value.provider, caught.value.reason, caught.value.status_code) == (
        "apns",
        reason,
        status,
    )
    assert APNS_TOKEN not in str(caught.value)


def test_unregistered_device_answers_410(fake_apns: FakeAPNs, apns_client: APNsClient) -> None:
    fake_apns.unregister(APNS_TOKEN)
    with pytest.raises(TokenRejected, match="Unregistered") as caught:
        apns_client.send(make_push())
    # Apple's timestamp (milliseconds) says since when the token is invalid,
    # so a registration after it can win over the rejection.
    assert caught.value.invalid_since is not None
    assert abs(caught.value.invalid_since - time.time()) < 60


def test_sound_and_picture_for_an_alert(fake_apns: FakeAPNs, apns_client: APNsClient) -> None:
    apns_client.send(make_push(sound="default", image_url="https://example.com/photo.jpg"))
    [request] = fake_apns.wait_for(1)
    assert request.ok, request.reason
    assert request.json["aps"]["sound"] == "default"
    # The app's notification service extension fetches the picture: APNs
    # carries only its URL, and mutable-content wakes the extension.
    assert request.json["aps"]["mutable-content"] == 1
    assert request.json["image_url"] == "https://example.com/photo.jpg"


def test_a_background_push_has_no_sound_or_picture(
    fake_apns: FakeAPNs, apns_client: APNsClient
) -> None:
    apns_client.send(make_push(push_type="background", sound="default",
                               image_url="https://example.com/photo.jpg"))
    [request] = fake_apns.wait_for(1)
    assert request.ok, request.reason
    assert request.json["aps"] == {"content-available": 1}
    assert "image_url" not in request.json


def test_429_with_retry_after_is_transient(fake_apns: FakeAPNs, apns_client: APNsClient) -> None:
    fake_apns.fail(429, "TooManyRequests", retry_after=7)
    with pytest.raises(TransientDeliveryError) as caught:
        apns_client.send(make_push())
    assert caught.value.reason == "TooManyRequests"
    assert caught.value.retry_after_s == 7.0
    assert caught.value.throttled == "device"  # Apple throttles that device token alone


@pytest.mark.parametrize(("status", "reason"), [(500, "InternalServerError"), (503, "Shutdown")])
def test_server_errors_are_transient(
    fake_apns: FakeAPNs, apns_client: APNsClient, status: int, reason: str
) -> None:
    fake_apns.fail(status, reason)
    with pytest.raises(TransientDeliveryError) as caught:
        apns_client.send(make_push())
    assert (caught.value.reason, caught.value.retry_after_s) == (reason, None)
    assert caught.value.throttled is None  # an outage, which the breaker counts
    apns_client.send(make_push())  # the connection survives a failed stream
    assert fake_apns.received[-1].ok


def test_oversized_payload_is_refused_without_a_request(
    fake_apns: FakeAPNs, apns_client: APNsClient
) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        apns_client.send(make_push(body="x" * 4096))
    assert caught.value.reason == "PayloadTooLarge"
    assert fake_apns.received == []


def test_non_hex_token_is_rejected_without_a_request(
    fake_apns: FakeAPNs, apns_client: APNsClient
) -> None:
    with pytest.raises(TokenRejected, match="BadDeviceToken"):
        apns_client.send(make_push(token="../../evil"))
    assert fake_apns.received == []


def test_slow_server_is_a_transient_timeout(
    fake_apns: FakeAPNs, make_apns_client: Callable[..., APNsClient]
) -> None:
    fake_apns.latency_s = 1.0
    client = make_apns_client(timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(TransientDeliveryError, match="Timeout") as caught:
        client.send(make_push())
    assert time.monotonic() - started < 0.9
    # The request went out before the answer was late: APNs may have it
    assert caught.value.maybe_sent


def test_unreachable_server_is_transient(token_auth: TokenAuth, fake_apns: FakeAPNs) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with (
        APNsClient(
            endpoint=f"https://127.0.0.1:{port}",
            default_topic="com.willowe.app",
            auth=token_auth,
            ca_file=fake_apns.ca_file,
            timeout_s=2.0,
        ) as client,
        pytest.raises(TransientDeliveryError, match="ConnectionError") as caught,
    ):
        client.send(make_push())
    # Nothing listened: the request never left
    assert not caught.value.maybe_sent


def test_certificate_auth() -> None:
    with FakeAPNs(client_cert_auth=True) as fake:
        cert_file, key_file = fake.issue_client_cert()
        with APNsClient(
            endpoint=fake.url,
            default_topic=fake.bundle_id,
            auth=CertificateAuth(cert_file, key_file),
            ca_file=fake.ca_file,
            timeout_s=5.0,
        ) as client:
            client.send(make_push())
        [request] = fake.wait_for(1)
        assert request.ok
        assert "authorization" not in request.headers


def test_certificate_auth_server_refuses_clients_without_one(token_auth: TokenAuth) -> None:
    with FakeAPNs(client_cert_auth=True) as fake:
        with (
            APNsClient(
                endpoint=fake.url,
                default_topic=fake.bundle_id,
                auth=token_auth,
                ca_file=fake.ca_file,
                timeout_s=5.0,
            ) as client,
            pytest.raises(TransientDeliveryError, match="ConnectionError"),
        ):
            client.send(make_push())
        assert fake.received == []


def test_logs_never_show_the_device_token(
    fake_apns: FakeAPNs, apns_client: APNsClient, caplog: pytest.LogCaptureFixture
) -> None:
    # hpack logs raw headers at DEBUG (documented); everything else may be verbose.
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="willowe_tasks")
    apns_client.send(make_push())
    fake_apns.fail(410, "Unregistered")
    with pytest.raises(TokenRejected):
        apns_client.send(make_push())
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert make_push().token_hash in text  # the refusal is logged, by hash
    assert APNS_TOKEN not in text


def test_send_after_close_fails_loudly(apns_client: APNsClient) -> None:
    apns_client.close()
    with pytest.raises(RuntimeError, match="closed"):
        apns_client.send(make_push())
