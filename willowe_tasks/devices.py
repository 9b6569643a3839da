"""Device registry: which push tokens belong to which user.

A user may have several devices on both platforms. A push token identifies one
app install, so it belongs to exactly one user: when a phone changes hands (log
out, log in as someone else) the token *moves* to the new user instead of being
shared, otherwise the previous owner's notifications would keep arriving on a
phone that is no longer theirs -- on a dating app, a privacy problem.

:class:`SQLiteDeviceRegistry` is safe for many threads in several worker
processes on one database file: WAL mode lets readers proceed while one writer
commits, ``busy_timeout`` makes writers queue instead of failing, every thread
gets its own connection, and writes run in ``BEGIN IMMEDIATE`` transactions so a
read-then-write (the token move) cannot interleave with another writer.

Tokens are credentials for reaching a person's phone: they are never logged.
Log :func:`token_fingerprint` instead.

A token a provider rejects is *marked invalid* (with the reason and the time),
never deleted: one wrong setting (an APNs endpoint of the other environment, a
Firebase project of another app) makes every token look dead, and deleting
them would lose the registry. Marked devices get no pushes; :meth:`restore`
brings back those marked after a given time, and registering a token again
makes it live. Marks older than a retention are purged on a schedule.
"""

from __future__ import annotations

import hashlib
import logging
import os
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, get_args

from willowe_tasks._sqlite import ThreadLocalSQLite

logger = logging.getLogger(__name__)

Platform = Literal["ios", "android"]

#: Platforms a device may be registered for.
PLATFORMS: tuple[str, ...] = get_args(Platform)

#: Longest accepted user id, in characters.
USER_ID_MAX_CHARS = 128
#: Longest accepted app id (APNs topic / Android package name), in characters.
APP_ID_MAX_CHARS = 255
#: Shortest accepted iOS token, in hex characters (16 bytes). APNs tokens are
#: 32 bytes (64 hex) today, but Apple documents them as variable length.
IOS_TOKEN_MIN_HEX_CHARS = 32
#: Longest accepted iOS token, in hex characters (100 bytes).
IOS_TOKEN_MAX_HEX_CHARS = 200
#: Longest accepted FCM registration token, in characters. Real tokens are
#: about 160-200 characters; the limit only stops garbage from being stored.
ANDROID_TOKEN_MAX_CHARS = 4096
#: How long a writer waits for another process's write lock, in seconds.
DEFAULT_BUSY_TIMEOUT_S = 5.0
#: Hex characters of the sha256 digest shown by :func:`token_fingerprint`.
FINGERPRINT_HEX_CHARS = 12

_HEX_DIGITS = frozenset(string.hexdigits)

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
)


class DeviceValidationError(ValueError):
    """A registration argument is invalid. ``field`` names the argument."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def token_fingerprint(token: str) -> str:
    """A short, non-reversible name for ``token`` that is safe to log."""
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
    return f"sha256:{digest[:FINGERPRINT_HEX_CHARS]}"


@dataclass(frozen=True, slots=True)
class Device:
    """One app install that can receive pushes."""

    user_id: str
    platform: Platform
    token: str
    #: APNs topic (bundle id) for iOS, package name for Android.
    app_id: str

    @property
    def token_fingerprint(self) -> str:
        return token_fingerprint(self.token)

    def __repr__(self) -> str:
        # The default repr would print the token into any log line or
        # traceback that shows a Device.
        return (
            f"Device(user_id={self.user_id!r}, platform={self.platform!r}, "
            f"token=<{self.token_fingerprint}>, app_id={self.app_id!r})"
        )


class DeviceRegistry(Protocol):
    """Where the workers look up a user's devices."""

    def register(self, user_id: str, platform: str, token: str, app_id: str) -> Device:
        """Record that ``token`` belongs to ``user_id``; idempotent; moves the token."""
        ...

    def unregister(self, token: str) -> bool:
        """Forget ``token`` (the app signed out); True if it was registered."""
        ...

    def mark_invalid(self, token: str, reason: str, *, invalid_since: float | None = None,
                     at: float | None = None) -> bool:
        """A provider rejected ``token``: stop pushing to it, keeping the row.

        Not marked (False) when the token was registered after ``invalid_since``
        (the provider's own time of its verdict): that registration is newer.
        ``at`` is when it is marked (default now)."""
        ...

    def restore(self, *, since: float, reason: str | None = None) -> int:
        """Make devices marked invalid at or after ``since`` (for ``reason`` only,
        if given) live again; return how many."""
        ...

    def invalid_counts(self, *, since: float = 0.0) -> dict[str, int]:
        """Devices marked invalid at or after ``since``, by reason."""
        ...

    def purge_invalid(self, older_than_s: float) -> int:
        """Delete devices marked invalid more than ``older_than_s`` ago."""
        ...

    def devices_for(self, user_id: str) -> list[Device]:
        """The user's live devices, oldest registration first."""
        ...

    def count(self) -> int:
        """Number of live devices."""
        ...

    def close(self) -> None: ...


