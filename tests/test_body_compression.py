"""Body compression (broker/body_compression.py, the zstd step of
broker/payload_codec.py, the shipped dictionary of
willowe_tasks/payload_dictionary.py): what a body becomes, what opens it
again, and what is refused. Kafka's part is in
tests/kafka_broker/test_broker_compression.py."""

from __future__ import annotations

import threading

import pytest
import zstandard

from broker.body_compression import MAX_BODY_BYTES, ZstdBodyCompressor
from broker.encryption import AesGcmCipher, KeyRing
from broker.payload_codec import (
    DICTIONARY_HEADER,
    ENCODING_HEADER,
    KEY_ID_HEADER,
    UNDECODABLE,
    PayloadCodec,
    PayloadDecodeError,
)
from willowe_tasks import payload_dictionary

TOPIC = "high-priority-notifications"

#: Guide-like bodies other than the ones the dictionary was trained on (seed 1).
SAMPLES = list(payload_dictionary.sample_bodies(300, seed=99))


def cipher() -> AesGcmCipher:
    return AesGcmCipher(KeyRing((KeyRing.new_key("k1"),)))


def test_the_shipped_dictionary_makes_guide_bodies_at_least_three_times_smaller() -> None:
    compressor = payload_dictionary.compressor()
    raw = sum(len(body) for body in SAMPLES)
    packed = sum(len(compressor.compress(body)[1]) for body in SAMPLES)
    plain = ZstdBodyCompressor()
    without_dictionary = sum(len(plain.compress(body)[1]) for body in SAMPLES)
    assert raw / packed >= 3
    # Why the dictionary: zstd alone saves far less on a few hundred bytes.
    assert raw / without_dictionary < 2


def test_compression_comes_before_encryption_and_both_are_undone() -> None:
    codec = PayloadCodec(cipher(), payload_dictionary.compressor())
    body = SAMPLES[0]
    value, headers = codec.encode(TOPIC, body)
    assert dict(headers) == {ENCODING_HEADER: b"zstd,aes-256-gcm",
                             DICTIONARY_HEADER: payload_dictionary.CURRENT_ID.encode(),
                             KEY_ID_HEADER: b"k1"}
    # Encrypting first would leave nothing to compress: the value would be
    # the body plus nonce and tag.
    assert len(value) < len(body) - 12 - 16
    assert codec.decode(TOPIC, value, headers) == body


def test_a_codec_that_compresses_nothing_still_opens_compressed_records() -> None:
    shipped = payload_dictionary.compressor()
    value, headers = PayloadCodec(compressor=shipped).encode(TOPIC, SAMPLES[1])
    reader = PayloadCodec(compressor=shipped, compress=False)
    assert reader.encode(TOPIC, SAMPLES[1]) == (SAMPLES[1], [])
    assert reader.decode(TOPIC, value, headers) == SAMPLES[1]
    # Plain zstd (no dictionary) opens without any configuration.
    value, headers = PayloadCodec(compressor=ZstdBodyCompressor()).encode(TOPIC, SAMPLES[2])
    assert DICTIONARY_HEADER not in dict(headers)
    assert PayloadCodec().decode(TOPIC, value, headers) == SAMPLES[2]


def test_records_without_the_step_are_read_as_they_are() -> None:
    codec = PayloadCodec(cipher(), payload_dictionary.compressor())
    assert codec.decode(TOPIC, SAMPLES[3], []) == SAMPLES[3]
    sealed, headers = PayloadCodec(codec.cipher).encode(TOPIC, SAMPLES[3])
    assert dict(headers)[ENCODING_HEADER] == b"aes-256-gcm"
    assert codec.decode(TOPIC, sealed, headers) == SAMPLES[3]


def test_a_retired_dictionary_still_opens_what_it_compressed() -> None:
    data = payload_dictionary.load()[0][1]
    old = ZstdBodyCompressor([("guide-0", data)])
    value, headers = PayloadCodec(compressor=old).encode(TOPIC, SAMPLES[4])
    both = ZstdBodyCompressor([("guide-1", data), ("guide-0", data)])
    assert PayloadCodec(compressor=both).decode(TOPIC, value, headers) == SAMPLES[4]
    assert PayloadCodec(compressor=both).encode(TOPIC, SAMPLES[4])[1][1] == (
        DICTIONARY_HEADER, b"guide-1")


@pytest.mark.parametrize(("spoil", "error"), [
    (lambda v, h: (v[:-3], h), "can't decompress the body: corrupt zstd frame"),
    (lambda v, h: (b"not zstd at all", h), "can't decompress the body: not a zstd frame"),
    (lambda v, h: (v, [(ENCODING_HEADER, b"zstd"), (DICTIONARY_HEADER, b"guide-7")]),
     "can't decompress the body: unknown compression dictionary 'guide-7' "
     "(this consumer has guide-1)"),
    (lambda v, h: (zstandard.ZstdCompressor().compress(b"0" * (MAX_BODY_BYTES + 1)),
                   [(ENCODING_HEADER, b"zstd")]),
     f"can't decompress the body: the frame claims {MAX_BODY_BYTES + 1} bytes, over the limit"),
], ids=["truncated", "not a frame", "unknown dictionary", "bomb"])
def test_what_cannot_be_decompressed_is_undecodable_and_says_why(spoil: object, error: str
                                                                 ) -> None:
    codec = PayloadCodec(compressor=payload_dictionary.compressor())
    value, headers = codec.encode(TOPIC, SAMPLES[5])
    value, headers = spoil(value, headers)  # type: ignore[operator]
    with pytest.raises(PayloadDecodeError) as raised:
        codec.decode(TOPIC, value, headers)
    assert raised.value.reason == UNDECODABLE
    assert str(raised.value).startswith(error)
    # Never the body, whole or in part.
    assert b"user" not in str(raised.value).encode()


def test_a_frame_without_its_size_is_capped_too() -> None:
    stream = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    frame = stream.compress(b"0" * (MAX_BODY_BYTES + 1)) + stream.flush()
    with pytest.raises(PayloadDecodeError, match="corrupt zstd frame"):
        PayloadCodec().decode(TOPIC, frame, [(ENCODING_HEADER, b"zstd")])


def test_threads_share_one_compressor_safely() -> None:
    compressor = payload_dictionary.compressor()
    failures: list[int] = []

    def round_trips(offset: int) -> None:
        for n in range(200):
            body = SAMPLES[(offset + n) % len(SAMPLES)]
            dict_id, frame = compressor.compress(body)
            if compressor.decompress(dict_id, frame) != body:
                failures.append(n)

    threads = [threading.Thread(target=round_trips, args=(k * 37,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []


def test_dictionary_ids_are_checked_like_key_ids() -> None:
    with pytest.raises(ValueError, match="dictionary 1: its id must be"):
        ZstdBodyCompressor([("bad id", b"x" * 100)])
    data = payload_dictionary.load()[0][1]
    with pytest.raises(ValueError, match="the id 'd' is used twice"):
        ZstdBodyCompressor([("d", data), ("d", data)])
