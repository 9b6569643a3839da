"""Shared token buckets in PostgreSQL: every process on every host.

A take is one ``UPDATE`` that refills the bucket for the time since its
last refill, takes what it can and returns it: PostgreSQL holds the row's
lock for the statement, so concurrent takers queue on it and never hand out
a token twice. Times are the database server's clock, the one clock every
host shares. A taker that waited on the lock may find the bucket refilled
at a later moment than its own statement time: it then refills nothing and
leaves that moment in place, so no stretch of time is counted twice.
"""

from __future__ import annotations

from willowe_tasks.database import PostgresDatabase
from willowe_tasks.migrations import SCHEMA
from willowe_tasks.quota.base import Bucket, Grant, wait_for_token_s

__all__ = ["PostgresQuotaStore"]

_TABLE = f"{SCHEMA}.quota_buckets"

#: The bucket's tokens refilled up to now (the same arithmetic as
#: willowe_tasks.quota.base.take_from).
_AVAILABLE = ("least(%(capacity)s::float8, tokens + %(rate)s::float8 * greatest(0,"
              " extract(epoch FROM statement_timestamp() - refilled_at))::float8)")
_GRANTED = f"least(%(want)s, floor({_AVAILABLE}))"
_TAKE = (f"UPDATE {_TABLE} SET granted = {_GRANTED}::integer,"
         f" tokens = {_AVAILABLE} - {_GRANTED},"
         " refilled_at = greatest(refilled_at, statement_timestamp())"
         " WHERE name = %(name)s RETURNING granted, tokens")
_CREATE = (f"INSERT INTO {_TABLE} (name, tokens, refilled_at, granted)"
           " VALUES (%(name)s, %(capacity)s, statement_timestamp(), 0)"
           " ON CONFLICT (name) DO NOTHING")


class PostgresQuotaStore:
    """:class:`~willowe_tasks.quota.base.QuotaStore` on PostgreSQL; its
    table comes with :func:`willowe_tasks.migrations.migrate`."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._db = database

    def take(self, bucket: Bucket, want: int) -> Grant:
        params = {"name": bucket.name, "want": want, "rate": bucket.rate_per_s,
                  "capacity": bucket.capacity}
        with self._db.connection() as conn:
            row = conn.execute(_TAKE, params).fetchone()
            if row is None:  # the bucket's first use: made full, then taken from
                conn.execute(_CREATE, params)
                row = conn.execute(_TAKE, params).fetchone()
        if row is None:
            raise RuntimeError(f"quota bucket {bucket.name!r} vanished while being taken from")
        granted, left = int(row[0]), float(row[1])
        return Grant(granted, 0.0 if granted else wait_for_token_s(left, bucket))

    def close(self) -> None:
        """Close the database's pool (shared with the registry and ledger of the
        same services)."""
        self._db.close()
