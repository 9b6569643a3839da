"""FakeAPNs serves APNs' sandbox and production hosts: a token is good on the
host its app was built for (BadDeviceToken on the other), for its own app
(DeviceTokenNotForTopic under another's topic), and until it is unregistered
(410 with the time in milliseconds), unless it registers again."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from delivery_support import APNS_TOKEN, APNsWire, FakeClock, apns_reason, make_push

from willowe_tasks.providers.apns.client import APNsClient
from willowe_tasks.providers.errors import DeliveryError
from willowe_tasks.testing import FakeAPNs
from willowe_tasks.testing.fake_apns import Environment

OTHER_TOKEN = "b2" * 32


@pytest.fixture
def wire(fake_apns: FakeAPNs, clock: FakeClock) -> Iterator[APNsWire]:
    client = APNsWire(fake_apns, clock)
    yield client
    client.close()


def test_the_fake_listens_on_a_sandbox_and_a_production_host(fake_apns: FakeAPNs) -> None:
    assert fake_apns.url == fake_apns.sandbox_url
    assert fake_apns.production_url != fake_apns.sandbox_url
    assert fake_apns.production_url.startswith("https://127.0.0.1:")


def test_unregistered_tokens_are_accepted_on_both_hosts(
    fake_apns: FakeAPNs, wire: APNsWire
) -> None:
    for url in (fake_apns.sandbox_url, fake_apns.production_url):
        assert wire.push(url=url).status_code == 200


@pytest.mark.parametrize(("home", "away"), [("sandbox", "production"), ("production", "sandbox")])
def test_a_token_is_a_bad_device_token_on_the_other_host(
    fake_apns: FakeAPNs, wire: APNsWire, home: Environment, away: Environment
) -> None:
    fake_apns.register_token(APNS_TOKEN, environment=home)
    assert wire.push(url=fake_apns.url_for(home)).status_code == 200
    assert apns_reason(wire.push(url=fake_apns.url_for(away))) == (400, "BadDeviceToken")


def test_a_worker_pointed_at_the_wrong_environment_is_refused(
    fake_apns: FakeAPNs, make_apns_client: Callable[..., APNsClient]
) -> None:
    # Given a phone running a development build, and a worker set up for production
    fake_apns.register_token(APNS_TOKEN, environment="sandbox")
    client = make_apns_client(endpoint=fake_apns.production_url)
    # When the worker pushes, APNs answers BadDeviceToken
    with pytest.raises(DeliveryError) as caught:
        client.send(make_push())
    assert caught.value.reason == "BadDeviceToken"
    [request] = fake_apns.wait_for(1)
    assert (request.status, request.reason) == (400, "BadDeviceToken")


def test_a_closed_token_set_refuses_tokens_nobody_registered(clock: FakeClock) -> None:
    with FakeAPNs(clock=clock, only_registered_tokens=True) as fake:
        fake.register_token(APNS_TOKEN)
        wire = APNsWire(fake, clock)
        try:
            assert wire.push().status_code == 200
            assert apns_reason(wire.push(token=OTHER_TOKEN)) == (400, "BadDeviceToken")
        finally:
            wire.close()


def test_a_token_of_another_app_is_not_for_this_topic(
    fake_apns: FakeAPNs, wire: APNsWire
) -> None:
    fake_apns.register_token(APNS_TOKEN, bundle_id="com.willowe.lite")
    assert apns_reason(wire.push()) == (400, "DeviceTokenNotForTopic")


def test_a_token_serves_its_apps_voip_topic_too(fake_apns: FakeAPNs, wire: APNsWire) -> None:
    fake_apns.register_token(APNS_TOKEN)
    response = wire.push(headers={"apns-topic": f"{fake_apns.bundle_id}.voip",
                                  "apns-push-type": "voip"})
    assert response.status_code == 200


def test_unregistered_carries_the_time_in_milliseconds_since_the_epoch(
    fake_apns: FakeAPNs, wire: APNsWire, clock: FakeClock
) -> None:
    fake_apns.unregister(APNS_TOKEN)
    response = wire.push()
    assert apns_reason(response) == (410, "Unregistered")
    assert response.json()["timestamp"] == int(clock() * 1000)
    fake_apns.unregister(OTHER_TOKEN, at=1_700_000_000.25)
    assert wire.push(token=OTHER_TOKEN).json()["timestamp"] == 1_700_000_000_250


def test_a_token_registered_again_after_it_was_unregistered_is_live(
    fake_apns: FakeAPNs, wire: APNsWire
) -> None:
    fake_apns.unregister(APNS_TOKEN.upper())
    assert wire.push().status_code == 410
    fake_apns.register_token(APNS_TOKEN)
    assert wire.push().status_code == 200


def test_an_unknown_environment_is_refused_by_name(fake_apns: FakeAPNs) -> None:
    with pytest.raises(ValueError, match="environment"):
        fake_apns.register_token(APNS_TOKEN, environment="staging")  # type: ignore[arg-type]
