"""What an iPhone behind FakeAPNs receives and shows: one stored notification per
app while offline (the latest), apns-expiration, and apns-collapse-id on screen."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from delivery_support import APNS_TOKEN, APNsWire, FakeClock, numbered

from willowe_tasks.testing import FakeAPNs

DAY_S = 24 * 3600


@pytest.fixture
def wire(fake_apns: FakeAPNs, clock: FakeClock) -> Iterator[APNsWire]:
    client = APNsWire(fake_apns, clock)
    yield client
    client.close()


def alert(wire: APNsWire, n: str, headers: dict[str, str] | None = None) -> None:
    """An alert numbered ``n``."""
    payload = {"aps": {"alert": {"title": f"n{n}"}}, "n": n}
    assert wire.push(payload, headers=headers).status_code == 200


def test_an_online_phone_shows_alerts_but_not_background_pushes(
    fake_apns: FakeAPNs, wire: APNsWire
) -> None:
    alert(wire, "1")
    background = {"apns-push-type": "background", "apns-priority": "5"}
    response = wire.push({"aps": {"content-available": 1}, "n": "2"}, headers=background)
    assert response.status_code == 200
    phone = fake_apns.phone(APNS_TOKEN)
    assert numbered(phone.received) == ["1", "2"]
    assert numbered(phone.shown) == ["1"]


def test_the_same_collapse_id_shows_as_one_notification(
    fake_apns: FakeAPNs, wire: APNsWire
) -> None:
    alert(wire, "1", {"apns-collapse-id": "match-7"})
    alert(wire, "2")
    alert(wire, "3", {"apns-collapse-id": "match-7"})
    assert numbered(fake_apns.phone(APNS_TOKEN).shown) == ["2", "3"]


def test_apns_keeps_only_the_latest_notification_for_an_offline_phone(
    fake_apns: FakeAPNs, wire: APNsWire
) -> None:
    fake_apns.set_offline(APNS_TOKEN.upper())  # hex tokens ignore case
    for n in ("1", "2", "3"):
        alert(wire, n, {"apns-collapse-id": f"notification-{n}"})
    assert fake_apns.phone(APNS_TOKEN).waiting == 1
    assert numbered(fake_apns.set_online(APNS_TOKEN)) == ["3"]
    assert len(fake_apns.phone(APNS_TOKEN).shown) == 1


def test_an_expiration_of_zero_means_now_or_never(fake_apns: FakeAPNs, wire: APNsWire) -> None:
    fake_apns.set_offline(APNS_TOKEN)
    alert(wire, "1", {"apns-expiration": "0"})
    assert fake_apns.set_online(APNS_TOKEN) == []
    alert(wire, "2", {"apns-expiration": "0"})
    assert numbered(fake_apns.phone(APNS_TOKEN).received) == ["2"]


def test_a_notification_that_expired_while_offline_is_dropped(
    fake_apns: FakeAPNs, wire: APNsWire, clock: FakeClock
) -> None:
    fake_apns.set_offline(APNS_TOKEN)
    alert(wire, "1", {"apns-expiration": str(int(clock() + 3600))})
    clock.advance(3601)
    assert fake_apns.set_online(APNS_TOKEN) == []


@pytest.mark.parametrize(
    ("lifetime_s", "away_s", "arrives"),
    [
        (90 * DAY_S, 29 * DAY_S, True),
        (90 * DAY_S, 30 * DAY_S + 1, False),  # Apple stores for 30 days or less
        (None, 29 * DAY_S, True),
        (None, 30 * DAY_S + 1, False),
    ],
)
def test_apns_keeps_a_notification_at_most_30_days(
    fake_apns: FakeAPNs,
    wire: APNsWire,
    clock: FakeClock,
    lifetime_s: int | None,
    away_s: int,
    arrives: bool,
) -> None:
    fake_apns.set_offline(APNS_TOKEN)
    if lifetime_s is None:
        alert(wire, "1")
    else:
        alert(wire, "1", {"apns-expiration": str(int(clock() + lifetime_s))})
    clock.advance(away_s)
    assert numbered(fake_apns.set_online(APNS_TOKEN)) == (["1"] if arrives else [])


def test_a_phone_nobody_pushed_to_is_online_and_empty(fake_apns: FakeAPNs) -> None:
    phone = fake_apns.phone(APNS_TOKEN)
    assert (phone.online, phone.received, phone.shown, phone.waiting) == (True, (), (), 0)
