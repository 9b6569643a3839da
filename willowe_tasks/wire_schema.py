"""The wire format as one JSON Schema, generated from the payload models, so
producers in other languages (``clients/node``) validate what ``send()`` does.

The schema describes the *value* of a Kafka record the workers process (a
Dramatiq message: see ``docs/wire-format.md``): the envelope, and each actor's
``args`` as an array whose items are the actor's arguments in order. It is
JSON Schema 2020-12 as pydantic writes it, with a few additions, each from the
same constants ``send()`` uses:

* standard keywords for rules pydantic keeps in validators: the custom
  notification's ``data`` keys (``propertyNames``, ``maxProperties``) and the
  URL schemes (``pattern`` on the normalised URL);
* annotations (``x-…``, ignored by standard validators) for what a schema
  can't say, which a producer must still do before validating:

  - ``x-strip-whitespace`` on a string: leading and trailing Unicode
    whitespace is removed first (on an object: from its keys);
  - ``x-aliases`` on an object: accepted spellings of its fields (the guide's
    camelCase), written under the field's own name;
  - ``x-max-json-bytes``: the most UTF-8 bytes of the value as Python's
    ``json.dumps(value, ensure_ascii=False)`` writes it;
  - ``x-lower-case`` on a string: it is lower-cased first (an iOS token);
  - ``x-willowe`` at the top: the priority bands and topics, each actor's
    topic, argument names and push wording, the record headers and the push
    providers' byte limits (which need the push built to be checked; the test
    vectors in ``tests/vectors/payloads.json`` pin that computation), and
    the device registry's rules for ``register_device`` and
    ``unregister_device`` in the order Python checks them (Python raises
    the first problem only), with the partition key their records carry.

The registration actors have no pydantic model: their argument schemas are
built from the registry's and the providers' own constants
(``willowe_tasks/registry/base.py``, ``willowe_tasks/providers``).

``python -m willowe_tasks schema --out clients/node/wire-schema.json``
regenerates the committed copy; a test fails while it is stale.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, HttpUrl

from broker.kafka import PARTITION_KEY_OPTION
from willowe_tasks.actors import Actors, ValidatingActor
from willowe_tasks.dispatch import DEFAULT_SOUND
from willowe_tasks.kinds import KINDS, NotificationKind
from willowe_tasks.payloads import (
    _DATA_KEY,
    MAX_ANALYTICS_PROPERTIES_BYTES,
    MAX_CUSTOM_DATA_KEYS,
    RESERVED_DATA_KEYS,
    RESERVED_DATA_PREFIXES,
    AnalyticsEvent,
    CustomNotification,
)
from willowe_tasks.priorities import BANDS, band_for_actor_priority
from willowe_tasks.providers import providers
from willowe_tasks.providers.apns import IOS_TOKEN_MAX_HEX_CHARS, IOS_TOKEN_MIN_HEX_CHARS
from willowe_tasks.providers.apns.payload import IMAGE_URL_KEY
from willowe_tasks.providers.apns.payload import MAX_PAYLOAD_BYTES as APNS_MAX_PAYLOAD_BYTES
from willowe_tasks.providers.fcm import ANDROID_TOKEN_MAX_CHARS
from willowe_tasks.providers.fcm.message import MAX_MESSAGE_BYTES as FCM_MAX_MESSAGE_BYTES
from willowe_tasks.providers.fcm.message import MAX_TTL_S as FCM_MAX_TTL_S
from willowe_tasks.providers.push import MAX_COLLAPSE_ID_BYTES
from willowe_tasks.registration import TOKEN_MAX_CHARS as UNREGISTER_TOKEN_MAX_CHARS
from willowe_tasks.registration import RegistrationActor
from willowe_tasks.registry.base import APP_ID_MAX_CHARS, USER_ID_MAX_CHARS
from willowe_tasks.tokens import TOKEN_KEY_PREFIX

__all__ = ["WIRE_FORMAT_VERSION", "actors_by_name", "registration_actors_by_name", "render",
           "wire_schema", "write"]

#: Bumped when a change to the format would make an older producer's records
#: wrong (new optional fields don't bump it: workers accept unknown fields).
WIRE_FORMAT_VERSION = 1

#: The record headers, and the envelope field each carries (UTF-8).
RECORD_HEADERS = {"dramatiq-message-id": "message_id", "dramatiq-actor": "actor_name"}

#: The envelope of every record: a Dramatiq message as ``Message.encode()`` writes it.
_ENVELOPE: dict[str, Any] = {
    "queue_name": {"description": "The topic the record is written to (the actor's band)."},
    "actor_name": {"description": "The actor that processes it."},
    "args": {"type": "array",
             "description": "The actor's arguments in order (see x-willowe.actors)."},
    "kwargs": {"type": "object", "maxProperties": 0,
               "description": "Always empty: arguments travel in args."},
    "options": {"type": "object",
                "description": "Dramatiq message options; producers write {} (see the docs)."},
    "message_id": {"type": "string", "minLength": 1,
                   "description": "A new UUID4 per notification: its id on every retry, in the"
                                  " delivery ledger, and (first 64 bytes) its collapse id."},
    "message_timestamp": {"type": "integer", "minimum": 0,
                          "description": "When it was sent, unix milliseconds: notification"
                                         " lifetimes count from it."},
}


def wire_schema(actors: Actors) -> dict[str, Any]:
    """The JSON Schema of the records ``actors`` send and process."""
    defs: dict[str, Any] = {}
    branches: list[dict[str, Any]] = []
    described: dict[str, Any] = {}
    for actor in actors_by_name(actors).values():
        defs[actor.actor_name] = _arguments_array(actor, defs)
        branches.append({
            "if": {"properties": {"actor_name": {"const": actor.actor_name}},
                   "required": ["actor_name"]},
            "then": {"properties": {"queue_name": {"const": actor.queue_name},
                                    "args": {"$ref": f"#/$defs/{actor.actor_name}"}}},
        })
        described[actor.actor_name] = _describe_actor(actor)
    for registration in registration_actors_by_name(actors).values():
        defs[registration.actor_name] = _registration_arguments(registration, defs)
        branches.append({
            "if": {"properties": {"actor_name": {"const": registration.actor_name}},
                   "required": ["actor_name"]},
            "then": {"properties": {
                "queue_name": {"const": registration.queue_name},
                "args": {"$ref": f"#/$defs/{registration.actor_name}"},
                "options": {"type": "object",
                            "properties": {PARTITION_KEY_OPTION: _PARTITION_KEY},
                            "required": [PARTITION_KEY_OPTION]}}},
        })
        described[registration.actor_name] = _describe_registration(registration)
    envelope = {name: dict(schema) for name, schema in _ENVELOPE.items()}
    envelope["queue_name"]["enum"] = [b.topic.name for b in BANDS]
    envelope["actor_name"]["enum"] = list(described)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "WilloweTasksRecord",
        "description": "The value of a Kafka record the Willowe workers process. Generated"
                       " from the payload models by `python -m willowe_tasks schema`; do not"
                       " edit. See docs/wire-format.md.",
        "type": "object",
        "properties": envelope,
        "required": list(envelope),
        "additionalProperties": False,
        "allOf": branches,
        "$defs": dict(sorted(defs.items())),
        "x-willowe": {
            "version": WIRE_FORMAT_VERSION,
            "priorities": [
                {"word": b.word, "topic": b.topic.name, "dramatiq_priority": b.actor_priority,
                 "retention_ms": b.topic.retention_ms, "fcm_priority": b.fcm_priority}
                for b in BANDS],
            "actors": described,
            "headers": RECORD_HEADERS,
            "push": {
                "apns_max_payload_bytes": APNS_MAX_PAYLOAD_BYTES,
                "fcm_max_message_bytes": FCM_MAX_MESSAGE_BYTES,
                "fcm_max_ttl_s": FCM_MAX_TTL_S,
                "collapse_id_max_bytes": MAX_COLLAPSE_ID_BYTES,
                "sound": DEFAULT_SOUND,
                "apns_image_url_key": IMAGE_URL_KEY,
            },
            "registration": _registration_rules(),
        },
    }


def render(schema: dict[str, Any]) -> str:
    """The schema as the committed file holds it."""
    return json.dumps(schema, ensure_ascii=False, indent=2) + "\n"


def write(actors: Actors, path: Path) -> None:
    path.write_text(render(wire_schema(actors)), encoding="utf-8")


def actors_by_name(actors: Actors) -> dict[str, ValidatingActor]:
    """Every actor a producer can send to, by its name on the wire."""
    kinds = [actors.send_match, actors.send_fast_match, actors.send_like, actors.send_one_night]
    custom = [actors.send_notification.actor(b.word) for b in BANDS]
    return {actor.actor_name: actor for actor in [*kinds, *custom, actors.track_event]}


def registration_actors_by_name(actors: Actors) -> dict[str, RegistrationActor]:
    """The actors a web server registers and forgets phones with, by name."""
    return {actor.actor_name: actor for actor in [actors.register_device, actors.unregister_device]}


def _arguments_array(actor: ValidatingActor, defs: dict[str, Any]) -> dict[str, Any]:
    """An actor's arguments model as the record's ``args`` array; nested models
    go to ``defs`` (one definition each, shared by the actors using it)."""
    model = actor.arguments
    schema = model.model_json_schema(by_alias=False, ref_template="#/$defs/{model}")
    for name, nested in _nested_models(model).items():
        definition = _annotated(nested, schema.get("$defs", {})[name])
        if defs.setdefault(name, definition) != definition:
            raise ValueError(f"two different models are both named {name!r}")
    own = _annotated(model, {key: value for key, value in schema.items() if key != "$defs"})
    names = list(model.model_fields)
    return {
        "type": "array",
        "description": f"{actor.actor_name}({', '.join(names)})",
        "prefixItems": [own["properties"][name] for name in names],
        "minItems": len(own.get("required", [])),
        "maxItems": len(names),
    }


def _annotated(model: type[BaseModel], schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` of ``model`` with the additions the module docstring lists."""
    schema = json.loads(json.dumps(schema))  # a copy to change
    aliases = {f.alias: name for name, f in model.model_fields.items() if f.alias}
    if aliases:
        schema["x-aliases"] = aliases
    for name, field_schema in schema.get("properties", {}).items():
        factory = model.model_fields[name].default_factory
        if factory is not None:
            # What send() writes when the argument is left out (pydantic leaves it unsaid).
            field_schema["default"] = factory()  # type: ignore[call-arg]
        if model.model_config.get("str_strip_whitespace"):
            _mark_stripped(field_schema)
        _constrain_urls(field_schema)
        if model is CustomNotification and name == "data":
            _constrain_data_keys(field_schema)
        if model is AnalyticsEvent and name == "properties":
            field_schema["x-max-json-bytes"] = MAX_ANALYTICS_PROPERTIES_BYTES
    return schema


