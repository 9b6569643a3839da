"""What FCM receives for a :class:`~willowe_tasks.providers.push.Push`: the HTTP v1
``message`` object.

A pure function of the push, with no HTTP client behind it, so that ``send()``
can measure a notification with the very code the worker later sends it with
(see :mod:`willowe_tasks.providers.base`).

Rules taken from Firebase's "REST Resource: projects.messages" (AndroidConfig,
AndroidNotification) and "About FCM messages".
"""

from __future__ import annotations

import json
from typing import Any

from willowe_tasks.priorities import band
from willowe_tasks.providers.push import Push

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_TTL_S",
    "encode_request",
    "encode_request_sized",
    "fcm_message",
    "fcm_payload_bytes",
]

#: AndroidConfig.ttl: "The maximum time to live supported is 4 weeks" (2,419,200 s);
#: a longer ttl is refused with 400 INVALID_ARGUMENT. A notification that may wait
#: longer (a low-priority custom one lives as long as its topic, 30 days) is still
#: pushed by the workers until its own deadline; FCM keeps it for 28 days at most.
MAX_TTL_S = 28 * 24 * 3600

#: "The maximum payload for both message types is 4096 bytes". Counted here as the
#: whole message without its target token, a little more than FCM itself counts,
#: so a message that passes here also passes there.
MAX_MESSAGE_BYTES = 4096


def fcm_message(push: Push, *, now: float | None = None) -> dict[str, Any]:
    """The ``message`` of a ``messages:send`` request for ``push``.

    No ``collapse_key``: while a phone is offline FCM keeps at most four collapse
    keys for it, with no promise which, so one key per notification would lose
    all but four of a night's likes. Every notification is non-collapsible (FCM
    stores up to 100 for an offline phone); the ``tag`` keeps a redelivered
    notification from showing twice on screen.
    """
    ttl_s = min(push.ttl_s(now), MAX_TTL_S)
    android: dict[str, Any] = {"priority": band(push.priority).fcm_priority, "ttl": f"{ttl_s}s"}
    message: dict[str, Any] = {"token": push.token}
    if push.data:
        message["data"] = dict(push.data)
    if push.push_type == "alert":
        notification = {key: value for key, value in (("title", push.title), ("body", push.body))
                        if value}
        if push.image_url:
            notification["image"] = push.image_url
        if notification:
            message["notification"] = notification
        # The tag makes a redelivered notification replace the first one on the
        # phone; a background (data-only) push has nothing to replace.
        android_notification = {"tag": push.collapse_id}
        if push.sound:
            android_notification["sound"] = push.sound
        android["notification"] = android_notification
    message["android"] = android
    return message


def fcm_payload_bytes(message: dict[str, Any]) -> int:
    """Bytes of ``message`` that count against :data:`MAX_MESSAGE_BYTES`."""
    return len(_counted(message))


def encode_request(message: dict[str, Any]) -> bytes:
    """The request body for ``messages:send``."""
    return _compact({"message": message})


def encode_request_sized(message: dict[str, Any]) -> tuple[bytes, int]:
    """:func:`encode_request` and :func:`fcm_payload_bytes` from one JSON
    encoding: the worker needs both for every push."""
    counted = _counted(message)
    if "token" not in message:
        return b'{"message":' + counted + b"}", len(counted)
    # The counted object is "{...}": the token goes in right after its brace.
    token = b'"token":' + _compact(message["token"]) + (b"," if counted != b"{}" else b"")
    return b'{"message":{' + token + counted[1:] + b"}", len(counted)


def _counted(message: dict[str, Any]) -> bytes:
    """The JSON of ``message`` without its token: what FCM counts."""
    return _compact({key: value for key, value in message.items() if key != "token"})


def _compact(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
