"""What APNs receives for a :class:`~willowe_tasks.providers.push.Push`: the JSON
payload and the request headers.

Pure functions of the push, with no HTTP client behind them, so that ``send()``
can measure a notification with the very code the worker later sends it with
(see :mod:`willowe_tasks.providers.base`).

Rules taken from Apple's "Generating a remote notification" and "Sending
notification requests to APNs".
"""

from __future__ import annotations

import json
import time

from willowe_tasks.priorities import band
from willowe_tasks.providers.errors import PermanentDeliveryError
from willowe_tasks.providers.push import Push

__all__ = [
    "BACKGROUND_PRIORITY",
    "IMAGE_URL_KEY",
    "MAX_PAYLOAD_BYTES",
    "apns_headers",
    "apns_payload",
]

#: Apple's limit on the JSON payload of a regular (non-VoIP) notification, in
#: bytes: "For regular remote notifications, the maximum size is 4KB (4096 bytes)".
MAX_PAYLOAD_BYTES = 4096

#: Background (content-available) pushes must use this priority; Apple rejects 10.
BACKGROUND_PRIORITY = "5"

#: Payload key beside ``aps`` that carries a rich notification's picture for the
#: app's notification service extension (which ``mutable-content`` wakes up).
IMAGE_URL_KEY = "image_url"


def apns_payload(push: Push) -> bytes:
    """The JSON body of the request, UTF-8 encoded (what Apple's limit counts)."""
    if "aps" in push.data or IMAGE_URL_KEY in push.data:
        raise PermanentDeliveryError(
            "BadPayload", provider="apns",
            detail=f"data must not use the keys 'aps' or {IMAGE_URL_KEY!r}",
        )
    aps: dict[str, object] = {}
    extra: dict[str, str] = {}
    if push.push_type == "background":
        aps["content-available"] = 1
    else:
        alert = {key: value for key, value in (("title", push.title), ("body", push.body))
                 if value}
        if alert:
            aps["alert"] = alert
        if push.sound:
            aps["sound"] = push.sound
        if push.image_url:
            # The system lets the app's service extension fetch the picture and
            # attach it before the alert shows; APNs itself carries only the URL.
            aps["mutable-content"] = 1
            extra[IMAGE_URL_KEY] = push.image_url
    body = {"aps": aps, **push.data, **extra}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def apns_headers(push: Push, *, default_topic: str, now: float | None = None) -> dict[str, str]:
    """The ``apns-*`` headers of the request (authorization aside)."""
    if push.push_type == "background":
        priority = BACKGROUND_PRIORITY
    else:
        priority = band(push.priority).apns_priority
    current = time.time() if now is None else now
    # 0 tells APNs "deliver now or never" instead of storing an expired push.
    # Apple documents no upper bound: the whole deadline is passed on.
    expiration = int(push.expires_at) if push.expires_at > current else 0
    return {
        "apns-topic": push.topic or default_topic,
        "apns-push-type": push.push_type,
        "apns-priority": priority,
        "apns-expiration": str(expiration),
        "apns-collapse-id": push.collapse_id,
        "content-type": "application/json",
    }
