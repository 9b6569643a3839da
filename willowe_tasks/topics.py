"""The notification topics of the integration guide, and their priorities.

This table is the one place that names them: the broker's priority bands,
``make topics``, compose.yaml's checks and the tests all read it.
"""

from __future__ import annotations

from broker.topics import TopicSpec

__all__ = ["ALL_TOPIC_SPECS", "HIGH", "LOW", "MEDIUM", "PRIORITY_TOPICS", "topic_for_priority"]

_HOUR_MS = 3600 * 1000
_DAY_MS = 24 * _HOUR_MS

#: Dramatiq actor priorities (lower runs first). An actor's priority picks its
#: topic: ≤ HIGH → high, ≤ MEDIUM → medium, anything above → low.
HIGH = 0
MEDIUM = 50
LOW = 100

#: (highest actor priority in the band, topic spec), most urgent first.
PRIORITY_TOPICS: tuple[tuple[int, TopicSpec], ...] = (
    (HIGH, TopicSpec("high-priority-notifications", partitions=3, retention_ms=_DAY_MS)),
    (MEDIUM, TopicSpec("medium-priority-notifications", partitions=5, retention_ms=7 * _DAY_MS)),
    (LOW, TopicSpec("low-priority-notifications", partitions=2, retention_ms=30 * _DAY_MS)),
)

#: Every topic the application uses: each priority topic with its .DQ and .XQ.
ALL_TOPIC_SPECS: tuple[TopicSpec, ...] = tuple(
    companion for _, spec in PRIORITY_TOPICS for companion in spec.with_companions()
)


def topic_for_priority(priority: int) -> str:
    """The topic an actor of this priority sends to."""
    for ceiling, spec in PRIORITY_TOPICS:
        if priority <= ceiling:
            return spec.name
    return PRIORITY_TOPICS[-1][1].name
