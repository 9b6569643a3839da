"""What FCM HTTP v1 accepts in a ``messages:send`` body, and what a phone gets from it.

The rules a sender plausibly breaks, each with the limit from Google's own
documentation (REST reference of ``projects.messages``, "FCM error codes",
"Setting the lifespan of a message", "Firebase Cloud Messaging message types").
A broken rule raises :class:`InvalidMessage`, which the fake answers as Google
does: ``400 INVALID_ARGUMENT`` naming the field. Platform blocks for iOS and the
web (``apns``, ``webpush``) are only checked to be objects.
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn
from urllib.parse import urlsplit

#: "The value must be a duration from 0 to 2,419,200 seconds (28 days)" (Setting
#: the lifespan of a message); "The maximum time to live supported is 4 weeks"
#: (REST reference, AndroidConfig.ttl).
MAX_TTL_S = 2_419_200

#: "Requests that don't contain this field default to the maximum period of
#: four weeks" (Setting the lifespan of a message).
DEFAULT_TTL_S = MAX_TTL_S

#: "Check that the total size of the payload data included in a message does not
#: exceed FCM limits: 4096 bytes for most messages, or 2048 bytes in the case of
#: messages to topics. This includes both the keys and the values." (FCM error
#: codes, INVALID_ARGUMENT, "Message too big"); "Maximum payload for both message
#: types is 4096 bytes" (message types). Google does not spell out the count
#: further; the fake counts the UTF-8 bytes of every key and value a device
#: receives: the data (``message.data`` under ``android.data``) and the
#: notification fields (``message.notification`` under ``android.notification``).
MAX_MESSAGE_BYTES = 4096

#: The same limit for a message sent to a topic or condition (see above).
MAX_TOPIC_MESSAGE_BYTES = 2048

#: What Google answers for a message over the limit.
TOO_BIG = "Android message is too big"

#: ``data`` keys FCM keeps for itself: "The key should not be a reserved word
#: ("from", "message_type", or any word starting with "google" or "gcm")" (REST
#: reference, Message.data); the legacy API also reserved "notification".
RESERVED_DATA_KEYS = frozenset({"from", "notification", "message_type"})

#: Prefixes of reserved ``data`` keys (see above).
RESERVED_DATA_KEY_PREFIXES = ("google", "gcm")

#: ``AndroidConfig.priority`` values (REST reference, AndroidMessagePriority).
ANDROID_PRIORITIES = frozenset({"normal", "high", "NORMAL", "HIGH"})

#: ``AndroidNotification.notification_priority`` values (NotificationPriority).
NOTIFICATION_PRIORITIES = frozenset(
    {"PRIORITY_UNSPECIFIED", "PRIORITY_MIN", "PRIORITY_LOW", "PRIORITY_DEFAULT",
     "PRIORITY_HIGH", "PRIORITY_MAX"}
)

#: ``AndroidNotification.visibility`` values (Visibility).
VISIBILITIES = frozenset({"VISIBILITY_UNSPECIFIED", "PRIVATE", "PUBLIC", "SECRET"})

#: ``AndroidNotification.proxy`` values (Proxy).
PROXIES = frozenset({"PROXY_UNSPECIFIED", "ALLOW", "DENY", "IF_PRIORITY_LOWERED"})

_DURATION = re.compile(r"(\d{1,10})(?:\.(\d{1,9}))?s")
_REGISTRATION_TOKEN = re.compile(r"[A-Za-z0-9_:\-]{1,4096}")
#: Topic names: "[a-zA-Z0-9-_.~%]+" (REST reference, Message.topic, without "/topics/").
_TOPIC = re.compile(r"[a-zA-Z0-9\-_.~%]{1,900}")
#: "#rrggbb" (REST reference, AndroidNotification.color).
_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
#: Analytics labels: "^[a-zA-Z0-9-_.~%]{1,50}$" (REST reference, FcmOptions).
_ANALYTICS_LABEL = re.compile(r"[a-zA-Z0-9\-_.~%]{1,50}")
#: RFC 3339 UTC timestamps, as protobuf's JSON mapping writes them.
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")

_TOP_LEVEL_FIELDS = frozenset({"message", "validate_only"})
_MESSAGE_FIELDS = frozenset(
    {"name", "data", "notification", "android", "webpush", "apns", "fcm_options", "token",
     "topic", "condition"}
)
_NOTIFICATION_FIELDS = frozenset({"title", "body", "image"})
_ANDROID_FIELDS = frozenset(
    {"collapse_key", "priority", "ttl", "restricted_package_name", "data", "notification",
     "fcm_options", "direct_boot_ok"}
)
_ANDROID_STRINGS = frozenset(
    {"title", "body", "icon", "color", "sound", "tag", "click_action", "body_loc_key",
     "title_loc_key", "channel_id", "ticker", "image", "event_time"}
)
_ANDROID_STRING_LISTS = frozenset({"body_loc_args", "title_loc_args", "vibrate_timings"})
_ANDROID_BOOLS = frozenset(
    {"sticky", "local_only", "default_sound", "default_vibrate_timings",
     "default_light_settings", "bypass_proxy_notification"}
)
_ANDROID_ENUMS = {
    "notification_priority": NOTIFICATION_PRIORITIES,
    "visibility": VISIBILITIES,
    "proxy": PROXIES,
}
_ANDROID_NOTIFICATION_FIELDS = (
    _ANDROID_STRINGS | _ANDROID_STRING_LISTS | _ANDROID_BOOLS | frozenset(_ANDROID_ENUMS)
    | frozenset({"notification_count", "light_settings"})
)


class InvalidMessage(Exception):
    """A message Google refuses with ``400 INVALID_ARGUMENT``."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def validate(body: Any) -> None:
    """Raise :class:`InvalidMessage` if Google would refuse ``body``."""
    if not isinstance(body, dict):
        raise InvalidMessage("Invalid JSON payload received.")
    _no_unknown_fields(body, _TOP_LEVEL_FIELDS, "")
    if not isinstance(body.get("validate_only", False), bool):
        _wrong_type("validate_only", "TYPE_BOOL")
    message = body.get("message")
    if not isinstance(message, dict):
        raise InvalidMessage("Request contains an invalid argument.", "message")
    _no_unknown_fields(message, _MESSAGE_FIELDS, "message")
    targets = [key for key in ("token", "topic", "condition") if key in message]
    if len(targets) != 1:
        raise InvalidMessage("Exactly one of token, topic or condition must be set.", "message")
    if "token" in message:
        token = message["token"]
        if not isinstance(token, str) or not _REGISTRATION_TOKEN.fullmatch(token):
            raise InvalidMessage(
                "The registration token is not a valid FCM registration token", "message.token"
            )
    if "topic" in message:
        topic = message["topic"]
        if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
            raise InvalidMessage("Invalid topic name.", "message.topic")
    _validate_data(message.get("data"), "message.data")
    notification = message.get("notification")
    if notification is not None:
        _validate_notification(notification)
    android = message.get("android")
    if android is not None:
        _validate_android(android)
    for platform in ("apns", "webpush", "fcm_options"):
        if platform in message and not isinstance(message[platform], dict):
            raise InvalidMessage(f"Invalid value at 'message.{platform}'.", f"message.{platform}")
    _validate_fcm_options(message.get("fcm_options"), "message.fcm_options")
    limit = MAX_MESSAGE_BYTES if "token" in message else MAX_TOPIC_MESSAGE_BYTES
    if payload_bytes(message) > limit:
        raise InvalidMessage(TOO_BIG, "message")


