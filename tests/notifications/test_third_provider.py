"""Providers are plug-ins: a third one (here a Web Push stand-in) is one spec
and one client, registered without touching dispatch."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from notification_support import HIGH, Rig

from willowe_tasks.providers import ProviderSpec, Push, PushProvider, PushSize, register_provider
from willowe_tasks.providers.base import providers, unregister_provider
from willowe_tasks.settings import Settings


class RecordingWebPush:
    """The client: remembers what it was asked to deliver."""

    def __init__(self) -> None:
        self.sent: list[Push] = []
        self.lock = threading.Lock()

    def send(self, push: Push) -> None:
        with self.lock:
            self.sent.append(push)

    def close(self) -> None:
        pass


@pytest.fixture
def web_push() -> Iterator[RecordingWebPush]:
    client = RecordingWebPush()

    def build(settings: Settings) -> PushProvider | None:
        return client

    def canonical(token: str) -> str:
        if not token.startswith("https://"):
            raise ValueError("a Web Push subscription is its endpoint URL")
        return token

    register_provider(ProviderSpec(
        name="webpush", platform="web", build=build, canonical_token=canonical,
        measure=lambda push: PushSize("webpush", len(push.body or ""), 4096)))
    yield client
    unregister_provider("web")


def test_a_registered_third_provider_gets_its_platforms_devices(
    web_push: RecordingWebPush, app: Rig
) -> None:
    assert "web" in {spec.platform for spec in providers()}
    # Given a user with a browser subscription beside an iPhone
    app.services.registry.register("user-web", "web", "https://push.example/sub/1", "site")
    app.services.registry.register("user-web", "ios", "ab" * 32, app.apns.bundle_id)
    # When a match is sent
    app.actors.send_match.send("user-web", {"name": "Анна", "age": 25})
    app.join(HIGH)
    # Then each got it through its own provider
    [push] = web_push.sent
    assert push.token == "https://push.example/sub/1"
    assert push.body == "Анна, 25"
    assert len(app.apns.wait_for(1)) == 1
