"""What each notification carries: pydantic models, validated at ``send()``
and again in the worker (another producer may have written the record).

Field names follow Python; the integration guide's camelCase names
(``photoUrl``, ``targetUserId``, ``userId``) are accepted too.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, StringConstraints, field_validator

__all__ = [
    "AnalyticsEvent",
    "CustomNotification",
    "LikePayload",
    "MatchPayload",
    "ObjectId",
    "UserId",
]

#: A user id as the web app knows it: printable, no whitespace.
UserId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^\S+$")]

#: Largest analytics properties object, in bytes of JSON; events are not blobs.
MAX_ANALYTICS_PROPERTIES_BYTES = 8192

#: An id the app uses to open a screen (a match, a chat): printable, no whitespace.
ObjectId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^\S+$")]

#: Most keys a custom notification may carry to the phone as data.
MAX_CUSTOM_DATA_KEYS = 16

#: A custom data key: lower-case snake case, as the other keys of a push's data.
_DATA_KEY = r"^[a-z][a-z0-9_]{0,63}$"

#: Data keys the push itself uses (see willowe_tasks.dispatch), and keys FCM
#: reserves ("from", "message_type", anything starting with "google" or "gcm").
RESERVED_DATA_KEYS = frozenset({"kind", "notification_id", "image_url", "aps", "from",
                                "message_type", "notification"})
RESERVED_DATA_PREFIXES = ("google", "gcm")


class _Payload(BaseModel):
    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, str_strip_whitespace=True, frozen=True,
    )


class LikePayload(_Payload):
    """Who liked you: their name and age."""

    name: str = Field(min_length=1, max_length=100)
    age: int = Field(ge=18, le=120)
    #: The user who liked (matched, …): the app opens their profile.
    sender_id: UserId | None = Field(None, alias="senderId")


class MatchPayload(LikePayload):
    """Who you matched with; also used by fast match and one night."""

    photo_url: HttpUrl | None = Field(None, alias="photoUrl")
    #: The match: the app opens its conversation.
    match_id: ObjectId | None = Field(None, alias="matchId")


class CustomNotification(_Payload):
    """A notification written by the caller (the guide's sendMessage)."""

    type: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    target_user_id: UserId = Field(alias="targetUserId")
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=2000)
    #: How long it stays worth delivering; default: its topic's retention.
    ttl_s: int | None = Field(None, ge=1, le=30 * 24 * 3600)
    #: What the app needs to open the right screen (a chat id, say), as strings.
    data: dict[str, Annotated[str, StringConstraints(max_length=1024)]] | None = None

    @field_validator("data")
    @classmethod
    def _data_keys(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > MAX_CUSTOM_DATA_KEYS:
            raise ValueError(f"at most {MAX_CUSTOM_DATA_KEYS} keys")
        for key in value:
            if not re.fullmatch(_DATA_KEY, key):
                raise ValueError(f"key {key!r} must match {_DATA_KEY}")
            if key in RESERVED_DATA_KEYS or key.startswith(RESERVED_DATA_PREFIXES):
                raise ValueError(f"key {key!r} is reserved")
        return value


class AnalyticsEvent(_Payload):
    """An analytics event such as ``user_login``: a name and free-form properties."""

    event: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    properties: dict[str, Any] = Field(default_factory=dict)

    @field_validator("properties")
    @classmethod
    def _small_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        import json

        try:
            encoded = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"must be JSON-serialisable: {e}") from None
        if len(encoded.encode()) > MAX_ANALYTICS_PROPERTIES_BYTES:
            raise ValueError(f"must be at most {MAX_ANALYTICS_PROPERTIES_BYTES} bytes of JSON")
        return value
