"""FakeAPNs itself: it must reject what Apple rejects, so clients can trust it."""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from delivery_support import APNS_TOKEN, FakeClock, apns_provider_token

from willowe_tasks.testing import FakeAPNs

PATH = f"/3/device/{APNS_TOKEN}"
PAYLOAD = json.dumps({"aps": {"alert": {"title": "Hi"}}}).encode()


@pytest.fixture
def http(fake_apns: FakeAPNs) -> Iterator[httpx.Client]:
    """A plain HTTP/2 client, for requests the real client would never make."""
    context = ssl.create_default_context(cafile=fake_apns.ca_file)
    with httpx.Client(
        base_url=fake_apns.url, http1=False, http2=True, verify=context, timeout=5.0
    ) as client:
        yield client


@pytest.fixture
def headers(fake_apns: FakeAPNs, clock: FakeClock) -> dict[str, str]:
    return {
        "authorization": f"bearer {apns_provider_token(fake_apns, clock())}",
        "apns-topic": fake_apns.bundle_id,
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-expiration": "0",
    }


def reason(response: httpx.Response) -> str:
    return str(response.json()["reason"])


def test_accepts_a_valid_push(http: httpx.Client, headers: dict[str, str]) -> None:
    apns_id = str(uuid.uuid4()).upper()
    response = http.post(PATH, content=PAYLOAD, headers={**headers, "apns-id": apns_id})
    assert response.status_code == 200
    assert response.http_version == "HTTP/2"
    assert response.headers["apns-id"] == apns_id


@pytest.mark.parametrize(
    ("changes", "status", "expected"),
    [
        ({"apns-topic": None}, 400, "MissingTopic"),
        ({"apns-topic": "com.other.app"}, 400, "TopicDisallowed"),
        ({"apns-push-type": "shout"}, 400, "InvalidPushType"),
        ({"apns-push-type": None}, 400, "InvalidPushType"),
        ({"apns-priority": "7"}, 400, "BadPriority"),
        ({"apns-push-type": "background", "apns-priority": "10"}, 400, "BadPriority"),
        ({"apns-expiration": "tomorrow"}, 400, "BadExpirationDate"),
        ({"apns-collapse-id": "c" * 65}, 400, "BadCollapseId"),
        ({"apns-id": "not-a-uuid"}, 400, "BadMessageId"),
        ({"authorization": None}, 403, "MissingProviderToken"),
        ({"authorization": "bearer not.a.jwt"}, 403, "InvalidProviderToken"),
    ],
)
def test_rejects_bad_headers(
    http: httpx.Client,
    headers: dict[str, str],
    changes: dict[str, str | None],
    status: int,
    expected: str,
) -> None:
    for name, value in changes.items():
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    response = http.post(PATH, content=PAYLOAD, headers=headers)
    assert (response.status_code, reason(response)) == (status, expected)
    assert response.headers["apns-id"]


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        (b"", 400, "PayloadEmpty"),
        (b"{not json", 400, "BadPayload"),
        (b'{"alert": "no aps"}', 400, "BadPayload"),
        (json.dumps({"aps": {}, "pad": "x" * 4096}).encode(), 413, "PayloadTooLarge"),
    ],
)
def test_rejects_bad_payloads(
    http: httpx.Client, headers: dict[str, str], body: bytes, status: int, expected: str
) -> None:
    response = http.post(PATH, content=body, headers=headers)
    assert (response.status_code, reason(response)) == (status, expected)


def test_payload_of_exactly_4096_bytes_is_accepted(
    http: httpx.Client, headers: dict[str, str]
) -> None:
    body = b'{"aps":{},"pad":"' + b"x" * (4096 - 19) + b'"}'
    assert len(body) == 4096
    assert http.post(PATH, content=body, headers=headers).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "expected"),
    [
        ("GET", PATH, 405, "MethodNotAllowed"),
        ("POST", f"/3/devices/{APNS_TOKEN}", 404, "BadPath"),
        ("POST", "/3/device/", 400, "MissingDeviceToken"),
        ("POST", "/3/device/not-hex-at-all", 400, "BadDeviceToken"),
    ],
)
def test_rejects_bad_requests(
    http: httpx.Client,
    headers: dict[str, str],
    method: str,
    path: str,
    status: int,
    expected: str,
) -> None:
    response = http.request(method, path, content=PAYLOAD, headers=headers)
    assert (response.status_code, reason(response)) == (status, expected)


def test_rejects_duplicate_headers(http: httpx.Client, headers: dict[str, str]) -> None:
    doubled = [*headers.items(), ("apns-topic", headers["apns-topic"])]
    response = http.post(PATH, content=PAYLOAD, headers=doubled)
    assert (response.status_code, reason(response)) == (400, "DuplicateHeaders")


