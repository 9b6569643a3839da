"""The priority bands: the one table that says what "high", "medium" and "low"
mean everywhere.

Each band is the guide's word, the Dramatiq actor priorities it covers, the
Kafka topic its messages go to (with the topic's shape), and the priority each
push provider is asked for. The broker's priority queues, the kinds, the
payload models (``sendMessage``'s third argument) and the providers all read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from broker.topics import TopicSpec

__all__ = ["BANDS", "HIGH", "LOW", "MEDIUM", "PriorityBand", "PriorityName", "band",
           "band_for_actor_priority"]

#: The guide's priority words.
PriorityName = Literal["high", "medium", "low"]

_HOUR_MS = 3600 * 1000
_DAY_MS = 24 * _HOUR_MS

#: Dramatiq actor priorities (lower runs first) at the top of each band.
HIGH = 0
MEDIUM = 50
LOW = 100

#: Copies of every notification topic: three brokers each hold one.
REPLICATION_FACTOR = 3

#: Copies an acks=all send waits for: one broker may be down while sends go
#: on, and no acknowledged message lives on one disk alone. `make topics`
#: lowers both to what a smaller cluster can do (one broker: 1 and 1, with a
#: warning); see broker.replication.
MIN_INSYNC_REPLICAS = 2


@dataclass(frozen=True)
class PriorityBand:
    word: PriorityName
    #: The highest Dramatiq actor priority in the band (lower numbers run first).
    actor_priority: int
    topic: TopicSpec
    #: ``apns-priority``: 10 delivers now, 5 when it saves the phone's power.
    apns_priority: Literal["10", "5"]
    #: ``android.priority``: FCM knows only "high" and "normal".
    fcm_priority: Literal["high", "normal"]


def _topic(name: str, partitions: int, retention_ms: int) -> TopicSpec:
    return TopicSpec(name, partitions=partitions, retention_ms=retention_ms,
                     replication_factor=REPLICATION_FACTOR,
                     min_insync_replicas=MIN_INSYNC_REPLICAS)


#: Most urgent first. An actor's priority falls in the first band whose
#: ``actor_priority`` is at least it; anything above the last goes to the last.
BANDS: tuple[PriorityBand, ...] = (
    PriorityBand("high", HIGH, _topic("high-priority-notifications", 3, _DAY_MS), "10", "high"),
    PriorityBand("medium", MEDIUM, _topic("medium-priority-notifications", 5, 7 * _DAY_MS),
                 "10", "normal"),
    PriorityBand("low", LOW, _topic("low-priority-notifications", 2, 30 * _DAY_MS),
                 "5", "normal"),
)

_BY_WORD = {b.word: b for b in BANDS}


def band(word: str) -> PriorityBand:
    """The band of a priority word; ValueError naming the words for any other."""
    try:
        return _BY_WORD[word]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"priority must be one of {', '.join(_BY_WORD)}, got {word!r}") from None


def band_for_actor_priority(priority: int) -> PriorityBand:
    """The band an actor of this Dramatiq priority belongs to."""
    return next((b for b in BANDS if priority <= b.actor_priority), BANDS[-1])
