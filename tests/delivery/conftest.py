"""Fixtures for the push clients and their local fakes.

Every fake listens on 127.0.0.1 only; clients are closed before their fake so
the fake's stop() never waits on an open connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from delivery_support import FakeClock

from willowe_tasks.providers.apns.auth import TokenAuth
from willowe_tasks.providers.apns.client import APNsClient
from willowe_tasks.providers.fcm.client import FCMClient
from willowe_tasks.testing import FakeAPNs, FakeFCM
from willowe_tasks.testing.fake_fcm import new_service_account_key_pem


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake_apns(clock: FakeClock) -> Iterator[FakeAPNs]:
    with FakeAPNs(clock=clock) as fake:
        yield fake


@pytest.fixture
def token_auth(fake_apns: FakeAPNs, clock: FakeClock) -> TokenAuth:
    return TokenAuth(
        key_path=fake_apns.signing_key_path,
        key_id=fake_apns.key_id,
        team_id=fake_apns.team_id,
        clock=clock,
    )


@pytest.fixture
def make_apns_client(
    fake_apns: FakeAPNs, token_auth: TokenAuth
) -> Iterator[Callable[..., APNsClient]]:
    clients: list[APNsClient] = []

    def make(**overrides: object) -> APNsClient:
        options: dict[str, object] = {
            "endpoint": fake_apns.url,
            "default_topic": fake_apns.bundle_id,
            "auth": token_auth,
            "ca_file": fake_apns.ca_file,
            "timeout_s": 5.0,
        }
        options.update(overrides)
        client = APNsClient(**options)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def apns_client(make_apns_client: Callable[..., APNsClient]) -> APNsClient:
    return make_apns_client()


@pytest.fixture(scope="session")
def service_account_key_pem() -> str:
    """One RSA key for every FakeFCM: making one costs ~0.1 s."""
    return new_service_account_key_pem()


@pytest.fixture
def fake_fcm(service_account_key_pem: str) -> Iterator[FakeFCM]:
    with FakeFCM(service_account_key_pem=service_account_key_pem) as fake:
        yield fake


@pytest.fixture
def make_fcm_client(fake_fcm: FakeFCM) -> Iterator[Callable[..., FCMClient]]:
    clients: list[FCMClient] = []

    def make(**overrides: object) -> FCMClient:
        options: dict[str, object] = {
            "project_id": fake_fcm.project_id,
            "service_account_info": fake_fcm.service_account_info(),
            "endpoint": fake_fcm.url,
            "ca_file": fake_fcm.ca_file,
            "timeout_s": 5.0,
        }
        options.update(overrides)
        client = FCMClient(**options)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def fcm_client(make_fcm_client: Callable[..., FCMClient]) -> FCMClient:
    return make_fcm_client()
