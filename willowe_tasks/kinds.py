"""The kinds of notification: priority, payload model, lifetime and wording.

One table, read by the actors (topic, validation, expiry) and the delivery
code (title, body, push type). Lifetimes: a notification that starts work
after its lifetime is dropped and counted, never pushed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from willowe_tasks.payloads import LikePayload, MatchPayload, PriorityName
from willowe_tasks.topics import HIGH, LOW, MEDIUM, PRIORITY_TOPICS

__all__ = ["KINDS", "NotificationKind", "PRIORITIES", "retention_s"]

#: The guide's priority words and the actor priorities they stand for.
PRIORITIES: dict[PriorityName, int] = {"high": HIGH, "medium": MEDIUM, "low": LOW}


def retention_s(priority: int) -> int:
    """Retention of the topic an actor of this priority sends to, in seconds."""
    for ceiling, spec in PRIORITY_TOPICS:
        if priority <= ceiling:
            return spec.retention_ms // 1000
    return PRIORITY_TOPICS[-1][1].retention_ms // 1000


@dataclass(frozen=True)
class NotificationKind:
    name: str
    priority: int
    payload: type[BaseModel]
    #: Seconds after sending during which the notification is still worth a push.
    ttl_s: int
    title: Callable[[Any], str]
    body: Callable[[Any], str]

    @property
    def priority_name(self) -> PriorityName:
        return next(word for word, value in PRIORITIES.items() if value == self.priority)


def _who(p: Any) -> str:
    return f"{p.name}, {p.age}"


#: Every kind an actor sends. Lifetimes: a match is stale after its topic's
#: retention; a fast match is only fast for a quarter of an hour.
KINDS: dict[str, NotificationKind] = {
    kind.name: kind
    for kind in (
        NotificationKind("match", HIGH, MatchPayload, retention_s(HIGH),
                         lambda p: "У вас новый мэтч! 💘", _who),
        NotificationKind("fast_match", HIGH, MatchPayload, 15 * 60,
                         lambda p: "Быстрый мэтч ⚡", _who),
        NotificationKind("like", MEDIUM, LikePayload, retention_s(MEDIUM),
                         lambda p: "Вам поставили лайк ❤️", _who),
        NotificationKind("one_night", MEDIUM, MatchPayload, 6 * 3600,
                         lambda p: "One Night 🌙", _who),
    )
}
