"""FCMClient against FakeFCM: the real OAuth flow, HTTP v1 messages, no sleeping."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyfcm
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from delivery_support import FCM_TOKEN, make_push

from willowe_tasks.providers import PermanentDeliveryError, TokenRejected, TransientDeliveryError
from willowe_tasks.providers.fcm.client import FCMClient
from willowe_tasks.providers.fcm.message import (
    encode_request,
    encode_request_sized,
    fcm_message,
    fcm_payload_bytes,
)
from willowe_tasks.testing import FakeFCM

#: Threads sending at once in the concurrency test.
THREADS = 16

#: Messages per thread in the concurrency test.
MESSAGES_PER_THREAD = 5

#: A client that "returns fast" after a Retry-After of many seconds.
NO_SLEEP_BOUND_S = 2.0


def test_send_runs_oauth_and_builds_a_v1_message(fake_fcm: FakeFCM, fcm_client: FCMClient) -> None:
    fcm_client.send(make_push(FCM_TOKEN, expires_at=time.time() + 3600, priority="high"))

    [request] = fake_fcm.wait_for(1)
    assert request.ok, request.reason
    assert fake_fcm.token_grants == 1
    assert request.path == f"/v1/projects/{fake_fcm.project_id}/messages:send"
    assert request.headers["authorization"].startswith("Bearer ya29.fake-")
    message = request.json["message"]
    assert message["token"] == FCM_TOKEN
    assert message["notification"] == {
        "title": "It's a match!",
        "body": "You and Alex liked each other",
    }
    assert message["data"] == {"kind": "match", "match_id": "m-42"}
    android = message["android"]
    assert android["priority"] == "high"
    assert re.fullmatch(r"\d+s", android["ttl"])
    assert 3590 <= int(android["ttl"][:-1]) <= 3600
    # No collapse key: an offline phone would keep only four of them.
    assert "collapse_key" not in android
    assert android["notification"] == {"tag": "notif-0001"}


def test_a_deadline_beyond_28_days_is_sent_as_fcms_longest_ttl(
    fake_fcm: FakeFCM, fcm_client: FCMClient
) -> None:
    # Given a push worth delivering for 30 days (a low-priority custom notification)
    fcm_client.send(make_push(FCM_TOKEN, expires_at=time.time() + 30 * 24 * 3600))
    # Then FCM is asked to keep it for its maximum, 28 days, and accepts it
    [request] = fake_fcm.wait_for(1)
    assert request.ok, request.reason
    assert request.json["message"]["android"]["ttl"] == f"{28 * 24 * 3600}s"


def test_sound_and_picture_go_where_android_shows_them(
    fake_fcm: FakeFCM, fcm_client: FCMClient
) -> None:
    fcm_client.send(make_push(FCM_TOKEN, sound="default",
                              image_url="https://example.com/photo.jpg"))
    [request] = fake_fcm.wait_for(1)
    assert request.ok, request.reason
    message = request.json["message"]
    assert message["notification"]["image"] == "https://example.com/photo.jpg"
    assert message["android"]["notification"]["sound"] == "default"


def test_a_message_over_fcms_4096_bytes_is_refused_before_it_is_sent(
    fake_fcm: FakeFCM, fcm_client: FCMClient
) -> None:
    # 2,000 Cyrillic letters are 4,000 UTF-8 bytes: with the title, over 4,096
    with pytest.raises(PermanentDeliveryError, match="MessageTooBig.*limit 4096"):
        fcm_client.send(make_push(FCM_TOKEN, body="ж" * 2000))
    assert fake_fcm.received == []


@pytest.mark.parametrize(("priority", "expected"), [("medium", "normal"), ("low", "normal")])
def test_lower_priorities_are_normal(
    fake_fcm: FakeFCM, fcm_client: FCMClient, priority: str, expected: str
) -> None:
    fcm_client.send(make_push(FCM_TOKEN, priority=priority))
    [request] = fake_fcm.wait_for(1)
    assert request.json["message"]["android"]["priority"] == expected


def test_background_push_is_data_only(fake_fcm: FakeFCM, fcm_client: FCMClient) -> None:
    fcm_client.send(make_push(FCM_TOKEN, push_type="background"))
    [request] = fake_fcm.wait_for(1)
    message = request.json["message"]
    assert "notification" not in message
    assert "notification" not in message["android"]
    assert message["data"] == {"kind": "match", "match_id": "m-42"}


def test_expired_push_has_zero_ttl(fake_fcm: FakeFCM, fcm_client: FCMClient) -> None:
    fcm_client.send(make_push(FCM_TOKEN, expires_at=time.time() - 10))
    [request] = fake_fcm.wait_for(1)
    assert request.json["message"]["android"]["ttl"] == "0s"


def test_threads_share_one_access_token(fake_fcm: FakeFCM, fcm_client: FCMClient) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker() -> None:
        start.wait(timeout=10)
        for _ in range(MESSAGES_PER_THREAD):
            try:
                fcm_client.send(make_push(FCM_TOKEN))
            except BaseException as exc:  # reported below
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    received = fake_fcm.wait_for(THREADS * MESSAGES_PER_THREAD)
    assert all(request.ok for request in received)
    assert fake_fcm.token_grants == 1


def test_revoked_access_token_is_replaced_once(fake_fcm: FakeFCM, fcm_client: FCMClient) -> None:
    fcm_client.send(make_push(FCM_TOKEN))
    fake_fcm.expire_access_tokens()
    fcm_client.send(make_push(FCM_TOKEN))
    assert fake_fcm.token_grants == 2
    assert [request.status for request in fake_fcm.wait_for(3)] == [200, 401, 200]


@pytest.mark.parametrize(
    ("status", "error_code"), [(404, "UNREGISTERED"), (403, "SENDER_ID_MISMATCH")]
)
def test_dead_tokens_are_rejected(
    fake_fcm: FakeFCM, fcm_client: FCMClient, status: int, error_code: str
) -> None:
    fake_fcm.fail(status, error_code)
    with pytest.raises(TokenRejected) as caught:
        fcm_client.send(make_push(FCM_TOKEN))
    assert (caught.value.provider, caught.value.reason, caught.value.status_code) == (
        "fcm",
        error_code,
        status,
    )
    assert FCM_TOKEN not in str(caught.value)


def test_unregistered_device(fake_fcm: FakeFCM, fcm_client: FCMClient) -> None:
    fake_fcm.unregister(FCM_TOKEN)
    with pytest.raises(TokenRejected, match="UNREGISTERED"):
        fcm_client.send(make_push(FCM_TOKEN))


def test_malformed_token_is_rejected_as_a_token_problem(
    fake_fcm: FakeFCM, fcm_client: FCMClient
) -> None:
    with pytest.raises(TokenRejected) as caught:
        fcm_client.send(make_push("not a token!"))
    assert caught.value.reason == "INVALID_ARGUMENT"
    assert fake_fcm.received[0].status == 400


def test_other_invalid_arguments_are_permanent(fake_fcm: FakeFCM, fcm_client: FCMClient) -> None:
    fake_fcm.fail(400, "INVALID_ARGUMENT")
    with pytest.raises(PermanentDeliveryError, match="INVALID_ARGUMENT"):
        fcm_client.send(make_push(FCM_TOKEN))


def test_quota_exceeded_returns_at_once_with_the_delay(
    fake_fcm: FakeFCM, fcm_client: FCMClient
) -> None:
    fcm_client.send(make_push(FCM_TOKEN))  # token fetched outside the timed part
    fake_fcm.fail(429, "QUOTA_EXCEEDED", retry_after=30)
    started = time.monotonic()
    with pytest.raises(TransientDeliveryError) as caught:
        fcm_client.send(make_push(FCM_TOKEN))
    assert time.monotonic() - started < NO_SLEEP_BOUND_S  # pyfcm would sleep 30 s
    assert (caught.value.reason, caught.value.retry_after_s, caught.value.status_code) == (
        "QUOTA_EXCEEDED",
        30.0,
        429,
    )
    assert caught.value.throttled == "sender"  # the whole project waits, not one device
    assert len(fake_fcm.wait_for(2)) == 2  # and no retry of its own


@pytest.mark.parametrize(
    ("status", "error_code", "retry_after", "expected"),
    [
        (503, "UNAVAILABLE", 5, 5.0),
        (500, "INTERNAL", None, None),
        (502, "UNSPECIFIED_ERROR", 1, 1.0),
    ],
)
def test_server_errors_are_transient_and_not_retried_inside(
    fake_fcm: FakeFCM,
    fcm_client: FCMClient,
    status: int,
    error_code: str,
    retry_after: int | None,
    expected: float | None,
) -> None:
    fcm_client.send(make_push(FCM_TOKEN))
    fake_fcm.fail(status, error_code, retry_after=retry_after, times=5)
    started = time.monotonic()
    with pytest.raises(TransientDeliveryError) as caught:
        fcm_client.send(make_push(FCM_TOKEN))
    assert time.monotonic() - started < NO_SLEEP_BOUND_S
    assert (caught.value.status_code, caught.value.retry_after_s) == (status, expected)
    assert len(fake_fcm.received) == 2  # urllib3's 502/503 retries are off


def test_service_account_file(
    fake_fcm: FakeFCM, make_fcm_client: Callable[..., FCMClient], tmp_path: Path
) -> None:
    path = fake_fcm.write_service_account(tmp_path / "service-account.json")
    client = make_fcm_client(service_account_info=None, service_account_file=path)
    client.send(make_push(FCM_TOKEN))
    assert fake_fcm.wait_for(1)[0].ok


def test_a_foreign_service_account_cannot_authenticate(
    fake_fcm: FakeFCM, make_fcm_client: Callable[..., FCMClient]
) -> None:
    info = fake_fcm.service_account_info()
    info["private_key"] = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    client = make_fcm_client(service_account_info=info)
    with pytest.raises(PermanentDeliveryError, match="AuthFailed"):
        client.send(make_push(FCM_TOKEN))
    assert fake_fcm.received == []


def test_ca_file_wins_over_requests_environment(
    fake_fcm: FakeFCM, fcm_client: FCMClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests lets REQUESTS_CA_BUNDLE override a session's verify setting.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(Path(pyfcm.__file__)))
    fcm_client.send(make_push(FCM_TOKEN))
    assert fake_fcm.wait_for(1)[0].ok


def test_endpoint_override_leaves_pyfcm_alone(fcm_client: FCMClient) -> None:
    assert pyfcm.FCMNotification.FCM_END_POINT_BASE == "https://fcm.googleapis.com/v1/projects"


def test_unreachable_fcm_is_transient(fake_fcm: FakeFCM) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with (
        FCMClient(
            project_id=fake_fcm.project_id,
            service_account_info=fake_fcm.service_account_info(),
            endpoint=f"https://127.0.0.1:{port}",
            ca_file=fake_fcm.ca_file,
            timeout_s=2.0,
        ) as client,
        pytest.raises(TransientDeliveryError, match="ConnectionError") as caught,
    ):
        client.send(make_push(FCM_TOKEN))
    assert fake_fcm.token_grants == 1  # the token endpoint did answer
    assert not caught.value.maybe_sent  # nothing listened: the message never left


def test_an_answer_too_late_may_have_been_accepted(
    fake_fcm: FakeFCM, make_fcm_client: Callable[..., FCMClient]
) -> None:
    fake_fcm.latency_s = 1.0
    client = make_fcm_client(timeout_s=0.2)
    with pytest.raises(TransientDeliveryError, match="Timeout") as caught:
        client.send(make_push(FCM_TOKEN))
    assert caught.value.maybe_sent


def test_unreachable_token_endpoint_is_transient(
    fake_fcm: FakeFCM, make_fcm_client: Callable[..., FCMClient]
) -> None:
    info = fake_fcm.service_account_info()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        info["token_uri"] = f"https://127.0.0.1:{sock.getsockname()[1]}/token"
    client = make_fcm_client(service_account_info=info)
    with pytest.raises(TransientDeliveryError, match="AuthUnavailable"):
        client.send(make_push(FCM_TOKEN))
    assert fake_fcm.received == []


@pytest.mark.parametrize("message", [
    fcm_message(make_push()),
    fcm_message(make_push(push_type="background", title=None, body=None)),
    {"token": 'a"b\\c'},
    {"data": {"k": "ü"}},
])
def test_one_encoding_gives_the_body_and_the_counted_size(message: dict[str, object]) -> None:
    body, size = encode_request_sized(message)
    assert json.loads(body) == json.loads(encode_request(message))
    assert size == fcm_payload_bytes(message)
