"""The kinds of notification: priority, payload model, lifetime, wording and
what the phone gets besides the text.

One table, read by the actors (topic, validation, expiry) and the delivery
code (title, body, data, picture). Lifetimes: a notification that starts work
after its lifetime is dropped and counted, never pushed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from willowe_tasks.payloads import LikePayload, MatchPayload
from willowe_tasks.priorities import BANDS, PriorityBand, band

__all__ = ["KINDS", "NotificationKind", "longest_lifetime_s"]


@dataclass(frozen=True)
class NotificationKind:
    name: str
    band: PriorityBand
    payload: type[BaseModel]
    #: Seconds after sending during which the notification is still worth a push.
    ttl_s: int
    title: Callable[[Any], str]
    body: Callable[[Any], str]
    #: Payload fields the phone gets as data (strings), so the app can open the
    #: right screen; a field left out of the payload is left out of the push.
    data_fields: tuple[str, ...] = ()
    #: Payload field holding a picture URL, shown as a rich notification.
    image_field: str | None = None


def _retention_s(word: str) -> int:
    return band(word).topic.retention_ms // 1000


def _who(p: Any) -> str:
    return f"{p.name}, {p.age}"


#: What a match-like push carries: whose profile, and which conversation.
_MATCH_DATA = ("sender_id", "match_id")


#: Every kind an actor sends. Lifetimes: a match is stale after its topic's
#: retention; a fast match is only fast for a quarter of an hour.
KINDS: dict[str, NotificationKind] = {
    kind.name: kind
    for kind in (
        NotificationKind("match", band("high"), MatchPayload, _retention_s("high"),
                         lambda p: "У вас новый мэтч! 💘", _who, _MATCH_DATA, "photo_url"),
        NotificationKind("fast_match", band("high"), MatchPayload, 15 * 60,
                         lambda p: "Быстрый мэтч ⚡", _who, _MATCH_DATA, "photo_url"),
        NotificationKind("like", band("medium"), LikePayload, _retention_s("medium"),
                         lambda p: "Вам поставили лайк ❤️", _who, ("sender_id",)),
        NotificationKind("one_night", band("medium"), MatchPayload, 6 * 3600,
                         lambda p: "One Night 🌙", _who, _MATCH_DATA, "photo_url"),
    )
}



def longest_lifetime_s() -> int:
    """The longest any notification may wait to be pushed: a kind's lifetime, or
    a custom notification's default (its topic's retention)."""
    return max([kind.ttl_s for kind in KINDS.values()]
               + [b.topic.retention_ms // 1000 for b in BANDS])