def validate_device(user_id: str, platform: str, token: str, app_id: str) -> Device:
    """Check registration arguments and return the canonical :class:`Device`.

    iOS tokens are lower-cased: APNs treats them case-insensitively, and one
    canonical spelling keeps ``register`` idempotent. Error messages never
    contain the token itself.
    """
    _check_text("user_id", user_id, USER_ID_MAX_CHARS, allow_spaces=True)
    if not isinstance(platform, str) or platform not in PLATFORMS:
        raise DeviceValidationError(
            "platform", f"must be one of {', '.join(PLATFORMS)}, got {platform!r}"
        )
    _check_text("app_id", app_id, APP_ID_MAX_CHARS, allow_spaces=False)
    if not isinstance(token, str):
        raise DeviceValidationError("token", f"must be a string, got {type(token).__name__}")
    if platform == "ios":
        token = _canonical_ios_token(token)
        return Device(user_id=user_id, platform="ios", token=token, app_id=app_id)
    _check_android_token(token)
    return Device(user_id=user_id, platform="android", token=token, app_id=app_id)


def _check_text(field: str, value: str, max_chars: int, *, allow_spaces: bool) -> None:
    if not isinstance(value, str):
        raise DeviceValidationError(field, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DeviceValidationError(field, "must not be empty")
    if len(value) > max_chars:
        raise DeviceValidationError(field, f"must be at most {max_chars} characters")
    if not value.isprintable():
        raise DeviceValidationError(field, "must not contain control characters")
    if not allow_spaces and any(ch.isspace() for ch in value):
        raise DeviceValidationError(field, "must not contain whitespace")


def _canonical_ios_token(token: str) -> str:
    if not token:
        raise DeviceValidationError("token", "must not be empty")
    if not all(ch in _HEX_DIGITS for ch in token):
        raise DeviceValidationError("token", "iOS token must contain only hex digits 0-9a-f")
    if len(token) % 2:
        raise DeviceValidationError(
            "token", f"iOS token must have an even number of hex digits, got {len(token)}"
        )
    if not IOS_TOKEN_MIN_HEX_CHARS <= len(token) <= IOS_TOKEN_MAX_HEX_CHARS:
        raise DeviceValidationError(
            "token",
            f"iOS token must be {IOS_TOKEN_MIN_HEX_CHARS}-{IOS_TOKEN_MAX_HEX_CHARS} hex digits, "
            f"got {len(token)}",
        )
    return token.lower()


def _check_android_token(token: str) -> None:
    if not token:
        raise DeviceValidationError("token", "must not be empty")
    if len(token) > ANDROID_TOKEN_MAX_CHARS:
        raise DeviceValidationError(
            "token", f"Android token must be at most {ANDROID_TOKEN_MAX_CHARS} characters"
        )
    if not token.isprintable() or any(ch.isspace() for ch in token):
        raise DeviceValidationError(
            "token", "Android token must be printable and contain no whitespace"
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
                    device.token_fingerprint,
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
            # iOS tokens are stored lower-case; Android tokens are case-sensitive.
            row = conn.execute(
                "SELECT id, token FROM devices WHERE token = ? OR (platform = 'ios' AND token = ?)",
                (token, token.lower()),
            ).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM devices WHERE id = ?", (row[0],))
        # The stored spelling, so the fingerprint matches the one logged at register.
        logger.info("device %s unregistered", token_fingerprint(row[1]))
        return True

    def mark_invalid(self, token: str, reason: str, *, invalid_since: float | None = None,
                     at: float | None = None) -> bool:
        now = time.time() if at is None else at
        with self._db.write() as conn:
            row = conn.execute(
                "SELECT id, token, last_seen_at FROM devices WHERE (token = ?"
                " OR (platform = 'ios' AND token = ?)) AND invalid_at IS NULL",
                (token, token.lower()),
            ).fetchone()
            if row is None:
                return False
            if invalid_since is not None and row[2] > invalid_since:
                logger.info("device %s was registered again after the provider's verdict (%s);"
                            " kept", token_fingerprint(row[1]), reason)
                return False
            conn.execute("UPDATE devices SET invalid_at = ?, invalid_reason = ? WHERE id = ?",
                         (now, reason, row[0]))
        logger.info("device %s marked invalid: %s", token_fingerprint(row[1]), reason)
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
