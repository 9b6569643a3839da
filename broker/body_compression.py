"""Zstandard for message bodies, with named dictionaries.

Kafka compresses whole record batches, which does nothing for a body that
is encrypted (ciphertext looks random) and little for a lone record of a few
hundred bytes (``send()`` sends one record per batch). A dictionary trained
on typical bodies fixes the second, and compressing *before* encrypting fixes
the first: :class:`ZstdBodyCompressor` is that step of
:class:`~broker.payload_codec.PayloadCodec`.

Dictionaries are named, like keys: the first compresses, every one
decompresses, and the name travels in a record header, so a new dictionary
can be rolled out while records compressed with the old one still drain.
With no dictionary the step is plain zstd.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

import zstandard

__all__ = ["ALGORITHM", "MAX_BODY_BYTES", "UndecompressableError", "ZstdBodyCompressor"]

#: The step's name, as it appears in a record's encoding header.
ALGORITHM = "zstd"

#: Largest body a record may decompress to, in bytes. Kafka refuses records
#: over ``message.max.bytes`` (1 MiB by default), so no honest body comes
#: near this; a forged frame claiming more is refused instead of filling memory.
MAX_BODY_BYTES = 16 * 1024 * 1024

#: zstd's default level: on bodies of a few hundred bytes higher levels save
#: a few bytes a record at several times the CPU (README, Compression).
DEFAULT_LEVEL = 3

#: What a dictionary's name may be made of (it travels in a record header).
DICTIONARY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class UndecompressableError(Exception):
    """A body that can't be decompressed: unknown dictionary, not a zstd
    frame, or over :data:`MAX_BODY_BYTES`. The message never holds the body."""


class ZstdBodyCompressor:
    """Compresses bodies with the first of ``dictionaries`` (``(name, bytes)``
    pairs; none: plain zstd) and decompresses with any of them."""

    name = ALGORITHM

    def __init__(self, dictionaries: Sequence[tuple[str, bytes]] = (),
                 level: int = DEFAULT_LEVEL) -> None:
        seen: dict[str, zstandard.ZstdCompressionDict] = {}
        for number, (dict_id, data) in enumerate(dictionaries, 1):
            if not DICTIONARY_ID.fullmatch(dict_id):
                raise ValueError(f"dictionary {number}: its id must be 1-64 of "
                                 "A-Z a-z 0-9 . _ -")
            if dict_id in seen:
                raise ValueError(f"dictionary {number}: the id {dict_id!r} is used twice")
            seen[dict_id] = zstandard.ZstdCompressionDict(data)
        self._dictionaries = seen
        self.primary_id: str | None = next(iter(seen), None)
        self.level = level
        # zstandard's (de)compressor objects must not be used by two threads at
        # once, and Dramatiq sends and decodes from many: one set per thread.
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"ZstdBodyCompressor(dictionaries={list(self._dictionaries)!r}, level={self.level})"

    @property
    def dictionary_ids(self) -> list[str]:
        return list(self._dictionaries)

    def compress(self, body: bytes) -> tuple[str | None, bytes]:
        """``(dictionary id or None, zstd frame)``."""
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            primary = self._dictionaries.get(self.primary_id or "")
            # No checksum: an encrypted body has GCM's tag, a plain one Kafka's CRC.
            compressor = zstandard.ZstdCompressor(level=self.level, dict_data=primary,
                                                  write_checksum=False)
            self._local.compressor = compressor
        return self.primary_id, compressor.compress(body)

    def decompress(self, dict_id: str | None, frame: bytes) -> bytes:
        decompressors = getattr(self._local, "decompressors", None)
        if decompressors is None:
            decompressors = self._local.decompressors = {}
        decompressor = decompressors.get(dict_id)
        if decompressor is None:
            if dict_id is not None and dict_id not in self._dictionaries:
                raise UndecompressableError(
                    f"unknown compression dictionary {dict_id[:64]!r} (this consumer has "
                    f"{', '.join(self._dictionaries) or 'none'})")
            decompressor = zstandard.ZstdDecompressor(
                dict_data=self._dictionaries.get(dict_id or ""))
            decompressors[dict_id] = decompressor
        try:
            size = zstandard.frame_content_size(frame)
        except zstandard.ZstdError as e:
            raise UndecompressableError(f"not a zstd frame: {e}") from None
        if size > MAX_BODY_BYTES:
            raise UndecompressableError(
                f"the frame claims {size} bytes, over the limit of {MAX_BODY_BYTES}")
        try:
            # A frame without its size (-1) is capped by max_output_size.
            return decompressor.decompress(frame, max_output_size=MAX_BODY_BYTES)
        except zstandard.ZstdError as e:
            raise UndecompressableError(f"corrupt zstd frame: {e}") from None
