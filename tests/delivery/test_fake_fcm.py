"""FakeFCM itself: Google's OAuth grant, message validation and error format."""

from __future__ import annotations

import copy
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from delivery_support import FCM_TOKEN, fcm_assertion

from willowe_tasks.testing import FakeFCM
from willowe_tasks.testing.fake_fcm import JWT_BEARER_GRANT

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

VALID_MESSAGE: dict[str, Any] = {
    "message": {
        "token": FCM_TOKEN,
        "notification": {"title": "It's a match!", "body": "Say hi"},
        "data": {"kind": "match"},
        "android": {
            "priority": "high",
            "ttl": "3600s",
            "collapse_key": "n-1",
            "notification": {"tag": "n-1"},
        },
    },
    "validate_only": False,
}


@pytest.fixture
def http(fake_fcm: FakeFCM) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=fake_fcm.ca_file)
    with httpx.Client(base_url=fake_fcm.url, verify=context, timeout=5.0) as client:
        yield client


@pytest.fixture
def bearer(fake_fcm: FakeFCM, http: httpx.Client) -> dict[str, str]:
    response = http.post(
        "/token", data={"grant_type": JWT_BEARER_GRANT, "assertion": fcm_assertion(fake_fcm)}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    return {"Authorization": f"Bearer {body['access_token']}"}


def send(
    http: httpx.Client, fake: FakeFCM, body: object, headers: dict[str, str]
) -> httpx.Response:
    return http.post(
        f"/v1/projects/{fake.project_id}/messages:send",
        content=json.dumps(body),
        headers={**headers, "content-type": "application/json"},
    )


def test_accepts_a_valid_message(
    fake_fcm: FakeFCM, http: httpx.Client, bearer: dict[str, str]
) -> None:
    response = send(http, fake_fcm, VALID_MESSAGE, bearer)
    assert response.status_code == 200
    assert response.json()["name"].startswith(f"projects/{fake_fcm.project_id}/messages/")
    [request] = fake_fcm.wait_for(1)
    assert (request.token, request.json) == (FCM_TOKEN, VALID_MESSAGE)


def test_service_account_points_back_at_the_fake(fake_fcm: FakeFCM, tmp_path: Path) -> None:
    info = fake_fcm.service_account_info()
    assert info["type"] == "service_account"
    assert info["project_id"] == fake_fcm.project_id
    assert info["token_uri"] == f"{fake_fcm.url}/token"
    path = Path(fake_fcm.write_service_account(tmp_path / "sa.json"))
    assert json.loads(path.read_text()) == info
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"grant_type": JWT_BEARER_GRANT, "assertion": "garbage"}, "invalid_grant"),
    ],
)
def test_token_endpoint_rejects_bad_grants(
    http: httpx.Client, form: dict[str, str], error: str
) -> None:
    response = http.post("/token", data=form)
    assert response.status_code == 400
    assert response.json()["error"] == error


@pytest.mark.parametrize(
    ("claims", "error"),
    [
        ({"aud": "https://example.invalid/token"}, "invalid_grant"),
        ({"iss": "someone@else.iam.gserviceaccount.com"}, "invalid_grant"),
        ({"exp": int(time.time()) - 600, "iat": int(time.time()) - 4000}, "invalid_grant"),
        ({"scope": "https://www.googleapis.com/auth/cloud-platform.read-only"}, "invalid_scope"),
    ],
)
def test_token_endpoint_checks_the_assertion(
    fake_fcm: FakeFCM, http: httpx.Client, claims: dict[str, Any], error: str
) -> None:
    form = {"grant_type": JWT_BEARER_GRANT, "assertion": fcm_assertion(fake_fcm, **claims)}
    response = http.post("/token", data=form)
    assert (response.status_code, response.json()["error"]) == (400, error)


def test_requires_an_access_token_it_issued(
    fake_fcm: FakeFCM, http: httpx.Client, bearer: dict[str, str]
) -> None:
    for headers in ({}, {"Authorization": "Bearer ya29.made-up"}):
        response = send(http, fake_fcm, VALID_MESSAGE, headers)
        assert response.status_code == 401
        assert response.json()["error"]["status"] == "UNAUTHENTICATED"
    fake_fcm.expire_access_tokens()
    assert send(http, fake_fcm, VALID_MESSAGE, bearer).status_code == 401


def test_rejects_another_project(
    fake_fcm: FakeFCM, http: httpx.Client, bearer: dict[str, str]
) -> None:
    response = http.post(
        "/v1/projects/someone-else/messages:send", json=VALID_MESSAGE, headers=bearer
    )
    assert response.status_code == 403
    assert response.json()["error"]["status"] == "PERMISSION_DENIED"


def mutate(path: str, value: object) -> dict[str, Any]:
    """VALID_MESSAGE with the dotted ``path`` set to ``value`` (deleted if ...)."""
    body = copy.deepcopy(VALID_MESSAGE)
    *parents, last = path.split(".")
    target = body
    for key in parents:
        target = target[key]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return body


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("message.data", {"count": 3}, "message.data"),
        ("message.data", {"flag": True}, "message.data"),
        ("message.data", {"google.sent_time": "1"}, "message.data"),
        ("message.android.ttl", "3600", "message.android.ttl"),
        ("message.android.ttl", 3600, "message.android.ttl"),
        ("message.android.priority", "urgent", "message.android.priority"),
        ("message.token", "", "message.token"),
        ("message.token", "has spaces", "message.token"),
        ("message.token", ..., "message"),
        ("message.topic", "news", "message"),
        ("message.notification.subtitle", "x", "message.notification"),
        ("message.android.notification.tag", 7, "message.android.notification.tag"),
        ("message.bogus", "x", "message"),
    ],
)
def test_rejects_invalid_messages(
    fake_fcm: FakeFCM,
    http: httpx.Client,
    bearer: dict[str, str],
    path: str,
    value: object,
    field: str,
) -> None:
    response = send(http, fake_fcm, mutate(path, value), bearer)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert {"@type": FCM_ERROR_TYPE, "errorCode": "INVALID_ARGUMENT"} in error["details"]
    [violation] = [d for d in error["details"] if "fieldViolations" in d]
    assert violation["fieldViolations"][0]["field"] == field


def test_rejects_a_body_that_is_not_json(
    fake_fcm: FakeFCM, http: httpx.Client, bearer: dict[str, str]
) -> None:
    response = http.post(
        f"/v1/projects/{fake_fcm.project_id}/messages:send", content=b"{", headers=bearer
    )
    assert response.status_code == 400


def test_injected_errors_use_googles_format(
    fake_fcm: FakeFCM, http: httpx.Client, bearer: dict[str, str]
) -> None:
    fake_fcm.fail(429, "QUOTA_EXCEEDED", retry_after=30)
    response = send(http, fake_fcm, VALID_MESSAGE, bearer)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert error["details"] == [{"@type": FCM_ERROR_TYPE, "errorCode": "QUOTA_EXCEEDED"}]
    assert send(http, fake_fcm, VALID_MESSAGE, bearer).status_code == 200


def test_unknown_paths_are_not_found(http: httpx.Client) -> None:
    assert http.get("/v1/projects/x/messages").status_code == 404
