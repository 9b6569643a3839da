"""What APNs accepts as a notification payload.

Sizes are Apple's ("Generating a remote notification"): "For Voice over Internet
Protocol (VoIP) notifications, the maximum payload size is 5 KB (5120 bytes).
For all other remote notifications, the maximum payload size is 4 KB (4096
bytes)." Key types are those of the same page's table of ``aps`` keys.

Apple documents no reason string for a payload whose ``aps`` keys have the wrong
type (a device drops or misreads such a notification); the fake refuses it as
``400 BadPayload``, the name it also uses for a body that is not a JSON object,
so a sender's mistake shows up in tests instead of as a silent phone.
"""

from __future__ import annotations

from typing import Any

#: Apple's limit on a notification payload other than VoIP, in bytes.
MAX_PAYLOAD_BYTES = 4096

#: Apple's limit on a VoIP notification payload (``apns-push-type: voip``), in bytes.
MAX_VOIP_PAYLOAD_BYTES = 5120

#: The fake's reason for a payload Apple would not understand (see module doc).
BAD_PAYLOAD = "BadPayload"

#: ``aps`` keys whose value is a string.
APS_STRINGS = frozenset(
    {"thread-id", "category", "target-content-id", "filter-criteria", "event",
     "attributes-type", "input-push-channel", "input-push-token"}
)

#: ``aps`` keys whose value is a number: "Include this key with a value of 1"
#: (content-available, mutable-content), the badge count, Live Activity times.
APS_NUMBERS = frozenset(
    {"content-available", "mutable-content", "badge", "relevance-score", "timestamp",
     "stale-date", "dismissal-date"}
)

#: ``aps`` keys whose value is a dictionary (Live Activities).
APS_DICTS = frozenset({"content-state", "attributes"})

#: ``interruption-level`` values.
INTERRUPTION_LEVELS = frozenset({"passive", "active", "time-sensitive", "critical"})

#: ``aps`` keys that make a phone alert, sound or badge: not for background pushes.
USER_INTERACTION_KEYS = frozenset({"alert", "sound", "badge"})

#: Keys of an ``alert`` dictionary whose value is a string.
ALERT_STRINGS = frozenset(
    {"title", "subtitle", "body", "launch-image", "title-loc-key", "subtitle-loc-key",
     "loc-key", "summary-arg"}
)

#: Keys of an ``alert`` dictionary whose value is an array of strings.
ALERT_STRING_ARRAYS = frozenset({"title-loc-args", "subtitle-loc-args", "loc-args"})


class APNsRejection(Exception):
    """A request APNs refuses, with its status and ``reason``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def max_payload_bytes(push_type: str | None) -> int:
    return MAX_VOIP_PAYLOAD_BYTES if push_type == "voip" else MAX_PAYLOAD_BYTES


def check_payload(body: bytes, payload: Any, truncated: bool, push_type: str | None) -> None:
    """Raise :class:`APNsRejection` as APNs would answer ``body`` (``payload`` is
    its parsed JSON, ``None`` if it is not JSON)."""
    if not body:
        raise APNsRejection(400, "PayloadEmpty")
    if len(body) > max_payload_bytes(push_type) or truncated:
        raise APNsRejection(413, "PayloadTooLarge")
    if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
        raise APNsRejection(400, BAD_PAYLOAD)
    aps = payload["aps"]
    if not _aps_is_well_typed(aps):
        raise APNsRejection(400, BAD_PAYLOAD)
    # "To send a background notification, create a remote notification with an
    # aps dictionary that includes only the content-available key ... the aps
    # dictionary must not contain any keys that would trigger user
    # interactions" (Pushing background updates to your app).
    if push_type == "background" and (
        aps.get("content-available") != 1 or not USER_INTERACTION_KEYS.isdisjoint(aps)
    ):
        raise APNsRejection(400, BAD_PAYLOAD)


def _aps_is_well_typed(aps: dict[str, Any]) -> bool:
    # Keys Apple does not define are ignored by devices, so they pass.
    for key, value in aps.items():
        if key in APS_STRINGS and not isinstance(value, str):
            return False
        if key in APS_NUMBERS and not _is_number(value):
            return False
        if key in APS_DICTS and not isinstance(value, dict):
            return False
    if "alert" in aps and not _alert_is_well_typed(aps["alert"]):
        return False
    if "sound" in aps and not _sound_is_well_typed(aps["sound"]):
        return False
    if "badge" in aps and (not isinstance(aps["badge"], int) or aps["badge"] < 0):
        return False
    if "relevance-score" in aps and not 0 <= aps["relevance-score"] <= 1:
        return False
    level = aps.get("interruption-level")
    return level is None or level in INTERRUPTION_LEVELS


def _alert_is_well_typed(alert: Any) -> bool:
    if isinstance(alert, str):
        return True
    if not isinstance(alert, dict):
        return False
    for key, value in alert.items():
        if key in ALERT_STRINGS and not isinstance(value, str):
            return False
        if key in ALERT_STRING_ARRAYS and not (
            isinstance(value, list) and all(isinstance(item, str) for item in value)
        ):
            return False
    return True


def _sound_is_well_typed(sound: Any) -> bool:
    # A sound file's name, or for critical alerts {"critical": 1, "name": ..., "volume": 0..1}.
    if isinstance(sound, str):
        return True
    if not isinstance(sound, dict):
        return False
    if not isinstance(sound.get("name", ""), str):
        return False
    critical = sound.get("critical", 0)
    if not _is_number(critical) or critical not in (0, 1):
        return False
    volume = sound.get("volume", 0)
    return _is_number(volume) and 0 <= volume <= 1


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
