"""One notification to one device, in terms both providers understand.

A :class:`Push` is what an actor hands to :class:`~willowe_tasks.providers.apns.client.APNsClient`
or :class:`~willowe_tasks.providers.fcm.client.FCMClient`. It is provider-neutral; each client
maps it to its own wire format (priority numbers, TTL strings, collapse headers).

Device tokens, titles, bodies and data are kept out of ``repr()`` because they are
secrets or personal data and a ``Push`` easily ends up in a log line or a traceback.
Use :attr:`Push.token_hash` when a log needs to say which device was meant.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, get_args

from willowe_tasks.priorities import PriorityName
from willowe_tasks.tokens import token_hash

PushType = Literal["alert", "background"]

#: APNs rejects an ``apns-collapse-id`` longer than this (UTF-8 bytes).
MAX_COLLAPSE_ID_BYTES = 64

@dataclass(frozen=True, slots=True)
class Push:
    """One notification for one device.

    ``expires_at`` is a unix time in seconds: the remaining time becomes
    ``apns-expiration`` (APNs) and ``android.ttl`` (FCM, capped at its limit).
    ``collapse_id`` is derived by the caller from the notification id, so a
    redelivered notification replaces the first one on the phone instead of showing
    twice (``apns-collapse-id`` on iOS, ``android.notification.tag`` on Android; not
    FCM's ``collapse_key``, which would also make FCM drop stored notifications of an
    offline phone). ``topic`` is the APNs bundle id and falls back to the client's
    default; FCM ignores it. ``image_url`` is shown as a rich-notification picture
    where the platform can (FCM ``notification.image``; APNs ``mutable-content`` with
    the URL in the payload for the app's notification service extension).
    ``sound`` is played with an alert (``"default"``: the system sound).

    Raises :class:`ValueError` on construction for values no provider would accept,
    so a programming error fails in the caller rather than as a delivery error.
    """

    token: str = field(repr=False)
    title: str | None = field(repr=False)
    body: str | None = field(repr=False)
    data: dict[str, str] = field(repr=False)
    priority: PriorityName
    expires_at: float
    collapse_id: str
    push_type: PushType = "alert"
    topic: str | None = None
    image_url: str | None = field(default=None, repr=False)
    sound: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.token, str) or not self.token:
            raise ValueError("Push.token must be a non-empty string")
        if self.priority not in get_args(PriorityName):
            raise ValueError(f"Push.priority must be one of {get_args(PriorityName)}")
        if self.push_type not in get_args(PushType):
            raise ValueError(f"Push.push_type must be one of {get_args(PushType)}")
        if not self.collapse_id:
            raise ValueError("Push.collapse_id must not be empty")
        if len(self.collapse_id.encode("utf-8")) > MAX_COLLAPSE_ID_BYTES:
            raise ValueError(f"Push.collapse_id must be at most {MAX_COLLAPSE_ID_BYTES} bytes")
        if self.image_url is not None and not self.image_url.startswith("https://"):
            # Both platforms fetch the picture over HTTPS only (iOS App Transport
            # Security; Android's notification image loader).
            raise ValueError("Push.image_url must be an https:// URL")
        for key, value in self.data.items():
            # FCM rejects any non-string data value; checking here keeps both
            # providers' payloads identical and the error in the caller's frame.
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError(f"Push.data must map str to str (key {key!r} does not)")

    @property
    def token_hash(self) -> str:
        """Who the device is in logs (see :func:`willowe_tasks.tokens.token_hash`)."""
        return token_hash(self.token)

    def ttl_s(self, now: float | None = None) -> int:
        """Whole seconds left until ``expires_at``.

        0 once it has passed, which both providers read as "deliver now or never"
        rather than "store and retry".
        """
        current = time.time() if now is None else now
        return max(0, int(self.expires_at - current))
