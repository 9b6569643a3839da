"""Helpers shared by the delivery tests (a module, not conftest, so tests can import it)."""

from __future__ import annotations

import time

from willowe_tasks.providers import Push

#: A device token as APNs issues them: 32 bytes, hex.
APNS_TOKEN = "a1" * 32

#: An FCM registration token of the usual shape.
FCM_TOKEN = "dGVzdC1kZXZpY2U:APA91bH-fake_registration_token_0123456789"


class FakeClock:
    """Unix seconds that only move when a test says so."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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
