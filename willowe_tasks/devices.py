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

_SCHEMA = (
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
        """Forget ``token``; True if it was registered."""
        ...

    def devices_for(self, user_id: str) -> list[Device]:
        """The user's devices, oldest registration first."""
        ...

    def count(self) -> int:
        """Number of registered devices."""
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
                conn.execute(
                    "UPDATE devices SET platform = ?, app_id = ?, last_seen_at = ? WHERE id = ?",
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

    def devices_for(self, user_id: str) -> list[Device]:
        rows = self._db.connection().execute(
            "SELECT user_id, platform, token, app_id FROM devices WHERE user_id = ? ORDER BY id",
            (user_id,),
        )
        return [
            Device(user_id=row[0], platform=row[1], token=row[2], app_id=row[3]) for row in rows
        ]

    def count(self) -> int:
        (total,) = self._db.connection().execute("SELECT count(*) FROM devices").fetchone()
        return int(total)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SQLiteDeviceRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _create_schema(self) -> None:
        with self._db.write() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)
