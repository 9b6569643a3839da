"""Payload encryption (broker/encryption.py, broker/payload_codec.py): what a
body becomes, what opens it again, and what doesn't. Kafka's part (records,
dead letters, log segments) is in tests/security/test_secured_app.py."""

from __future__ import annotations

import base64

import pytest

from broker.dead_letters import dead_letter_body, dead_letter_headers
from broker.encryption import AesGcmCipher, KeyRing
from broker.payload_codec import (
    ENCODING_HEADER,
    KEY_ID_HEADER,
    UNDECODABLE,
    UNDECRYPTABLE,
    PayloadCodec,
    PayloadDecodeError,
)

TOPIC = "high-priority-notifications"
BODY = '{"args":["user123",{"name":"Анна"}]}'.encode()


def ring(*key_ids: str) -> KeyRing:
    return KeyRing(tuple(KeyRing.new_key(key_id) for key_id in key_ids))


def codec_of(key_ring: KeyRing) -> PayloadCodec:
    return PayloadCodec(AesGcmCipher(key_ring))


def test_a_body_is_sealed_under_the_first_key_and_opened_on_its_topic() -> None:
    codec = codec_of(ring("k2", "k1"))
    value, headers = codec.encode(TOPIC, BODY)
    assert dict(headers) == {ENCODING_HEADER: b"aes-256-gcm", KEY_ID_HEADER: b"k2"}
    assert "Анна".encode() not in value and BODY not in value
    assert len(value) == len(BODY) + 12 + 16  # nonce and tag: one AES-GCM call, no padding
    assert codec.decode(TOPIC, value, headers) == BODY
    # A fresh nonce each time: the same body never looks the same twice.
    assert codec.encode(TOPIC, BODY)[0] != value


def test_an_older_key_still_opens_what_it_sealed() -> None:
    old = ring("k1")
    rotated = old.with_keys([KeyRing.new_key("k2"), *old.keys])
    value, headers = codec_of(old).encode(TOPIC, BODY)
    assert codec_of(rotated).decode(TOPIC, value, headers) == BODY


@pytest.mark.parametrize(("spoil", "error"), [
    (lambda v, h, k: (v[:20] + bytes([v[20] ^ 1]) + v[21:], h, k),
     "authentication tag mismatch under key 'k1'"),
    (lambda v, h, k: (v, h, ring("k1")), "authentication tag mismatch under key 'k1'"),
    (lambda v, h, k: (v, [(ENCODING_HEADER, b"aes-256-gcm"), (KEY_ID_HEADER, b"k7")], k),
     "unknown key id 'k7' (this ring has k1)"),
    (lambda v, h, k: (v[:10], h, k), "ciphertext too short"),
], ids=["tampered", "another ring's k1", "unknown key", "truncated"])
def test_what_cannot_be_opened_is_undecryptable_and_says_why(spoil: object, error: str) -> None:
    keys = ring("k1")
    value, headers = codec_of(keys).encode(TOPIC, BODY)
    value, headers, keys = spoil(value, headers, keys)  # type: ignore[operator]
    with pytest.raises(PayloadDecodeError) as raised:
        codec_of(keys).decode(TOPIC, value, headers)
    assert raised.value.reason == UNDECRYPTABLE
    assert str(raised.value).startswith(error)


def test_a_body_sealed_for_one_topic_does_not_open_on_another() -> None:
    codec = codec_of(ring("k1"))
    value, headers = codec.encode(TOPIC, BODY)
    with pytest.raises(PayloadDecodeError, match="sealed for another topic"):
        codec.decode("medium-priority-notifications", value, headers)


def test_without_keys_bodies_pass_as_they_are_and_sealed_records_are_undecryptable() -> None:
    plain = PayloadCodec()
    assert plain.encode(TOPIC, BODY) == (BODY, [])
    assert plain.decode(TOPIC, BODY, [("dramatiq-actor", b"send_match")]) == BODY
    value, headers = codec_of(ring("k1")).encode(TOPIC, BODY)
    with pytest.raises(PayloadDecodeError, match="encrypted and this consumer has no keys") \
            as raised:
        plain.decode(TOPIC, value, headers)
    assert raised.value.reason == UNDECRYPTABLE


def test_an_unknown_encoding_is_undecodable() -> None:
    with pytest.raises(PayloadDecodeError, match="unknown payload encoding 'brotli'") as raised:
        codec_of(ring("k1")).decode(TOPIC, BODY, [(ENCODING_HEADER, b"brotli")])
    assert raised.value.reason == UNDECODABLE


def test_records_sent_before_encryption_was_turned_on_are_still_read() -> None:
    assert codec_of(ring("k1")).decode(TOPIC, BODY, []) == BODY


def test_a_dead_letter_opens_as_on_its_source_topic() -> None:
    codec = codec_of(ring("k1"))
    value, headers = codec.encode(TOPIC, BODY)
    dead_headers = dead_letter_headers(headers, reason="failed", error_type="E", error_message="",
                                       source_topic=TOPIC, source_partition=0, source_offset=7)
    assert dead_letter_body(codec, value, dead_headers) == BODY


def test_key_rings_parse_lines_and_commas_and_say_what_is_wrong_without_the_key() -> None:
    keys = ring("k2", "k1")
    assert KeyRing.parse(keys.render()).keys == keys.keys
    assert KeyRing.parse("# rotated 2026-11\n" + keys.render().replace("\n", ",")).ids == \
        ["k2", "k1"]
    short = base64.b64encode(b"x" * 16).decode()
    for text, error in [
        ("", "a key ring needs at least one key"),
        ("k1", "key 1: expected id:base64"),
        ("k1:not base64!", "key 1 ('k1'): not valid base64"),
        (f"k1:{short}", "key 'k1': must be 32 bytes (AES-256), got 16"),
        (keys.render() + keys.render(), "key 3: the id 'k2' is used twice"),
        ("bad id:" + base64.b64encode(b"y" * 32).decode(), "key 1: its id must be"),
    ]:
        with pytest.raises(ValueError, match="^" + error.replace("(", r"\(").replace(")", r"\)")):
            KeyRing.parse(text)
    # Neither reprs nor errors show key material.
    secret = keys.render()
    assert all(line.split(":")[1] not in repr(keys) + repr(AesGcmCipher(keys))
               for line in secret.splitlines())