def test_rejects_http_1_1(fake_apns: FakeAPNs, headers: dict[str, str]) -> None:
    context = ssl.create_default_context(cafile=fake_apns.ca_file)
    with httpx.Client(base_url=fake_apns.url, verify=context, timeout=5.0) as http1:
        response = http1.post(PATH, content=PAYLOAD, headers=headers)
    assert response.http_version == "HTTP/1.1"
    assert response.status_code == 505


def test_rejects_a_token_signed_with_another_key(
    fake_apns: FakeAPNs, http: httpx.Client, headers: dict[str, str], clock: FakeClock
) -> None:
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    headers["authorization"] = f"bearer {apns_provider_token(fake_apns, clock(), key=other)}"
    response = http.post(PATH, content=PAYLOAD, headers=headers)
    assert (response.status_code, reason(response)) == (403, "InvalidProviderToken")


def test_rejects_a_token_for_another_key_id(
    fake_apns: FakeAPNs, http: httpx.Client, headers: dict[str, str], clock: FakeClock
) -> None:
    headers["authorization"] = f"bearer {apns_provider_token(fake_apns, clock(), kid='OTHERKEY01')}"
    response = http.post(PATH, content=PAYLOAD, headers=headers)
    assert (response.status_code, reason(response)) == (403, "InvalidProviderToken")


def test_rejects_a_token_older_than_an_hour(
    fake_apns: FakeAPNs, http: httpx.Client, headers: dict[str, str], clock: FakeClock
) -> None:
    headers["authorization"] = f"bearer {apns_provider_token(fake_apns, clock() - 3601)}"
    response = http.post(PATH, content=PAYLOAD, headers=headers)
    assert (response.status_code, reason(response)) == (403, "ExpiredProviderToken")


def test_rejects_token_rotation_within_20_minutes_on_a_connection(
    fake_apns: FakeAPNs, http: httpx.Client, headers: dict[str, str], clock: FakeClock
) -> None:
    assert http.post(PATH, content=PAYLOAD, headers=headers).status_code == 200
    clock.advance(19 * 60)
    headers["authorization"] = f"bearer {apns_provider_token(fake_apns, clock())}"
    response = http.post(PATH, content=PAYLOAD, headers=headers)
    assert (response.status_code, reason(response)) == (429, "TooManyProviderTokenUpdates")
    clock.advance(60)  # now 20 minutes after the first token
    headers["authorization"] = f"bearer {apns_provider_token(fake_apns, clock())}"
    assert http.post(PATH, content=PAYLOAD, headers=headers).status_code == 200


def test_injected_faults_are_used_up_in_order_and_per_token(
    fake_apns: FakeAPNs, http: httpx.Client, headers: dict[str, str]
) -> None:
    other = "b2" * 32
    fake_apns.fail(410, "Unregistered", token=other)
    fake_apns.fail(503, "ServiceUnavailable", times=2, retry_after=3)
    first = http.post(PATH, content=PAYLOAD, headers=headers)
    assert (first.status_code, reason(first), first.headers["retry-after"]) == (
        503,
        "ServiceUnavailable",
        "3",
    )
    assert reason(http.post(f"/3/device/{other}", content=PAYLOAD, headers=headers)) == (
        "Unregistered"
    )
    assert http.post(PATH, content=PAYLOAD, headers=headers).status_code == 503
    assert http.post(PATH, content=PAYLOAD, headers=headers).status_code == 200
    statuses = [(request.token, request.status) for request in fake_apns.wait_for(4)]
    assert statuses == [(APNS_TOKEN, 503), (other, 410), (APNS_TOKEN, 503), (APNS_TOKEN, 200)]


def test_malformed_requests_do_not_use_up_faults(
    fake_apns: FakeAPNs, http: httpx.Client, headers: dict[str, str]
) -> None:
    fake_apns.fail(500, "InternalServerError")
    assert http.post(PATH, content=b"", headers=headers).status_code == 400
    assert http.post(PATH, content=PAYLOAD, headers=headers).status_code == 500


def test_wait_for_is_bounded(fake_apns: FakeAPNs) -> None:
    with pytest.raises(TimeoutError, match="0 of 1"):
        fake_apns.wait_for(1, timeout_s=0.05)


def test_hands_out_files_and_removes_them_on_stop() -> None:
    fake = FakeAPNs().start()
    key_file, ca_file = Path(fake.signing_key_path), Path(fake.ca_file)
    cert_file, client_key_file = map(Path, fake.issue_client_cert())
    assert key_file.read_text() == fake.signing_key_pem
    assert "BEGIN CERTIFICATE" in ca_file.read_text()
    assert cert_file.exists() and client_key_file.exists()
    assert fake.url.startswith("https://127.0.0.1:")
    fake.stop()
    assert not fake.directory.exists()
