"""A durable local spool for records Kafka could not take yet.

With a spool, ``send()`` doesn't fail while Kafka is away: the record, exactly
as it would go to Kafka (topic, key, value, headers), is written to a SQLite
file in WAL mode, synced to disk, and ``send()`` returns. A background
flusher sends the spool once Kafka answers, oldest first (so in order per
topic, with the original message ids), and deletes each entry only after
Kafka acknowledged it. While entries wait, new sends join the queue behind
them rather than overtake them.

A process that dies leaves its entries in the file; the next process on the
same spool (or ``python -m willowe_tasks spool flush``) sends them. A record
sent but not yet deleted when a process dies is sent again: consumers see it
twice, with the same message id.

The spool is bounded: when it holds ``max_records``, appending raises
:class:`SpoolFull`, and the caller learns that Kafka has been away too long.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dramatiq.errors import ConnectionFailed

from broker.per_process import PerProcess

__all__ = ["SpoolFull", "SpooledRecord", "SqliteSpool"]

Headers = list[tuple[str, bytes]]

#: How long a writer waits for another process's write lock, in seconds.
BUSY_TIMEOUT_S = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    topic     TEXT NOT NULL,
    key       BLOB,
    value     BLOB NOT NULL,
    headers   BLOB NOT NULL,
    queued_at REAL NOT NULL
)
"""


class SpoolFull(ConnectionFailed):
    """Kafka has been away so long that the spool is full; the record was not kept."""


@dataclass(frozen=True)
class SpooledRecord:
    id: int
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers
    queued_at: float


class SqliteSpool:
    """The spool in one SQLite file, shared by the threads and processes using it."""

    def __init__(self, path: str | os.PathLike[str], *, max_records: int) -> None:
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, got {max_records}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_records = max_records
        # One connection per thread, made again in a forked child.
        self._local: PerProcess[threading.local] = PerProcess(threading.local)
        with self._connection() as conn:
            conn.execute(_SCHEMA)

    def append(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> None:
        """Keep a record for later; durable (fsynced) when this returns."""
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            (count,) = conn.execute("SELECT count(*) FROM spool").fetchone()
            if count >= self.max_records:
                conn.execute("ROLLBACK")
                raise SpoolFull(f"the send spool {self.path} holds {count} records, its limit;"
                                " Kafka has been away too long")
            conn.execute("INSERT INTO spool (topic, key, value, headers, queued_at)"
                         " VALUES (?, ?, ?, ?, ?)",
                         (topic, key, value, _encode_headers(headers), time.time()))
            conn.execute("COMMIT")

    def oldest(self, limit: int) -> list[SpooledRecord]:
        """The ``limit`` oldest records, oldest first."""
        with self._connection() as conn:
            rows = conn.execute("SELECT id, topic, key, value, headers, queued_at FROM spool"
                                " ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [SpooledRecord(row[0], row[1], row[2], row[3], _decode_headers(row[4]), row[5])
                for row in rows]

    def delete(self, ids: Sequence[int]) -> None:
        """Forget records Kafka acknowledged."""
        if not ids:
            return
        with self._connection() as conn:
            conn.executemany("DELETE FROM spool WHERE id = ?", [(i,) for i in ids])

    def depth(self) -> int:
        """How many records wait."""
        with self._connection() as conn:
            (count,) = conn.execute("SELECT count(*) FROM spool").fetchone()
        return int(count)

    def oldest_age_s(self, now: float | None = None) -> float:
        """How long the oldest waiting record has waited (0 when none)."""
        with self._connection() as conn:
            (queued_at,) = conn.execute("SELECT min(queued_at) FROM spool").fetchone()
        if queued_at is None:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - queued_at)

    def _connection(self) -> sqlite3.Connection:
        # SQLite's lock orders the writers of every process sharing the file.
        local = self._local.get()
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a record the caller was told is kept must survive a power loss.
            conn.execute("PRAGMA synchronous=FULL")
            local.conn = conn
        return conn


def _encode_headers(headers: Headers) -> bytes:
    # Length-prefixed, so any bytes survive: name length, name, value length, value.
    out = bytearray()
    for name, value in headers:
        encoded = name.encode("utf-8")
        out += len(encoded).to_bytes(4, "big") + encoded + len(value).to_bytes(4, "big") + value
    return bytes(out)


def _decode_headers(data: bytes) -> Headers:
    headers: Headers = []
    at = 0
    while at < len(data):
        size = int.from_bytes(data[at:at + 4], "big")
        name = data[at + 4:at + 4 + size].decode("utf-8")
        at += 4 + size
        size = int.from_bytes(data[at:at + 4], "big")
        headers.append((name, data[at + 4:at + 4 + size]))
        at += 4 + size
    return headers
