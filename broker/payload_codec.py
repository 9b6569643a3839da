"""What a message's bytes become on Kafka, and back.

:class:`PayloadCodec` turns the bytes Dramatiq encodes a message into a
record value plus headers (:meth:`~PayloadCodec.encode`), and a consumed
record back into those bytes (:meth:`~PayloadCodec.decode`). The broker
encodes every message it enqueues and its consumers decode every record
before Dramatiq sees it; a record the codec can't open is dead-lettered
with the reason :class:`PayloadDecodeError` gives, and the consumer goes on.

The steps applied are named, in order, in the ``x-payload-encoding``
header; a record without it is taken as it is (so workers drain what was
sent before a step was turned on). Two steps exist, each optional:

- compression (:mod:`broker.body_compression`), zstd with a named dictionary
  whose name goes in ``x-payload-dictionary``;
- encryption (:mod:`broker.encryption`), whose key id goes in
  ``x-payload-key-id`` and whose associated data is the record's topic.

Compression goes *before* encryption, since ciphertext doesn't compress:
``x-payload-encoding: zstd,aes-256-gcm``. Decoding undoes the steps named,
last first, whatever this codec's own steps are: a consumer that compresses
nothing still opens compressed records (with the dictionaries it was given).

Dead letters keep their record's value and headers, so
:func:`~broker.dead_letters.dead_letter_body` opens one with the source
topic's name, and a replay to that topic decrypts as the original would.
"""

from __future__ import annotations

from collections.abc import Sequence

from broker import body_compression
from broker.body_compression import UndecompressableError, ZstdBodyCompressor
from broker.encryption import ALGORITHM, AesGcmCipher, UndecryptableError

__all__ = [
    "CODEC_HEADERS",
    "DICTIONARY_HEADER",
    "ENCODING_HEADER",
    "KEY_ID_HEADER",
    "UNDECODABLE",
    "UNDECRYPTABLE",
    "PayloadCodec",
    "PayloadDecodeError",
]

#: Header naming the steps applied to the body, in order, comma-separated.
ENCODING_HEADER = "x-payload-encoding"

#: Header naming the key that encrypted the body.
KEY_ID_HEADER = "x-payload-key-id"

#: Header naming the dictionary that compressed the body (absent: none).
DICTIONARY_HEADER = "x-payload-dictionary"

#: Every header the codec writes: a copy re-encoded for another topic drops them.
CODEC_HEADERS = (ENCODING_HEADER, KEY_ID_HEADER, DICTIONARY_HEADER)

#: Dead-letter reason for a record that can't be decrypted.
UNDECRYPTABLE = "undecryptable"

#: Dead-letter reason for a record whose encoding is unknown (or that
#: Dramatiq can't decode).
UNDECODABLE = "undecodable"

Headers = list[tuple[str, bytes]]


class PayloadDecodeError(Exception):
    """A record's value can't be turned back into a message; ``reason`` is
    the dead-letter reason, the message says why (never the payload)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class PayloadCodec:
    """Message bytes ⇄ record value and headers.

    ``compressor``: compress every body first, unless ``compress`` is False,
    and decompress records that say they are compressed (None: plain zstd,
    no dictionaries). ``cipher``: encrypt every body (and decrypt records
    that say they are); None leaves bodies as they are and dead-letters
    encrypted records as undecryptable.
    """

    def __init__(self, cipher: AesGcmCipher | None = None,
                 compressor: ZstdBodyCompressor | None = None, *,
                 compress: bool = True) -> None:
        self.cipher = cipher
        self.compressor = compressor if compress else None
        # Decoding needs the dictionaries even when this codec compresses nothing.
        self._decompressor = compressor or ZstdBodyCompressor()
        steps = [step.name for step in (self.compressor, cipher) if step is not None]
        self._encoding = ",".join(steps).encode()

    def __repr__(self) -> str:
        return f"PayloadCodec(cipher={self.cipher!r}, compressor={self.compressor!r})"

    def encode(self, topic: str, body: bytes) -> tuple[bytes, Headers]:
        """The record value for ``body`` on ``topic``, and the headers to add."""
        if not self._encoding:
            return body, []
        headers = [(ENCODING_HEADER, self._encoding)]
        if self.compressor is not None:
            dict_id, body = self.compressor.compress(body)
            if dict_id is not None:
                headers.append((DICTIONARY_HEADER, dict_id.encode()))
        if self.cipher is not None:
            key_id, body = self.cipher.encrypt(body, topic.encode())
            headers.append((KEY_ID_HEADER, key_id.encode()))
        return body, headers

    def decode(self, topic: str, value: bytes,
               headers: Sequence[tuple[str, bytes | None]] | None) -> bytes:
        """The message bytes of a record read from ``topic``; raises
        :class:`PayloadDecodeError`."""
        encoding = _header(headers, ENCODING_HEADER)
        if encoding is None:
            return value
        body = value
        for step in reversed(encoding.split(",")):
            if step == ALGORITHM:
                body = self._decrypt(topic, body, headers)
            elif step == body_compression.ALGORITHM:
                try:
                    body = self._decompressor.decompress(
                        _header(headers, DICTIONARY_HEADER), body)
                except UndecompressableError as e:
                    raise PayloadDecodeError(UNDECODABLE, f"can't decompress the body: {e}"
                                             ) from None
            else:
                raise PayloadDecodeError(UNDECODABLE, f"unknown payload encoding {step[:40]!r}")
        return body

    def _decrypt(self, topic: str, body: bytes,
                 headers: Sequence[tuple[str, bytes | None]] | None) -> bytes:
        if self.cipher is None:
            raise PayloadDecodeError(
                UNDECRYPTABLE, "the record is encrypted and this consumer has no keys")
        key_id = _header(headers, KEY_ID_HEADER)
        if key_id is None or not body:
            raise PayloadDecodeError(UNDECRYPTABLE, f"no {KEY_ID_HEADER} header or no value")
        try:
            return self.cipher.decrypt(key_id, body, topic.encode())
        except UndecryptableError as e:
            raise PayloadDecodeError(UNDECRYPTABLE, str(e)) from None


def _header(headers: Sequence[tuple[str, bytes | None]] | None, name: str) -> str | None:
    """The last value of header ``name``, as text."""
    found = None
    for key, value in headers or ():
        if key == name:
            found = (value or b"").decode("utf-8", "replace")
    return found