def _mark_stripped(schema: dict[str, Any]) -> None:
    # pydantic strips every str of a model with str_strip_whitespace: its
    # string fields and the keys and string values of its dicts, but nothing
    # inside Any (additionalProperties: true) or another model ($ref).
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "string" and branch.get("format") != "uri":
            branch["x-strip-whitespace"] = True
        elif branch.get("type") == "object" and "additionalProperties" in branch:
            branch["x-strip-whitespace"] = True
            values = branch["additionalProperties"]
            if isinstance(values, dict):
                _mark_stripped(values)


def _constrain_urls(schema: dict[str, Any]) -> None:
    schemes = HttpUrl._constraints.allowed_schemes or []
    for branch in schema.get("anyOf", [schema]):
        if branch.get("format") == "uri":
            # The producer writes the URL normalised (WHATWG), so its scheme is lower case.
            branch["pattern"] = f"^({'|'.join(schemes)})://"


def _constrain_data_keys(schema: dict[str, Any]) -> None:
    reserved_prefixes = "|".join(RESERVED_DATA_PREFIXES)
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "object":
            branch["maxProperties"] = MAX_CUSTOM_DATA_KEYS
            branch["propertyNames"] = {
                "pattern": _DATA_KEY,
                "not": {"anyOf": [{"enum": sorted(RESERVED_DATA_KEYS)},
                                  {"pattern": f"^({reserved_prefixes})"}]},
            }


