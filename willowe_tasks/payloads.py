"""What each notification carries: pydantic models, validated at ``send()``
and again in the worker (another producer may have written the record).

Field names follow Python; the integration guide's camelCase names
(``photoUrl``, ``targetUserId``, ``userId``) are accepted too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, StringConstraints, field_validator

__all__ = [
    "AnalyticsEvent",
    "CustomNotification",
    "LikePayload",
    "MatchPayload",
    "PriorityName",
    "UserId",
]

#: A user id as the web app knows it: printable, no whitespace.
UserId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^\S+$")]

#: The guide's priority words (sendMessage's third argument).
PriorityName = Literal["high", "medium", "low"]

#: Largest analytics properties object, in bytes of JSON; events are not blobs.
MAX_ANALYTICS_PROPERTIES_BYTES = 8192


class _Payload(BaseModel):
    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, str_strip_whitespace=True, frozen=True,
    )


class LikePayload(_Payload):
    """Who liked you: their name and age."""

    name: str = Field(min_length=1, max_length=100)
    age: int = Field(ge=18, le=120)


class MatchPayload(LikePayload):
    """Who you matched with; also used by fast match and one night."""

    photo_url: HttpUrl | None = Field(None, alias="photoUrl")


class CustomNotification(_Payload):
    """A notification written by the caller (the guide's sendMessage)."""

    type: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    target_user_id: UserId = Field(alias="targetUserId")
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=2000)
    #: How long it stays worth delivering; default: its topic's retention.
    ttl_s: int | None = Field(None, ge=1, le=30 * 24 * 3600)


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