def payload_bytes(message: dict[str, Any]) -> int:
    """The size FCM's limit applies to: keys and values of what a device receives
    (see :data:`MAX_MESSAGE_BYTES`)."""
    android = message.get("android") or {}
    data = {**(message.get("data") or {}), **(android.get("data") or {})}
    notification = {**(message.get("notification") or {}), **(android.get("notification") or {})}
    return sum(_size(key) + _size(value) for key, value in (*data.items(), *notification.items()))


def ttl_s(message: dict[str, Any]) -> float:
    """Seconds FCM keeps ``message`` for an offline device (of a valid message)."""
    ttl = (message.get("android") or {}).get("ttl")
    match = _DURATION.fullmatch(ttl) if isinstance(ttl, str) else None
    if match is None:
        return DEFAULT_TTL_S
    return int(match.group(1)) + float(f"0.{match.group(2) or 0}")


def _size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, list):
        return sum(_size(item) for item in value)
    return len(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _validate_notification(notification: Any) -> None:
    path = "message.notification"
    _object_of(notification, _NOTIFICATION_FIELDS, path)
    for key, value in notification.items():
        if not isinstance(value, str):
            _wrong_type(f"{path}.{key}", "TYPE_STRING")
    _check_image(notification.get("image"), f"{path}.image")


def _check_image(image: str | None, path: str) -> None:
    # "Contains the URL of an image that is going to be downloaded on the device"
    # (REST reference, Notification.image); Firebase's Admin SDKs refuse anything
    # but an http(s) URL before sending.
    if image is None:
        return
    parts = urlsplit(image)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidMessage(f"Invalid value at '{path}': the image must be an http(s) URL.", path)


def _validate_android(android: Any) -> None:
    _object_of(android, _ANDROID_FIELDS, "message.android")
    priority = android.get("priority")
    if priority is not None and priority not in ANDROID_PRIORITIES:
        _wrong_enum("message.android.priority", "AndroidMessagePriority")
    _validate_ttl(android.get("ttl"))
    for key in ("collapse_key", "restricted_package_name"):
        if key in android and not isinstance(android[key], str):
            _wrong_type(f"message.android.{key}", "TYPE_STRING")
    if "direct_boot_ok" in android and not isinstance(android["direct_boot_ok"], bool):
        _wrong_type("message.android.direct_boot_ok", "TYPE_BOOL")
    _validate_data(android.get("data"), "message.android.data")
    notification = android.get("notification")
    if notification is not None:
        _validate_android_notification(notification)
    _validate_fcm_options(android.get("fcm_options"), "message.android.fcm_options")


def _validate_ttl(ttl: Any) -> None:
    if ttl is None:
        return
    path = "message.android.ttl"
    match = _DURATION.fullmatch(ttl) if isinstance(ttl, str) else None
    if match is None:
        raise InvalidMessage(
            f"Invalid value at '{path}' (type.googleapis.com/google.protobuf.Duration), "
            "Field 'ttl', Illegal duration format; duration must end with 's'",
            path,
        )
    seconds, fraction = int(match.group(1)), (match.group(2) or "").strip("0")
    if seconds > MAX_TTL_S or (seconds == MAX_TTL_S and fraction):
        raise InvalidMessage(
            f"Invalid value at '{path}': the maximum time to live is {MAX_TTL_S}s (4 weeks).",
            path,
        )


def _validate_android_notification(notification: Any) -> None:
    path = "message.android.notification"
    _object_of(notification, _ANDROID_NOTIFICATION_FIELDS, path)
    for key, value in notification.items():
        where = f"{path}.{key}"
        if key in _ANDROID_STRINGS and not isinstance(value, str):
            _wrong_type(where, "TYPE_STRING")
        elif key in _ANDROID_BOOLS and not isinstance(value, bool):
            _wrong_type(where, "TYPE_BOOL")
        elif key in _ANDROID_STRING_LISTS and (
            not isinstance(value, list) or not all(isinstance(item, str) for item in value)
        ):
            _wrong_type(where, "TYPE_STRING")
        elif key in _ANDROID_ENUMS and value not in _ANDROID_ENUMS[key]:
            _wrong_enum(where, key)
        elif key == "notification_count" and type(value) is not int:
            _wrong_type(where, "TYPE_INT32")
        elif key == "light_settings" and not isinstance(value, dict):
            raise InvalidMessage(f"Invalid value at '{where}'.", where)
    color = notification.get("color")
    if color is not None and not _COLOR.fullmatch(color):
        raise InvalidMessage(f"Invalid value at '{path}.color': expected #rrggbb.", f"{path}.color")
    for timing in notification.get("vibrate_timings") or ():
        if not _DURATION.fullmatch(timing):
            _wrong_type(f"{path}.vibrate_timings", "type.googleapis.com/google.protobuf.Duration")
    event_time = notification.get("event_time")
    if event_time is not None and not _TIMESTAMP.fullmatch(event_time):
        _wrong_type(f"{path}.event_time", "type.googleapis.com/google.protobuf.Timestamp")
    _check_image(notification.get("image"), f"{path}.image")


def _validate_fcm_options(options: Any, path: str) -> None:
    if options is None:
        return
    _object_of(options, frozenset({"analytics_label"}), path)
    label = options.get("analytics_label")
    if label is not None and (not isinstance(label, str) or not _ANALYTICS_LABEL.fullmatch(label)):
        raise InvalidMessage("Invalid analytics label.", f"{path}.analytics_label")


def _validate_data(data: Any, path: str) -> None:
    if data is None:
        return
    if not isinstance(data, dict):
        raise InvalidMessage(f"Invalid value at '{path}'.", path)
    for index, (key, value) in enumerate(data.items()):
        if not isinstance(value, str):
            _wrong_type(f"{path}[{index}].value", "TYPE_STRING", field=path)
        lowered = key.lower()
        if lowered in RESERVED_DATA_KEYS or lowered.startswith(RESERVED_DATA_KEY_PREFIXES):
            raise InvalidMessage(f"Invalid data payload key: {key}", path)


def _object_of(value: Any, allowed: frozenset[str], path: str) -> None:
    """``value`` must be a JSON object with no fields but ``allowed``."""
    if not isinstance(value, dict):
        raise InvalidMessage(f"Invalid value at '{path}'.", path)
    _no_unknown_fields(value, allowed, path)


def _no_unknown_fields(value: dict[str, Any], allowed: frozenset[str], path: str) -> None:
    for key in value:
        if key not in allowed:
            where = f" at '{path}'" if path else ""
            raise InvalidMessage(
                f'Invalid JSON payload received. Unknown name "{key}"{where}: Cannot find field.',
                path or None,
            )


# Google echoes the offending value; the fake does not, because values are
# message content and errors end up in logs.
def _wrong_type(path: str, expected: str, *, field: str | None = None) -> NoReturn:
    raise InvalidMessage(f"Invalid value at '{path}' ({expected}).", field or path)


def _wrong_enum(path: str, enum: str) -> NoReturn:
    raise InvalidMessage(f"Invalid value at '{path}' ({enum}).", path)