def _nested_models(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model ``model``'s fields hold (through ``X | None`` too), by name."""
    found: dict[str, type[BaseModel]] = {}
    for field in model.model_fields.values():
        for candidate in _models_in(field.annotation):
            found[candidate.__name__] = candidate
            found.update(_nested_models(candidate))
    return found


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _describe_actor(actor: ValidatingActor) -> dict[str, Any]:
    priority = band_for_actor_priority(actor.priority)
    described: dict[str, Any] = {"priority": priority.word, "topic": actor.queue_name,
                                 "arguments": list(actor.arguments.model_fields)}
    kind = next((k for k in KINDS.values() if actor.actor_name == f"send_{k.name}"), None)
    if kind is not None:
        described["push"] = _kind_push(kind)
    elif actor.preview is not None:
        # A custom notification: its type is the kind; the caller writes title,
        # body, data and maybe ttl_s (default: the topic's retention).
        described["push"] = {"custom": True, "ttl_s": priority.topic.retention_ms // 1000}
    return described


def _kind_push(kind: NotificationKind) -> dict[str, Any]:
    """How a kind's push is worded, as templates: ``{field}`` stands for the
    payload field's value as text."""
    probe = _FieldProbe()
    return {"kind": kind.name, "title": kind.title(probe), "body": kind.body(probe),
            "ttl_s": kind.ttl_s, "data_fields": list(kind.data_fields),
            "image_field": kind.image_field}


class _FieldProbe:
    """Stands in for a payload: every field reads as ``{field}``, so a kind's
    wording functions return their templates."""

    def __getattr__(self, name: str) -> str:
        return "{" + name + "}"


# -- registering devices ---------------------------------------------------

#: What ``str.isprintable()`` refuses, as a regex class body: Unicode's
#: "Other" and "Separator" categories (the ASCII space aside, which Python
#: calls printable). Each engine reads them in the Unicode version it knows.
_NOT_PRINTABLE_CLASS = r"\p{C}\p{Z}"

#: The partition key of a registration record, in its options and as the
#: Kafka record key: the token's :func:`~willowe_tasks.tokens.token_key`.
_PARTITION_KEY = {"type": "string", "pattern": f"^{TOKEN_KEY_PREFIX}[0-9a-f]{{64}}$"}

#: How each provider's ``canonical_token`` spells and limits its tokens, and
#: how its messages name the platform. ``rule`` names the check a producer
#: ports: ``hex`` (willowe_tasks/providers/apns) or ``printable`` (…/fcm).
_TOKEN_RULES: dict[str, dict[str, Any]] = {
    "apns": {"rule": "hex", "label": "iOS", "min_hex_chars": IOS_TOKEN_MIN_HEX_CHARS,
             "max_hex_chars": IOS_TOKEN_MAX_HEX_CHARS},
    "fcm": {"rule": "printable", "label": "Android", "max_chars": ANDROID_TOKEN_MAX_CHARS},
}


@functools.cache
def _python_whitespace_class() -> str:
    """What Python's ``str.isspace()`` calls whitespace (so what ``strip()``
    removes), as a regex class: neither Unicode's White_Space property (it
    adds U+001C-U+001F) nor JavaScript's ``\\s`` (which adds U+FEFF)."""
    ranges: list[list[int]] = []
    for code in range(sys.maxunicode + 1):
        if chr(code).isspace():
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    parts = [f"\\u{low:04x}" if low == high else f"\\u{low:04x}-\\u{high:04x}"
             for low, high in ranges]
    return f"[{''.join(parts)}]"


def _registration_rules() -> dict[str, Any]:
    """What ``validate_device`` and the registration actors check, for
    producers that port the checks in Python's order and wording."""
    return {
        "whitespace": _python_whitespace_class(),
        "not_printable": f"[{_NOT_PRINTABLE_CLASS}]",
        "user_id_max_chars": USER_ID_MAX_CHARS,
        "app_id_max_chars": APP_ID_MAX_CHARS,
        "unregister_token_max_chars": UNREGISTER_TOKEN_MAX_CHARS,
        # In registration order: an unregistered token is keyed by the first
        # provider's spelling that accepts it (registry.base.stored_spellings).
        "platforms": [{"platform": spec.platform, "provider": spec.name,
                       "token": _token_rule(spec.name)} for spec in providers()],
    }


def _token_rule(provider: str) -> dict[str, Any]:
    if provider not in _TOKEN_RULES:
        raise ValueError(f"the wire schema can't describe provider {provider!r}'s tokens: "
                         "add its rule to willowe_tasks.wire_schema._TOKEN_RULES")
    return _TOKEN_RULES[provider]


def _token_schema(rule: dict[str, Any]) -> dict[str, Any]:
    """A token as the registry stores it, so as a record carries it."""
    if rule["rule"] == "hex":
        return {"type": "string", "minLength": rule["min_hex_chars"],
                "maxLength": rule["max_hex_chars"], "pattern": "^(?:[0-9a-f]{2})+$",
                "x-lower-case": True}
    return {"type": "string", "minLength": 1, "maxLength": rule["max_chars"],
            "pattern": f"^[^{_NOT_PRINTABLE_CLASS}]+$"}


def _registration_arguments(actor: RegistrationActor, defs: dict[str, Any]) -> dict[str, Any]:
    names = list(inspect.signature(actor.fn).parameters)
    if actor.actor_name == "unregister_device":
        # Any token some provider could have stored: not blank, not too long.
        token = {"type": "string", "title": "Token", "maxLength": UNREGISTER_TOKEN_MAX_CHARS,
                 "pattern": f"[^{_python_whitespace_class()[1:-1]}]"}
        return {"type": "array", "description": f"{actor.actor_name}({', '.join(names)})",
                "prefixItems": [token], "minItems": 1, "maxItems": 1}
    # Printable and without whitespace (Python's notion of both).
    visible = f"[^{_python_whitespace_class()[1:-1]}{_NOT_PRINTABLE_CLASS}]"
    items = {
        "user_id": {"type": "string", "title": "User Id", "minLength": 1,
                    "maxLength": USER_ID_MAX_CHARS, "pattern": f"^{visible}+$"},
        "platform": {"type": "string", "title": "Platform",
                     "enum": [spec.platform for spec in providers()]},
        "token": {"type": "string", "title": "Token",
                  "description": "Rules by platform: see allOf."},
        "app_id": {"type": "string", "title": "App Id", "minLength": 1,
                   "maxLength": APP_ID_MAX_CHARS, "pattern": f"^{visible}+$"},
    }
    by_platform = []
    for spec in providers():
        name = f"{spec.platform.capitalize()}Token"
        defs[name] = _token_schema(_token_rule(spec.name))
        by_platform.append({
            "if": {"type": "array", "prefixItems": [True, {"const": spec.platform}]},
            "then": {"type": "array", "prefixItems": [True, True, {"$ref": f"#/$defs/{name}"}]},
        })
    return {"type": "array", "description": f"{actor.actor_name}({', '.join(names)})",
            "prefixItems": [items[name] for name in names], "minItems": len(names),
            "maxItems": len(names), "allOf": by_platform}


def _describe_registration(actor: RegistrationActor) -> dict[str, Any]:
    priority = band_for_actor_priority(actor.priority)
    return {"priority": priority.word, "topic": actor.queue_name,
            "arguments": list(inspect.signature(actor.fn).parameters),
            # The record's key, and its options' partition_key: ``prefix`` and
            # the SHA-256 hex digest of the token's UTF-8 bytes, spelled as stored.
            "partition_key": {"option": PARTITION_KEY_OPTION, "argument": "token",
                              "prefix": TOKEN_KEY_PREFIX, "digest": "sha256"}}
