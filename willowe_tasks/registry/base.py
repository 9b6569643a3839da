"""The device registry's contract, and what a valid device is.

A user may have several devices on both platforms. A push token identifies one
app install, so it belongs to exactly one user: when a phone changes hands (log
out, log in as someone else) the token *moves* to the new user instead of being
shared, otherwise the previous owner's notifications would keep arriving on a
phone that is no longer theirs -- on a dating app, a privacy problem.

A token a provider rejects is *marked invalid* (with the reason and the time),
never deleted: one wrong setting (an APNs endpoint of the other environment, a
Firebase project of another app) makes every token look dead, and deleting
them would lose the registry. Marked devices get no pushes; ``restore`` brings
back those marked after a given time, and registering a token again makes it
live. Marks older than a retention are purged on a schedule.

Platforms are those of the registered push providers
(:mod:`willowe_tasks.providers`); each provider says how its tokens are spelled.
Tokens are credentials for reaching a person's phone: they are never logged
(log :attr:`Device.token_hash`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from willowe_tasks.providers import provider_for, providers
from willowe_tasks.tokens import token_hash

__all__ = ["APP_ID_MAX_CHARS", "USER_ID_MAX_CHARS", "Device", "DeviceRegistry",
           "DeviceValidationError", "invalid_reason", "stored_spellings", "validate_device"]

#: Longest accepted user id, in characters.
USER_ID_MAX_CHARS = 128
#: Longest accepted app id (APNs topic / Android package name), in characters.
APP_ID_MAX_CHARS = 255


class DeviceValidationError(ValueError):
    """A registration argument is invalid. ``field`` names the argument."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Device:
    """One app install that can receive pushes."""

    user_id: str
    #: The platform of a registered push provider: "ios", "android", …
    platform: str
    token: str
    #: APNs topic (bundle id) for iOS, package name for Android.
    app_id: str

    @property
    def token_hash(self) -> str:
        """Who this device is in logs (see :func:`willowe_tasks.tokens.token_hash`)."""
        return token_hash(self.token)

    def __repr__(self) -> str:
        # The default repr would print the token into any log line or
        # traceback that shows a Device.
        return (
            f"Device(user_id={self.user_id!r}, platform={self.platform!r}, "
            f"token=<{self.token_hash}>, app_id={self.app_id!r})"
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
    """Check registration arguments and return the canonical :class:`Device`
    (its token spelled as its provider wants: iOS tokens lower-cased, say).
    Error messages never contain the token itself."""
    # No whitespace, as in the notifications' user ids (payloads.UserId): a
    # phone registered under "user 1" could never be sent a notification.
    _check_text("user_id", user_id, USER_ID_MAX_CHARS, allow_spaces=False)
    try:
        spec = provider_for(platform) if isinstance(platform, str) else None
    except ValueError:
        spec = None
    if spec is None:
        known = ", ".join(p.platform for p in providers())
        # The value is not echoed: arguments given in the wrong order would put
        # a device token into the error, and errors reach logs and dead letters.
        raise DeviceValidationError("platform", f"must be one of {known}")
    _check_text("app_id", app_id, APP_ID_MAX_CHARS, allow_spaces=False)
    if not isinstance(token, str):
        raise DeviceValidationError("token", f"must be a string, got {type(token).__name__}")
    try:
        canonical = spec.canonical_token(token)
    except ValueError as e:
        raise DeviceValidationError("token", str(e)) from None
    return Device(user_id=user_id, platform=platform, token=canonical, app_id=app_id)


def invalid_reason(provider: str, reason: str) -> str:
    """How a provider's rejection is recorded: ``apns:Unregistered``."""
    return f"{provider}:{reason}"


def stored_spellings(token: str) -> list[tuple[str, str]]:
    """``(token, platform)`` as each provider that accepts ``token`` stores it."""
    found = []
    for spec in providers():
        try:
            found.append((spec.canonical_token(token), spec.platform))
        except ValueError:
            continue
    return found


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
