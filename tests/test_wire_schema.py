"""The wire format's JSON Schema: generated from the models, committed where the
Node client reads it, and saying what Python's send() actually writes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from willowe_tasks.app import App
from willowe_tasks.kinds import KINDS
from willowe_tasks.payloads import MatchPayload
from willowe_tasks.priorities import BANDS
from willowe_tasks.providers import ProviderSpec, PushSize, providers, register_provider
from willowe_tasks.providers.base import unregister_provider
from willowe_tasks.registry.base import APP_ID_MAX_CHARS, USER_ID_MAX_CHARS
from willowe_tasks.settings import load_settings
from willowe_tasks.tokens import token_key
from willowe_tasks.wire_schema import (
    actors_by_name,
    registration_actors_by_name,
    render,
    wire_schema,
)

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "clients" / "node" / "wire-schema.json"


@pytest.fixture(scope="module")
def app() -> Iterator[App]:
    application = App(load_settings(kafka_broker="127.0.0.1:9"))
    yield application
    application.close()


@pytest.fixture(scope="module")
def schema(app: App) -> dict[str, Any]:
    return wire_schema(app.actors)


def test_the_committed_schema_is_the_one_the_models_generate(app: App) -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render(wire_schema(app.actors)), (
        "clients/node/wire-schema.json is stale: run `make schema` "
        "(python -m willowe_tasks schema --out clients/node/wire-schema.json) and commit it")


def test_the_cli_prints_the_same_schema(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    subprocess.run([sys.executable, "-m", "willowe_tasks", "schema", "--out", str(out)],
                   check=True, capture_output=True, timeout=60, cwd=ROOT)
    assert out.read_text(encoding="utf-8") == COMMITTED.read_text(encoding="utf-8")
    printed = subprocess.run([sys.executable, "-m", "willowe_tasks", "schema"], check=True,
                             capture_output=True, timeout=60, cwd=ROOT, text=True)
    assert json.loads(printed.stdout) == json.loads(out.read_text(encoding="utf-8"))


def test_the_envelope_is_dramatiqs_message_in_its_order(app: App, schema: dict[str, Any]) -> None:
    message = app.actors.send_like.message("user456", {"name": "Мария", "age": 28})
    encoded = json.loads(message.encode())
    assert list(encoded) == schema["required"] == list(schema["properties"])
    assert encoded["kwargs"] == {} and encoded["options"] == {}


def test_every_actor_is_described_with_its_topic_and_priority(app: App,
                                                              schema: dict[str, Any]) -> None:
    described = schema["x-willowe"]["actors"]
    actors = actors_by_name(app.actors)
    registration = registration_actors_by_name(app.actors)
    assert set(described) == set(actors) | set(registration) \
        == set(schema["properties"]["actor_name"]["enum"])
    for name, actor in actors.items():
        assert described[name]["topic"] == actor.queue_name
        assert described[name]["arguments"] == list(actor.arguments.model_fields)
        assert f"send_notification_{described[name]['priority']}" == name \
            or not name.startswith("send_notification_")
    assert [(b["word"], b["topic"]) for b in schema["x-willowe"]["priorities"]] \
        == [(b.word, b.topic.name) for b in BANDS]


def test_a_kinds_wording_templates_fill_in_to_what_the_kind_writes(schema: dict[str, Any]
                                                                  ) -> None:
    payload = MatchPayload.model_validate({"name": "Анна", "age": 25})
    for kind in KINDS.values():
        push = schema["x-willowe"]["actors"][f"send_{kind.name}"]["push"]
        fill = {"name": payload.name, "age": str(payload.age)}
        assert push["title"].format(**fill) == kind.title(payload)
        assert push["body"].format(**fill) == kind.body(payload)
        assert push["ttl_s"] == kind.ttl_s


def test_rules_kept_in_validators_become_schema_keywords(schema: dict[str, Any]) -> None:
    data = schema["$defs"]["CustomNotification"]["properties"]["data"]["anyOf"][0]
    assert data["maxProperties"] == 16
    assert "kind" in data["propertyNames"]["not"]["anyOf"][0]["enum"]
    photo = schema["$defs"]["MatchPayload"]["properties"]["photo_url"]["anyOf"][0]
    assert photo["pattern"] == "^(http|https)://"
    track_event = schema["$defs"]["track_event"]["prefixItems"]
    assert track_event[1]["x-max-json-bytes"] == 8192
    assert track_event[1]["default"] == {}
    # user_id is an argument, not a field of a stripping model: it is not stripped.
    assert "x-strip-whitespace" not in schema["$defs"]["send_match"]["prefixItems"][0]
    assert schema["$defs"]["MatchPayload"]["properties"]["name"]["x-strip-whitespace"] is True


def test_registration_actors_are_described_with_their_key_and_the_registrys_limits(
    app: App, schema: dict[str, Any],
) -> None:
    described = schema["x-willowe"]["actors"]
    for name, actor in registration_actors_by_name(app.actors).items():
        assert described[name]["topic"] == actor.queue_name == BANDS[0].topic.name
        assert described[name]["priority"] == "high"
        # The key the schema describes is the one Python's send() writes.
        token = "AB" * 32
        args = ("user123", "ios", token, "com.willowe.app") if name == "register_device" \
            else (token,)
        key = actor.message(*args).options[described[name]["partition_key"]["option"]]
        assert key == token_key(token.lower())
        assert key.startswith(described[name]["partition_key"]["prefix"])
    assert described["register_device"]["arguments"] == ["user_id", "platform", "token", "app_id"]
    assert described["unregister_device"]["arguments"] == ["token"]
    rules = schema["x-willowe"]["registration"]
    assert (rules["user_id_max_chars"], rules["app_id_max_chars"]) \
        == (USER_ID_MAX_CHARS, APP_ID_MAX_CHARS)
    # In the order Python tries the providers when it keys an unregistration.
    assert [(p["platform"], p["provider"]) for p in rules["platforms"]] \
        == [(spec.platform, spec.name) for spec in providers()]
    register = schema["$defs"]["register_device"]
    assert register["prefixItems"][1]["enum"] == [spec.platform for spec in providers()]


def test_a_provider_whose_tokens_the_schema_cant_describe_stops_the_generator(app: App) -> None:
    # Given a third provider, whose token rules no producer has ported,
    register_provider(ProviderSpec(
        name="webpush", platform="web", build=lambda settings: None,
        canonical_token=lambda token: token,
        measure=lambda push: PushSize("webpush", 0, 4096)))
    try:
        # then generating the schema fails, naming it, rather than describe it wrong.
        with pytest.raises(ValueError, match="'webpush'"):
            wire_schema(app.actors)
    finally:
        unregister_provider("web")
