"""The device registry on PostgreSQL, for workers (and tools) on many hosts.

The rules are those of :mod:`willowe_tasks.registry.base`, exactly as the
SQLite registry applies them: a token belongs to one user and moves on
registration, iOS tokens are stored lower-case, a rejected token is marked
invalid (never deleted) until restored, registered again or purged.
Registration times are the database server's clock.

A registration is one ``INSERT … ON CONFLICT DO UPDATE`` on the token's
key, which PostgreSQL guarantees to either insert or update however many
hosts register the same token at once; a ``SELECT … FOR UPDATE`` before it
only learns whom a token moves from, for the log. Rows are keyed by
:func:`~willowe_tasks.tokens.token_key` of the stored spelling: a token
(FCM allows 4096 characters) can be longer than an index entry may be.
"""

from __future__ import annotations

import logging
from typing import Any

from willowe_tasks.database import Conn, PostgresDatabase
from willowe_tasks.migrations import SCHEMA
from willowe_tasks.registry.base import Device, stored_spellings, validate_device
from willowe_tasks.tokens import token_hash, token_key

__all__ = ["PostgresDeviceRegistry"]

logger = logging.getLogger(__name__)

_TABLE = f"{SCHEMA}.devices"
_NOW = "statement_timestamp()"

#: Same user: the row keeps its place and first registration time. Another
#: user: the token moves, as a new device of its new owner (a new place in
#: the order, registered now). Either way it is live again.
_REGISTER = f"""
    INSERT INTO {_TABLE} AS d (token_key, token, registration_order, user_id, platform, app_id,
                               registered_at, last_seen_at)
    VALUES (%(key)s, %(token)s, nextval('{SCHEMA}.device_registration_order'), %(user_id)s,
            %(platform)s, %(app_id)s, {_NOW}, {_NOW})
    ON CONFLICT (token_key) DO UPDATE SET
        platform = excluded.platform, app_id = excluded.app_id,
        last_seen_at = excluded.last_seen_at, invalid_at = NULL, invalid_reason = NULL,
        registration_order = CASE WHEN d.user_id = excluded.user_id
                                  THEN d.registration_order ELSE excluded.registration_order END,
        registered_at = CASE WHEN d.user_id = excluded.user_id
                             THEN d.registered_at ELSE excluded.registered_at END,
        user_id = excluded.user_id
"""


class PostgresDeviceRegistry:
    """:class:`~willowe_tasks.registry.base.DeviceRegistry` on PostgreSQL; one
    instance per process. Its schema is applied by
    :func:`willowe_tasks.migrations.migrate`."""

    def __init__(self, database: PostgresDatabase) -> None:
        self._db = database

    @property
    def database(self) -> PostgresDatabase:
        return self._db

    def register(self, user_id: str, platform: str, token: str, app_id: str) -> Device:
        device = validate_device(user_id, platform, token, app_id)
        key = token_key(device.token)
        with self._db.transaction() as conn:
            before = conn.execute(f"SELECT user_id FROM {_TABLE} WHERE token_key = %s"
                                  " FOR UPDATE", (key,)).fetchone()
            conn.execute(_REGISTER, {"key": key, "token": device.token,
                                     "user_id": device.user_id, "platform": device.platform,
                                     "app_id": device.app_id})
        if before is not None and before[0] != device.user_id:
            logger.info("device %s moved from user %s to user %s", device.token_hash, before[0],
                        device.user_id)
        return device

    def unregister(self, token: str) -> bool:
        if not isinstance(token, str) or not token:
            return False
        with self._db.transaction() as conn:
            row = _find(conn, "token_key, token", token, for_update=True)
            if row is None:
                return False
            conn.execute(f"DELETE FROM {_TABLE} WHERE token_key = %s", (row[0],))
        # The stored spelling, so the fingerprint matches the one logged at register.
        logger.info("device %s unregistered", token_hash(row[1]))
        return True

    def mark_invalid(self, token: str, reason: str, *, invalid_since: float | None = None,
                     at: float | None = None) -> bool:
        with self._db.transaction() as conn:
            row = _find(conn, "token_key, token, extract(epoch FROM last_seen_at)", token,
                        "invalid_at IS NULL", for_update=True)
            if row is None:
                return False
            if invalid_since is not None and float(row[2]) > invalid_since:
                logger.info("device %s was registered again after the provider's verdict (%s);"
                            " kept", token_hash(row[1]), reason)
                return False
            conn.execute(
                f"UPDATE {_TABLE} SET invalid_at = coalesce(to_timestamp(%s), {_NOW}),"
                " invalid_reason = %s WHERE token_key = %s", (at, reason, row[0]))
        logger.info("device %s marked invalid: %s", token_hash(row[1]), reason)
        return True

    def restore(self, *, since: float, reason: str | None = None) -> int:
        with self._db.connection() as conn:
            restored = conn.execute(
                f"UPDATE {_TABLE} SET invalid_at = NULL, invalid_reason = NULL"
                " WHERE invalid_at >= to_timestamp(%s)"
                " AND (%s::text IS NULL OR invalid_reason = %s)",
                (since, reason, reason)).rowcount
        if restored:
            logger.warning("restored %d device(s) marked invalid since %.0f%s", restored, since,
                           f" ({reason})" if reason else "")
        return int(restored)

    def invalid_counts(self, *, since: float = 0.0) -> dict[str, int]:
        with self._db.connection() as conn:
            rows = conn.execute(
                f"SELECT invalid_reason, count(*) FROM {_TABLE}"
                " WHERE invalid_at >= to_timestamp(%s)"
                " GROUP BY invalid_reason ORDER BY invalid_reason", (since,)).fetchall()
        return {str(reason): int(count) for reason, count in rows}

    def purge_invalid(self, older_than_s: float) -> int:
        with self._db.connection() as conn:
            purged = conn.execute(
                f"DELETE FROM {_TABLE}"
                f" WHERE invalid_at < {_NOW} - make_interval(secs => %s)",
                (older_than_s,)).rowcount
        if purged:
            logger.info("purged %d device(s) marked invalid over %.0f s ago", purged,
                        older_than_s)
        return int(purged)

    def devices_for(self, user_id: str) -> list[Device]:
        with self._db.connection() as conn:
            rows = conn.execute(
                f"SELECT user_id, platform, token, app_id FROM {_TABLE}"
                " WHERE user_id = %s AND invalid_at IS NULL ORDER BY registration_order",
                (user_id,)).fetchall()
        return [Device(user_id=row[0], platform=row[1], token=row[2], app_id=row[3])
                for row in rows]

    def count(self) -> int:
        with self._db.connection() as conn:
            row = conn.execute(
                f"SELECT count(*) FROM {_TABLE} WHERE invalid_at IS NULL").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        """Close the database's pool (shared with the ledger of the same services)."""
        self._db.close()

    def __enter__(self) -> PostgresDeviceRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

def _find(conn: Conn, columns: str, token: str, condition: str = "true", *,
          for_update: bool = False) -> tuple[Any, ...] | None:
    """The row of ``token`` as any provider would have stored it (APNs tokens
    in lower case, FCM tokens as given)."""
    spellings = stored_spellings(token)
    if not spellings:
        return None
    values = ", ".join("(%s, %s)" for _ in spellings)
    row: tuple[Any, ...] | None = conn.execute(
        f"SELECT {columns} FROM {_TABLE} WHERE (token_key, platform) IN (VALUES {values})"
        f" AND {condition} ORDER BY registration_order LIMIT 1"
        f"{' FOR UPDATE' if for_update else ''}",
        [value for spelling, platform in spellings
         for value in (token_key(spelling), platform)]).fetchone()
    return row
