"""Push: validation at construction, and secrets kept out of repr."""

from __future__ import annotations

import hashlib
import pickle
import time
from typing import Any

import pytest
from delivery_support import APNS_TOKEN, make_push

from willowe_tasks.providers import (
    DeliveryError,
    PermanentDeliveryError,
    TokenRejected,
    TransientDeliveryError,
)
from willowe_tasks.providers.retry_after import MAX_RETRY_AFTER_S, parse_retry_after
from willowe_tasks.registry import Device
from willowe_tasks.tokens import token_hash


def test_repr_hides_token_and_content() -> None:
    push = make_push(title="Secret title", body="Secret body", data={"k": "secret-value"})
    text = repr(push)
    assert APNS_TOKEN not in text
    assert "Secret" not in text
    assert "secret-value" not in text
    assert "notif-0001" in text


def test_a_push_names_its_device_by_the_same_short_hash_as_every_log_line() -> None:
    push = make_push()
    device = Device("u1", "ios", APNS_TOKEN, "app")
    # One phone, one name, wherever it is logged
    assert push.token_hash == device.token_hash == token_hash(APNS_TOKEN)
    assert push.token_hash == "sha256:" + hashlib.sha256(APNS_TOKEN.encode()).hexdigest()[:12]
    assert push.token_hash[len("sha256:"):] not in APNS_TOKEN


def test_collapse_id_is_limited_to_64_bytes_not_characters() -> None:
    make_push(collapse_id="x" * 64)
    with pytest.raises(ValueError, match="64 bytes"):
        make_push(collapse_id="x" * 65)
    with pytest.raises(ValueError, match="64 bytes"):
        make_push(collapse_id="я" * 33)  # 66 bytes in UTF-8


@pytest.mark.parametrize(
    "overrides",
    [
        {"data": {"count": 3}},
        {"priority": "urgent"},
        {"push_type": "voip"},
        {"token": ""},
        {"collapse_id": ""},
    ],
)
def test_invalid_pushes_fail_at_construction(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make_push(**overrides)


def test_ttl_counts_down_to_zero() -> None:
    now = time.time()
    push = make_push(expires_at=now + 90.5)
    assert push.ttl_s(now) == 90
    assert push.ttl_s(now + 100) == 0


def test_errors_form_a_tree_and_survive_pickling() -> None:
    error = TransientDeliveryError(
        "TooManyRequests", provider="apns", retry_after_s=7.0, status_code=429
    )
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, TransientDeliveryError)
    assert isinstance(copy, DeliveryError)
    assert (copy.provider, copy.reason, copy.retry_after_s, copy.status_code) == (
        "apns",
        "TooManyRequests",
        7.0,
        429,
    )
    assert str(copy) == "apns TooManyRequests (HTTP 429); retry after 7s"
    rejected = pickle.loads(pickle.dumps(TokenRejected("UNREGISTERED", provider="fcm")))
    assert isinstance(rejected, TokenRejected)
    assert not isinstance(rejected, PermanentDeliveryError)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("120", 120.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("soon", None),
        ("99999999", MAX_RETRY_AFTER_S),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
    ],
)
def test_retry_after_accepts_seconds_and_http_dates(
    header: str | None, expected: float | None
) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(header, now=now) == expected
