"""How big a push is for each provider, against that provider's limit.

Measured with the same builders the clients send with, so a notification
``send()`` accepts is one the providers accept too (a bigger one would only be
dead-lettered by the worker, after iOS or Android may already have had it).
Sizes are UTF-8 bytes of the JSON the provider counts, never characters: a
Cyrillic letter is two bytes, an emoji four.
"""

from __future__ import annotations

from dataclasses import dataclass

from willowe_tasks.delivery.apns_payload import MAX_PAYLOAD_BYTES, apns_payload
from willowe_tasks.delivery.fcm_message import MAX_MESSAGE_BYTES, fcm_message, fcm_payload_bytes
from willowe_tasks.delivery.push import Push

__all__ = ["PushSize", "push_sizes"]


@dataclass(frozen=True)
class PushSize:
    provider: str
    size_bytes: int
    limit_bytes: int

    @property
    def fits(self) -> bool:
        return self.size_bytes <= self.limit_bytes


def push_sizes(push: Push) -> list[PushSize]:
    """``push``'s size for APNs and for FCM, each with its limit."""
    return [
        PushSize("apns", len(apns_payload(push)), MAX_PAYLOAD_BYTES),
        PushSize("fcm", fcm_payload_bytes(fcm_message(push)), MAX_MESSAGE_BYTES),
    ]
