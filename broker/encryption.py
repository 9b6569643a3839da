"""AES-256-GCM for message bodies, with a ring of keys.

A :class:`KeyRing` holds named 256-bit keys, newest first: the first key
encrypts, every key decrypts. Rotating without downtime is three steps,
each a restart of every process that holds the ring: add the new key at the
end (everyone can now decrypt with it), move it to the front (it encrypts
from now on), and once no record encrypted with the old key can still be
read (the longest topic retention later) drop the old one.

:class:`AesGcmCipher` seals one body per call. The record's topic is bound
as associated data, so a ciphertext copied to another topic doesn't
decrypt; a fresh random 96-bit nonce goes in front of each ciphertext
(NIST SP 800-38D allows 2**32 random nonces per key: rotate long before a
key has sealed four billion records).

Keys are written ``id:base64`` (32 bytes of key), one per line or
comma-separated; ``#`` starts a comment. Nothing here ever puts key bytes in
a repr or an error message.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["ALGORITHM", "AesGcmCipher", "KeyRing", "UndecryptableError"]

#: The name of the cipher, as it appears in a record's encoding header.
ALGORITHM = "aes-256-gcm"

#: AES-256 keys are 32 bytes.
KEY_BYTES = 32

#: GCM's recommended nonce length, in bytes.
NONCE_BYTES = 12

#: What a key's name may be made of (it travels in a record header).
KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class UndecryptableError(Exception):
    """A ciphertext that can't be opened: unknown key, tampered, or sealed
    for another topic. The message says which, never anything secret."""


@dataclass(frozen=True)
class KeyRing:
    """Named keys, the encrypting one first. Build one with :meth:`parse`."""

    keys: tuple[tuple[str, bytes], ...] = field(repr=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a key ring needs at least one key")
        seen = set()
        for number, (key_id, key) in enumerate(self.keys, 1):
            if not KEY_ID.fullmatch(key_id):
                raise ValueError(f"key {number}: its id must be 1-64 of A-Z a-z 0-9 . _ -")
            if key_id in seen:
                raise ValueError(f"key {number}: the id {key_id!r} is used twice")
            if len(key) != KEY_BYTES:
                raise ValueError(f"key {key_id!r}: must be {KEY_BYTES} bytes (AES-256), "
                                 f"got {len(key)}")
            seen.add(key_id)

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """Keys from ``id:base64`` entries, one per line or comma-separated."""
        keys = []
        entries = [e.strip() for line in text.splitlines()
                   for e in line.split("#", 1)[0].split(",")]
        for number, entry in enumerate((e for e in entries if e), 1):
            key_id, sep, encoded = entry.partition(":")
            if not sep:
                raise ValueError(f"key {number}: expected id:base64")
            try:
                key = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"key {number} ({key_id.strip()!r}): not valid base64") from None
            keys.append((key_id.strip(), key))
        return cls(tuple(keys))

    @staticmethod
    def new_key(key_id: str) -> tuple[str, bytes]:
        """A fresh random key named ``key_id``."""
        if not KEY_ID.fullmatch(key_id):
            raise ValueError("a key id must be 1-64 of A-Z a-z 0-9 . _ -")
        return key_id, AESGCM.generate_key(bit_length=KEY_BYTES * 8)

    @property
    def ids(self) -> list[str]:
        return [key_id for key_id, _ in self.keys]

    @property
    def primary_id(self) -> str:
        """The id of the key that encrypts."""
        return self.keys[0][0]

    def render(self) -> str:
        """The ring as a key file: one ``id:base64`` line per key."""
        return "".join(f"{key_id}:{base64.b64encode(key).decode()}\n"
                       for key_id, key in self.keys)

    def with_keys(self, keys: Sequence[tuple[str, bytes]]) -> KeyRing:
        return KeyRing(tuple(keys))


class AesGcmCipher:
    """Seals and opens message bodies with the keys of a :class:`KeyRing`."""

    name = ALGORITHM

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        # One AESGCM object per key, made once: it holds the expanded key.
        self._aead = {key_id: AESGCM(key) for key_id, key in ring.keys}
        self._primary = ring.primary_id

    def __repr__(self) -> str:
        return f"AesGcmCipher(keys={self.ring.ids!r})"

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> tuple[str, bytes]:
        """``(key id, nonce + ciphertext + tag)`` under the primary key."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead[self._primary].encrypt(nonce, plaintext, associated_data)
        return self._primary, nonce + sealed

    def decrypt(self, key_id: str, blob: bytes, associated_data: bytes) -> bytes:
        aead = self._aead.get(key_id)
        if aead is None:
            raise UndecryptableError(f"unknown key id {key_id[:64]!r} "
                                     f"(this ring has {', '.join(self.ring.ids)})")
        if len(blob) < NONCE_BYTES + 16:
            raise UndecryptableError("ciphertext too short")
        try:
            return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], associated_data)
        except InvalidTag:
            raise UndecryptableError(
                f"authentication tag mismatch under key {key_id!r}: the record was "
                "altered, or sealed for another topic") from None
