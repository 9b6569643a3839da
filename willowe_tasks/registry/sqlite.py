"""The device registry on a SQLite file, for workers and web apps on one host.

:class:`SQLiteDeviceRegistry` is safe for many threads in several worker
processes on one database file: WAL mode lets readers proceed while one writer
commits, ``busy_timeout`` makes writers queue instead of failing, every thread
gets its own connection, and writes run in ``BEGIN IMMEDIATE`` transactions so a
read-then-write (the token move) cannot interleave with another writer.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from willowe_tasks._sqlite import ThreadLocalSQLite
from willowe_tasks.registry.base import Device, stored_spellings, validate_device
from willowe_tasks.tokens import token_hash

__all__ = ["SQLiteDeviceRegistry"]

logger = logging.getLogger(__name__)

#: How long a writer waits for another process's write lock, in seconds.
DEFAULT_BUSY_TIMEOUT_S = 5.0

#: The registry's schema, one list of statements per version (``PRAGMA
#: user_version`` says which ran). A file made by an older version is brought
#: up to date when opened.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # AUTOINCREMENT so ids only grow: devices_for() orders by id, and a moved
        # token is re-inserted so it sorts as the newest device of its new owner.
        """
        CREATE TABLE IF NOT EXISTS devices (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            token         TEXT NOT NULL UNIQUE,
            user_id       TEXT NOT NULL,
            platform      TEXT NOT NULL CHECK (platform IN ('ios', 'android')),
            app_id        TEXT NOT NULL,
            registered_at REAL NOT NULL,
            last_seen_at  REAL NOT NULL
        )
        """,
        "CREATE INDEX IF NOT EXISTS devices_by_user ON devices (user_id, id)",
    ),
    (
        # Soft removal: a rejected token is marked, not deleted.
        "ALTER TABLE devices ADD COLUMN invalid_at REAL",
        "ALTER TABLE devices ADD COLUMN invalid_reason TEXT",
        "CREATE INDEX IF NOT EXISTS devices_by_invalid_at ON devices (invalid_at)"
        " WHERE invalid_at IS NOT NULL",
    ),
    (
        # Platforms are the registered providers' (a third provider needs no
        # schema change), so the CHECK on two of them goes: SQLite can only
        # drop a constraint by copying the table.
        """
        CREATE TABLE devices_v3 (
            id             INTEGER PRIMARY KEY AUTOINCREMENT,
            token          TEXT NOT NULL UNIQUE,
            user_id        TEXT NOT NULL,
            platform       TEXT NOT NULL,
            app_id         TEXT NOT NULL,
            registered_at  REAL NOT NULL,
            last_seen_at   REAL NOT NULL,
            invalid_at     REAL,
            invalid_reason TEXT
        )
        """,
        "INSERT INTO devices_v3 SELECT id, token, user_id, platform, app_id, registered_at,"
        " last_seen_at, invalid_at, invalid_reason FROM devices",
        "DROP TABLE devices",
        "ALTER TABLE devices_v3 RENAME TO devices",
        "CREATE INDEX devices_by_user ON devices (user_id, id)",
        "CREATE INDEX devices_by_invalid_at ON devices (invalid_at) WHERE invalid_at IS NOT NULL",
    ),
)


class SQLiteDeviceRegistry:
    """:class:`DeviceRegistry` on a SQLite file shared by threads and processes.

    Create one instance per process (after forking). Each thread that uses it
    gets its own connection; :meth:`close` closes them all and must only be
    called once no other thread is still using the registry.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
    ) -> None:
        if str(path) == ":memory:" or not str(path):
            # Every thread has its own connection, so an in-memory database
            # would be a different, empty database in each thread.
            raise ValueError("path: a file path is required (':memory:' is not shared)")
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._db = ThreadLocalSQLite(
            self._path,
            busy_timeout_s=busy_timeout_s,
            # NORMAL is crash-safe in WAL mode; only a power loss can drop the
            # last registrations, and the app re-registers its token on every
            # launch.
            synchronous="NORMAL",
            name="device registry",
            logger=logger,
        )
        self._create_schema()

    @property
    def path(self) -> Path:
        return self._path

    def register(self, user_id: str, platform: str, token: str, app_id: str) -> Device:
        device = validate_device(user_id, platform, token, app_id)
        now = time.time()
        with self._db.write() as conn:
            row = conn.execute(
                "SELECT id, user_id FROM devices WHERE token = ?", (device.token,)
            ).fetchone()
            if row is not None and row[1] == device.user_id:
                # Registering again also makes a token marked invalid live: the
                # app has just been given it by the platform.
                conn.execute(
                    "UPDATE devices SET platform = ?, app_id = ?, last_seen_at = ?,"
                    " invalid_at = NULL, invalid_reason = NULL WHERE id = ?",
                    (device.platform, device.app_id, now, row[0]),
                )
                return device
            if row is not None:
                # Delete and re-insert rather than update, so the token gets a
                # new id and sorts as the new owner's most recent device.
                conn.execute("DELETE FROM devices WHERE id = ?", (row[0],))
                logger.info(
                    "device %s moved from user %s to user %s",
                    device.token_hash,
                    row[1],
                    device.user_id,
                )
            conn.execute(
                "INSERT INTO devices (token, user_id, platform, app_id, registered_at,"
                " last_seen_at) VALUES (?, ?, ?, ?, ?, ?)",
                (device.token, device.user_id, device.platform, device.app_id, now, now),
            )
        return device

    def unregister(self, token: str) -> bool:
        if not isinstance(token, str) or not token:
            return False
        with self._db.write() as conn:
            row = _find(conn, "id, token", token)
            if row is None:
                return False
            conn.execute("DELETE FROM devices WHERE id = ?", (row[0],))
        # The stored spelling, so the fingerprint matches the one logged at register.
        logger.info("device %s unregistered", token_hash(row[1]))
        return True

    def mark_invalid(self, token: str, reason: str, *, invalid_since: float | None = None,
                     at: float | None = None) -> bool:
        now = time.time() if at is None else at
        with self._db.write() as conn:
            row = _find(conn, "id, token, last_seen_at", token, "invalid_at IS NULL")
            if row is None:
                return False
            if invalid_since is not None and row[2] > invalid_since:
                logger.info("device %s was registered again after the provider's verdict (%s);"
                            " kept", token_hash(row[1]), reason)
                return False
            conn.execute("UPDATE devices SET invalid_at = ?, invalid_reason = ? WHERE id = ?",
                         (now, reason, row[0]))
        logger.info("device %s marked invalid: %s", token_hash(row[1]), reason)
        return True

    def restore(self, *, since: float, reason: str | None = None) -> int:
        with self._db.write() as conn:
            restored = conn.execute(
                "UPDATE devices SET invalid_at = NULL, invalid_reason = NULL"
                " WHERE invalid_at >= ? AND (? IS NULL OR invalid_reason = ?)",
                (since, reason, reason),
            ).rowcount
        if restored:
            logger.warning("restored %d device(s) marked invalid since %.0f%s", restored, since,
                           f" ({reason})" if reason else "")
        return int(restored)

    def invalid_counts(self, *, since: float = 0.0) -> dict[str, int]:
        rows = self._db.connection().execute(
            "SELECT invalid_reason, count(*) FROM devices WHERE invalid_at >= ?"
            " GROUP BY invalid_reason ORDER BY invalid_reason", (since,),
        )
        return {str(reason): int(count) for reason, count in rows}

    def purge_invalid(self, older_than_s: float) -> int:
        with self._db.write() as conn:
            purged = conn.execute("DELETE FROM devices WHERE invalid_at < ?",
                                  (time.time() - older_than_s,)).rowcount
        if purged:
            logger.info("purged %d device(s) marked invalid over %.0f s ago", purged,
                        older_than_s)
        return int(purged)

    def devices_for(self, user_id: str) -> list[Device]:
        rows = self._db.connection().execute(
            "SELECT user_id, platform, token, app_id FROM devices"
            " WHERE user_id = ? AND invalid_at IS NULL ORDER BY id",
            (user_id,),
        )
        return [
            Device(user_id=row[0], platform=row[1], token=row[2], app_id=row[3]) for row in rows
        ]

    def count(self) -> int:
        (total,) = self._db.connection().execute(
            "SELECT count(*) FROM devices WHERE invalid_at IS NULL").fetchone()
        return int(total)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SQLiteDeviceRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _create_schema(self) -> None:
        with self._db.write() as conn:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            for number, statements in enumerate(_MIGRATIONS[version:], start=version + 1):
                for statement in statements:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")


def _find(conn: sqlite3.Connection, columns: str, token: str,
          condition: str = "1") -> tuple[Any, ...] | None:
    """The row of ``token`` as any provider would have stored it (APNs tokens
    in lower case, FCM tokens as given)."""
    spellings = stored_spellings(token)
    if not spellings:
        return None
    values = ", ".join("(?, ?)" for _ in spellings)
    row: tuple[Any, ...] | None = conn.execute(
        f"SELECT {columns} FROM devices WHERE (token, platform) IN (VALUES {values})"
        f" AND {condition} LIMIT 1",
        [value for pair in spellings for value in pair],
    ).fetchone()
    return row
