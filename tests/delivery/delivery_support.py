"""Helpers shared by the delivery tests (a module, not conftest, so tests can import it)."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterable, Mapping

import httpx
import jwt

from willowe_tasks.providers import Push
from willowe_tasks.testing import FakeAPNs, FakeFCM, ReceivedRequest
from willowe_tasks.testing.fake_fcm import FCM_SCOPE, GOOGLE_TOKEN_AUDIENCE, JWT_BEARER_GRANT

#: A device token as APNs issues them: 32 bytes, hex.
APNS_TOKEN = "a1" * 32

#: An FCM registration token of the usual shape.
FCM_TOKEN = "dGVzdC1kZXZpY2U:APA91bH-fake_registration_token_0123456789"

#: Bound on every request the raw test clients make, in seconds.
WIRE_TIMEOUT_S = 5.0


class FakeClock:
    """Unix seconds that only move when a test says so."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def numbered(requests: Iterable[ReceivedRequest]) -> list[str]:
    """The ``n`` data value of each push: tests number what they send."""
    return [request.data["n"] for request in requests]


def make_push(token: str = APNS_TOKEN, **overrides: object) -> Push:
    fields: dict[str, object] = {
        "token": token,
        "title": "It's a match!",
        "body": "You and Alex liked each other",
        "data": {"kind": "match", "match_id": "m-42"},
        "priority": "high",
        "expires_at": time.time() + 3600,
        "collapse_id": "notif-0001",
    }
    fields.update(overrides)
    return Push(**fields)  # type: ignore[arg-type]


def fcm_assertion(fake: FakeFCM, *, project_id: str | None = None, key: str | None = None,
                  **claims: object) -> str:
    """A service-account assertion as google-auth signs it, for ``project_id``'s account."""
    info = fake.service_account_info(project_id)
    now = int(time.time())
    payload: dict[str, object] = {
        "iss": info["client_email"],
        "aud": GOOGLE_TOKEN_AUDIENCE,
        "scope": FCM_SCOPE,
        "iat": now,
        "exp": now + 3600,
        **claims,
    }
    return jwt.encode(payload, key or info["private_key"], algorithm="RS256",
                      headers={"kid": info["private_key_id"]})


class FCMWire:
    """Raw HTTP v1 requests to a FakeFCM, authenticated as a project's service
    account: for messages the real client would never send."""

    def __init__(self, fake: FakeFCM, project_id: str | None = None) -> None:
        self.fake = fake
        self.project_id = project_id or fake.project_id
        context = ssl.create_default_context(cafile=fake.ca_file)
        self.http = httpx.Client(base_url=fake.url, verify=context, timeout=WIRE_TIMEOUT_S)
        form = {"grant_type": JWT_BEARER_GRANT,
                "assertion": fcm_assertion(fake, project_id=self.project_id)}
        grant = self.http.post("/token", data=form)
        assert grant.status_code == 200, grant.text
        self.headers = {"Authorization": f"Bearer {grant.json()['access_token']}"}

    def send(self, body: object, *, project_id: str | None = None) -> httpx.Response:
        """POST ``body`` to ``messages:send`` of ``project_id`` (default: the wire's)."""
        return self.http.post(
            f"/v1/projects/{project_id or self.project_id}/messages:send",
            content=json.dumps(body),
            headers={**self.headers, "content-type": "application/json"},
        )

    def close(self) -> None:
        self.http.close()


def fcm_message(token: str = FCM_TOKEN, **fields: object) -> dict[str, object]:
    """``{"message": {...}}`` to ``token`` with ``fields``."""
    return {"message": {"token": token, **fields}}


def fcm_error(response: httpx.Response) -> tuple[int, str, str | None, str | None]:
    """``(code, status, FcmError errorCode, first violated field)`` of a Google error."""
    error = response.json()["error"]
    details = error.get("details", [])
    codes = [d["errorCode"] for d in details if "errorCode" in d]
    fields = [v["field"] for d in details for v in d.get("fieldViolations", [])]
    return (error["code"], error["status"], codes[0] if codes else None,
            fields[0] if fields else None)


def apns_provider_token(fake: FakeAPNs, iat: float, *, key: object = None,
                        kid: str | None = None) -> str:
    return jwt.encode(
        {"iss": fake.team_id, "iat": int(iat)},
        key or fake.signing_key_pem,  # type: ignore[arg-type]
        algorithm="ES256",
        headers={"kid": kid or fake.key_id},
    )


class APNsWire:
    """Raw HTTP/2 pushes to a FakeAPNs (either of its hosts), for requests the
    real client would never make."""

    def __init__(self, fake: FakeAPNs, clock: FakeClock) -> None:
        self.fake = fake
        context = ssl.create_default_context(cafile=fake.ca_file)
        self.http = httpx.Client(http1=False, http2=True, verify=context, timeout=WIRE_TIMEOUT_S)
        self.headers = {
            "apns-topic": fake.bundle_id,
            "apns-push-type": "alert",
            "apns-priority": "10",
            "authorization": f"bearer {apns_provider_token(fake, clock())}",
        }

    def push(
        self,
        payload: object = None,
        *,
        token: str = APNS_TOKEN,
        url: str | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """POST ``payload`` (default: an alert) to ``token``, with ``headers``
        replacing or adding to an alert push's."""
        if body is None:
            body = json.dumps(payload or {"aps": {"alert": {"title": "Hi"}}}).encode()
        return self.http.post(f"{url or self.fake.url}/3/device/{token}", content=body,
                              headers={**self.headers, **(headers or {})})

    def close(self) -> None:
        self.http.close()


def apns_reason(response: httpx.Response) -> tuple[int, str | None]:
    body = response.json() if response.content else {}
    return response.status_code, body.get("reason")
