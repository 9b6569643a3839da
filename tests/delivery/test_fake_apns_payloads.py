"""FakeAPNs checks payloads as Apple documents them: 4096 bytes (5120 for VoIP),
the types of the aps keys, background pushes without user-visible keys, and the
topic each push type must use."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from delivery_support import APNsWire, FakeClock, apns_reason

from willowe_tasks.testing import FakeAPNs
from willowe_tasks.testing.fake_apns import MAX_PAYLOAD_BYTES, MAX_VOIP_PAYLOAD_BYTES


@pytest.fixture
def wire(fake_apns: FakeAPNs, clock: FakeClock) -> Iterator[APNsWire]:
    client = APNsWire(fake_apns, clock)
    yield client
    client.close()


def padded(size: int) -> bytes:
    """A valid alert payload of exactly ``size`` bytes."""
    head, tail = b'{"aps":{"alert":"Hi"},"pad":"', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def voip(fake: FakeAPNs) -> dict[str, str]:
    return {"apns-topic": f"{fake.bundle_id}.voip", "apns-push-type": "voip"}


def test_a_voip_payload_may_take_5120_bytes(fake_apns: FakeAPNs, wire: APNsWire) -> None:
    fits = wire.push(body=padded(MAX_VOIP_PAYLOAD_BYTES), headers=voip(fake_apns))
    assert fits.status_code == 200
    too_big = wire.push(body=padded(MAX_VOIP_PAYLOAD_BYTES + 1), headers=voip(fake_apns))
    assert apns_reason(too_big) == (413, "PayloadTooLarge")


def test_any_other_payload_only_4096(wire: APNsWire) -> None:
    assert wire.push(body=padded(MAX_PAYLOAD_BYTES)).status_code == 200
    assert apns_reason(wire.push(body=padded(MAX_PAYLOAD_BYTES + 1))) == (413, "PayloadTooLarge")


@pytest.mark.parametrize(
    "aps",
    [
        {"alert": 5},
        {"alert": ["Hi"]},
        {"alert": {"title": 5}},
        {"alert": {"loc-args": "x"}},
        {"badge": "1"},
        {"badge": -1},
        {"badge": True},
        {"badge": 1.5},
        {"sound": 5},
        {"sound": {"name": "ping.aiff", "volume": 2}},
        {"sound": {"critical": True, "name": "ping.aiff"}},
        {"content-available": "1"},
        {"content-available": True},
        {"mutable-content": "1"},
        {"thread-id": 7},
        {"category": ["x"]},
        {"relevance-score": 2},
        {"interruption-level": "urgent"},
        {"content-state": "x"},
    ],
)
def test_mistyped_aps_keys_are_a_bad_payload(wire: APNsWire, aps: dict[str, Any]) -> None:
    assert apns_reason(wire.push({"aps": aps})) == (400, "BadPayload")


@pytest.mark.parametrize(
    "aps",
    [
        {"alert": "Hi"},
        {"alert": {"title": "Hi", "loc-args": ["a"]}, "badge": 0, "sound": "default"},
        {"alert": "Hi", "sound": {"critical": 1, "name": "alarm.aiff", "volume": 0.5}},
        {"alert": "Hi", "thread-id": "chat-1", "mutable-content": 1, "relevance-score": 0.3,
         "interruption-level": "time-sensitive"},
        {"alert": "Hi", "some-future-key": {"any": "thing"}},
    ],
)
def test_well_typed_aps_keys_are_accepted(wire: APNsWire, aps: dict[str, Any]) -> None:
    assert wire.push({"aps": aps}).status_code == 200


def test_a_background_push_carries_content_available_and_nothing_to_show(
    wire: APNsWire,
) -> None:
    background = {"apns-push-type": "background", "apns-priority": "5"}
    response = wire.push({"aps": {"content-available": 1}, "k": "v"}, headers=background)
    assert response.status_code == 200
    for aps in ({"content-available": 1, "alert": {"title": "Hi"}},
                {"content-available": 1, "badge": 1}, {"content-available": 1, "sound": "x"},
                {}):
        assert apns_reason(wire.push({"aps": aps}, headers=background)) == (400, "BadPayload"), aps


@pytest.mark.parametrize(
    ("push_type", "suffix", "accepted"),
    [
        ("voip", ".voip", True),
        ("voip", "", False),
        ("alert", ".voip", False),
        ("complication", ".complication", True),
        ("liveactivity", ".push-type.liveactivity", True),
        ("liveactivity", "", False),
    ],
)
def test_each_push_type_has_its_topic(
    fake_apns: FakeAPNs, wire: APNsWire, push_type: str, suffix: str, accepted: bool
) -> None:
    response = wire.push(headers={"apns-topic": fake_apns.bundle_id + suffix,
                                  "apns-push-type": push_type})
    expected = (200, None) if accepted else (400, "TopicDisallowed")
    assert apns_reason(response) == expected


def test_apple_documents_no_upper_bound_on_the_expiration(wire: APNsWire) -> None:
    assert wire.push(headers={"apns-expiration": str(10**11)}).status_code == 200
