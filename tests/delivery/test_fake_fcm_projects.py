"""FakeFCM serves several Firebase projects: a token belongs to the project that
issued it, and another project's sender gets 403 SENDER_ID_MISMATCH, as a worker
configured with the wrong project would."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from delivery_support import FCM_TOKEN, FCMWire, fcm_error, fcm_message, make_push

from willowe_tasks.providers.errors import DeliveryError
from willowe_tasks.providers.fcm.client import FCMClient
from willowe_tasks.testing import FakeFCM

OTHER_PROJECT = "willowe-staging"


@pytest.fixture
def fake(fake_fcm: FakeFCM) -> FakeFCM:
    fake_fcm.add_project(OTHER_PROJECT)
    return fake_fcm


@pytest.fixture
def wires(fake: FakeFCM) -> Iterator[tuple[FCMWire, FCMWire]]:
    ours, theirs = FCMWire(fake), FCMWire(fake, OTHER_PROJECT)
    yield ours, theirs
    ours.close()
    theirs.close()


def test_a_token_of_one_project_is_a_sender_id_mismatch_for_another(
    fake: FakeFCM, wires: tuple[FCMWire, FCMWire]
) -> None:
    ours, theirs = wires
    # Given a phone whose app got its token from our project
    fake.register_token(FCM_TOKEN)
    # When the other project sends to it, then Google refuses it
    response = theirs.send(fcm_message())
    assert fcm_error(response) == (403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", None)
    # And our project still reaches it
    assert ours.send(fcm_message()).status_code == 200
    assert [(r.status, r.reason) for r in fake.received] == [
        (403, "SENDER_ID_MISMATCH"), (200, None)]


def test_a_token_nobody_registered_is_accepted_by_every_project(
    wires: tuple[FCMWire, FCMWire],
) -> None:
    assert [wire.send(fcm_message()).status_code for wire in wires] == [200, 200]


def test_a_sender_cannot_send_for_a_project_it_is_not_authenticated_for(
    wires: tuple[FCMWire, FCMWire], fake: FakeFCM
) -> None:
    _, theirs = wires
    response = theirs.send(fcm_message(), project_id=fake.project_id)
    assert fcm_error(response)[:2] == (403, "PERMISSION_DENIED")
    assert fake.received[-1].reason == "PERMISSION_DENIED"


def test_a_worker_configured_with_the_wrong_project_is_refused(
    fake: FakeFCM, make_fcm_client: Callable[..., FCMClient]
) -> None:
    # Given a token from our project and a worker set up for the other one,
    # with that project's own (valid) service account
    fake.register_token(FCM_TOKEN)
    client = make_fcm_client(project_id=OTHER_PROJECT,
                             service_account_info=fake.service_account_info(OTHER_PROJECT))
    # When it pushes, Google refuses with SENDER_ID_MISMATCH
    with pytest.raises(DeliveryError) as caught:
        client.send(make_push(FCM_TOKEN))
    assert caught.value.reason == "SENDER_ID_MISMATCH"
    [request] = fake.wait_for(1)
    assert request.path == f"/v1/projects/{OTHER_PROJECT}/messages:send"
    assert (request.status, request.reason) == (403, "SENDER_ID_MISMATCH")


def test_registering_an_unregistered_token_makes_it_live(
    fake: FakeFCM, wires: tuple[FCMWire, FCMWire]
) -> None:
    ours, _ = wires
    fake.unregister(FCM_TOKEN)
    assert fcm_error(ours.send(fcm_message()))[2] == "UNREGISTERED"
    fake.register_token(FCM_TOKEN)
    assert ours.send(fcm_message()).status_code == 200


def test_service_accounts_differ_per_project(fake: FakeFCM) -> None:
    ours, theirs = fake.service_account_info(), fake.service_account_info(OTHER_PROJECT)
    assert theirs["project_id"] == OTHER_PROJECT
    assert ours["client_email"] != theirs["client_email"]
    assert ours["private_key_id"] != theirs["private_key_id"]


def test_projects_the_fake_does_not_serve_are_refused_by_name(fake: FakeFCM) -> None:
    with pytest.raises(ValueError, match="nowhere"):
        fake.service_account_info("nowhere")
    with pytest.raises(ValueError, match="nowhere"):
        fake.register_token(FCM_TOKEN, project_id="nowhere")
    with pytest.raises(ValueError, match=OTHER_PROJECT):
        fake.add_project(OTHER_PROJECT)
