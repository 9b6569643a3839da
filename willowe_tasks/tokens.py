"""Names for device tokens that are safe to show.

A push token lets anyone holding the provider credentials reach a person's
phone, so it never appears in a log line, an error, a dead-letter header or a
metric. Two stand-ins instead, both SHA-256 based (a token carries far too much
entropy to be recovered from its digest):

* :func:`token_hash`, short, for people: every log line about one phone shows
  the same ``sha256:1a2b3c4d5e6f``.
* :func:`token_key`, the whole digest, for the delivery ledger's keys.
"""

from __future__ import annotations

import hashlib

__all__ = ["TOKEN_HASH_HEX_CHARS", "TOKEN_KEY_PREFIX", "token_hash", "token_key"]

#: Prefix of both forms; tells a digest from a raw token (an iOS token is hex too).
TOKEN_KEY_PREFIX = "sha256:"

#: Hex digits of the digest shown by :func:`token_hash`.
TOKEN_HASH_HEX_CHARS = 12


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_hash(token: str) -> str:
    """``sha256:`` and the first 12 hex digits of the token's digest: for logs."""
    return TOKEN_KEY_PREFIX + _digest(token)[:TOKEN_HASH_HEX_CHARS]


def token_key(token: str) -> str:
    """``sha256:`` and the whole digest: the delivery ledger's key for a device."""
    return TOKEN_KEY_PREFIX + _digest(token)
