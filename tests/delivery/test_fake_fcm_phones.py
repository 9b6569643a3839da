"""What an Android phone behind FakeFCM receives and shows: FCM's storage rules
for offline devices (four collapse keys, 100 non-collapsible messages, ttl) and
the on-screen effect of android.notification.tag."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from delivery_support import FCM_TOKEN, FakeClock, FCMWire, fcm_message, numbered

from willowe_tasks.testing import FakeFCM


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(service_account_key_pem: str, clock: FakeClock) -> Iterator[FakeFCM]:
    with FakeFCM(service_account_key_pem=service_account_key_pem, clock=clock) as fcm:
        yield fcm


@pytest.fixture
def wire(fake: FakeFCM) -> Iterator[FCMWire]:
    client = FCMWire(fake)
    yield client
    client.close()


def notify(wire: FCMWire, n: str, *, tag: str | None = None, collapse_key: str | None = None,
           ttl: str | None = None) -> None:
    """A notification message numbered ``n``."""
    android: dict[str, object] = {}
    if tag is not None:
        android["notification"] = {"tag": tag}
    if collapse_key is not None:
        android["collapse_key"] = collapse_key
    if ttl is not None:
        android["ttl"] = ttl
    body = fcm_message(notification={"title": f"n{n}"}, data={"n": n}, android=android)
    assert wire.send(body).status_code == 200


def ping(wire: FCMWire, n: str, *, collapse_key: str | None = None) -> None:
    """A data-only message numbered ``n``."""
    android = {"collapse_key": collapse_key} if collapse_key else {}
    assert wire.send(fcm_message(data={"n": n}, android=android)).status_code == 200


def test_an_online_phone_shows_every_notification_and_no_data_message(
    fake: FakeFCM, wire: FCMWire
) -> None:
    notify(wire, "1")
    ping(wire, "2")
    notify(wire, "3")
    phone = fake.phone(FCM_TOKEN)
    assert phone.online
    assert numbered(phone.received) == ["1", "2", "3"]
    assert numbered(phone.shown) == ["1", "3"]


def test_a_notification_with_the_same_tag_replaces_the_one_on_screen(
    fake: FakeFCM, wire: FCMWire
) -> None:
    notify(wire, "1", tag="match-7")
    notify(wire, "2", tag="like-3")
    notify(wire, "3", tag="match-7")
    assert numbered(fake.phone(FCM_TOKEN).shown) == ["2", "3"]
    assert len(fake.phone(FCM_TOKEN).received) == 3


def test_an_offline_phone_gets_the_latest_message_per_collapse_key(
    fake: FakeFCM, wire: FCMWire
) -> None:
    fake.set_offline(FCM_TOKEN)
    notify(wire, "1", collapse_key="a")
    notify(wire, "2", collapse_key="b")
    notify(wire, "3", collapse_key="a")
    assert fake.phone(FCM_TOKEN).received == ()
    assert fake.phone(FCM_TOKEN).waiting == 2
    assert numbered(fake.set_online(FCM_TOKEN)) == ["2", "3"]
    assert numbered(fake.phone(FCM_TOKEN).shown) == ["2", "3"]


def test_fcm_keeps_four_collapse_keys_for_an_offline_phone(
    fake: FakeFCM, wire: FCMWire
) -> None:
    # One collapse key per notification: six keys while the phone is away
    fake.set_offline(FCM_TOKEN)
    for n in range(1, 7):
        notify(wire, str(n), collapse_key=f"notification-{n}", tag=f"notification-{n}")
    # Only four come through: the fake keeps the four most recently used keys
    assert numbered(fake.set_online(FCM_TOKEN)) == ["3", "4", "5", "6"]
    assert len(fake.phone(FCM_TOKEN).shown) == 4


def test_notification_messages_without_a_collapse_key_are_all_kept(
    fake: FakeFCM, wire: FCMWire
) -> None:
    # Only a collapse key makes a message collapsible (see fake_fcm.STORAGE)
    fake.set_offline(FCM_TOKEN)
    for n in ("1", "2", "3"):
        notify(wire, n)
    assert numbered(fake.set_online(FCM_TOKEN)) == ["1", "2", "3"]


def test_up_to_100_non_collapsible_messages_wait_for_an_offline_phone(
    fake: FakeFCM, wire: FCMWire
) -> None:
    fake.set_offline(FCM_TOKEN)
    for n in range(100):
        ping(wire, str(n))
    ping(wire, "collapsible", collapse_key="sync")
    arrived = fake.set_online(FCM_TOKEN)
    assert len(arrived) == 101
    assert fake.phone(FCM_TOKEN).deleted_notices == 0


def test_a_101st_non_collapsible_message_discards_all_stored_ones(
    fake: FakeFCM, wire: FCMWire
) -> None:
    fake.set_offline(FCM_TOKEN)
    for n in range(101):
        ping(wire, str(n))
    ping(wire, "after")
    notify(wire, "kept", collapse_key="match")
    # The phone gets what came after the overflow and the collapsible message,
    # and is told that messages were deleted
    assert numbered(fake.set_online(FCM_TOKEN)) == ["after", "kept"]
    assert fake.phone(FCM_TOKEN).deleted_notices == 1


def test_messages_whose_ttl_ran_out_while_offline_are_dropped(
    fake: FakeFCM, wire: FCMWire, clock: FakeClock
) -> None:
    fake.set_offline(FCM_TOKEN)
    notify(wire, "short", collapse_key="a", ttl="60s")
    notify(wire, "long", collapse_key="b", ttl="3600s")
    notify(wire, "default", collapse_key="c")
    clock.advance(61)
    assert numbered(fake.set_online(FCM_TOKEN)) == ["long", "default"]


def test_a_message_without_ttl_lives_four_weeks(
    fake: FakeFCM, wire: FCMWire, clock: FakeClock
) -> None:
    fake.set_offline(FCM_TOKEN)
    notify(wire, "1")
    clock.advance(28 * 24 * 3600 + 1)
    assert fake.set_online(FCM_TOKEN) == []


def test_a_ttl_of_zero_means_now_or_never(fake: FakeFCM, wire: FCMWire) -> None:
    fake.set_offline(FCM_TOKEN)
    notify(wire, "1", ttl="0s")
    assert fake.phone(FCM_TOKEN).waiting == 0
    assert fake.set_online(FCM_TOKEN) == []
    notify(wire, "2", ttl="0s")
    assert numbered(fake.phone(FCM_TOKEN).received) == ["2"]


def test_a_validate_only_message_never_reaches_the_phone(fake: FakeFCM, wire: FCMWire) -> None:
    body = {**fcm_message(notification={"title": "t"}), "validate_only": True}
    assert wire.send(body).status_code == 200
    assert fake.phone(FCM_TOKEN).received == ()


def test_refused_messages_never_reach_the_phone(fake: FakeFCM, wire: FCMWire) -> None:
    fake.fail(503, "UNAVAILABLE")
    assert wire.send(fcm_message(notification={"title": "t"})).status_code == 503
    assert fake.phone(FCM_TOKEN).received == ()


def test_clear_brings_every_phone_back_empty(fake: FakeFCM, wire: FCMWire) -> None:
    notify(wire, "1")
    fake.set_offline(FCM_TOKEN)
    notify(wire, "2")
    fake.clear()
    phone = fake.phone(FCM_TOKEN)
    assert (phone.online, phone.received, phone.waiting) == (True, (), 0)
