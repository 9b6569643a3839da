"""Shared token buckets in a SQLite file: the processes of one host.

Each take is one ``BEGIN IMMEDIATE`` transaction (read, refill, take,
write), so processes sharing the file take turns on SQLite's write lock and
never hand out a token twice. Times are this host's wall clock, which all
its processes share. ``synchronous=NORMAL``: a commit lost to a power
failure only gives back a few tokens, not worth an fsync a batch.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from willowe_tasks._sqlite import ThreadLocalSQLite
from willowe_tasks.quota.base import Bucket, Grant, take_from, wait_for_token_s

__all__ = ["SQLiteQuotaStore"]

logger = logging.getLogger(__name__)

#: How long a take waits for another process's write lock, in seconds.
BUSY_TIMEOUT_S = 5.0

_SCHEMA = """
    CREATE TABLE IF NOT EXISTS quota_buckets (
        name        TEXT PRIMARY KEY,
        tokens      REAL NOT NULL,
        refilled_at REAL NOT NULL
    ) WITHOUT ROWID
"""


class SQLiteQuotaStore:
    """:class:`~willowe_tasks.quota.base.QuotaStore` on a SQLite file.
    ``clock`` is unix seconds, the same for every process on the file."""

    def __init__(self, path: str | os.PathLike[str], *,
                 clock: Callable[[], float] = time.time) -> None:
        if str(path) == ":memory:" or not str(path):
            raise ValueError("path: a file path is required (':memory:' is not shared)")
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._db = ThreadLocalSQLite(self._path, busy_timeout_s=BUSY_TIMEOUT_S,
                                     synchronous="NORMAL", name="quota buckets", logger=logger)
        with self._db.write() as conn:
            conn.execute(_SCHEMA)

    @property
    def path(self) -> Path:
        return self._path

    def take(self, bucket: Bucket, want: int) -> Grant:
        with self._db.write() as conn:
            now = self._clock()
            row = conn.execute("SELECT tokens, refilled_at FROM quota_buckets WHERE name = ?",
                               (bucket.name,)).fetchone()
            tokens, refilled_at = (bucket.capacity, now) if row is None else row
            granted, left = take_from(tokens, now - refilled_at, bucket, want)
            conn.execute(
                "INSERT INTO quota_buckets (name, tokens, refilled_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET tokens = excluded.tokens,"
                " refilled_at = excluded.refilled_at",
                (bucket.name, left, max(now, refilled_at)))
        return Grant(granted, 0.0 if granted else wait_for_token_s(left, bucket))

    def close(self) -> None:
        self._db.close()
