"""Every topic the application uses: each priority band's topic (see
:mod:`willowe_tasks.priorities`, where their shape is written) with its ``.DQ``
and ``.XQ``. ``make topics``, compose.yaml's checks and the tests read it."""

from __future__ import annotations

from collections.abc import Sequence

from broker.topics import TopicSpec
from willowe_tasks.priorities import BANDS, MIN_INSYNC_REPLICAS, REPLICATION_FACTOR

__all__ = ["ALL_TOPIC_SPECS", "PRIORITY_TOPIC_NAMES", "audit_topic_spec", "topic_specs"]

#: The three topics actors send to, most urgent first.
PRIORITY_TOPIC_NAMES: tuple[str, ...] = tuple(b.topic.name for b in BANDS)

#: Every topic the application uses: each priority topic with its .DQ and .XQ.
ALL_TOPIC_SPECS: tuple[TopicSpec, ...] = tuple(
    companion for b in BANDS for companion in b.topic.with_companions()
)

#: How long the audit topic keeps entries: a year (the file keeps them for good).
AUDIT_RETENTION_MS = 365 * 24 * 3600 * 1000


def audit_topic_spec(name: str) -> TopicSpec:
    """The audit topic (``AUDIT_TOPIC``): one partition, so entries stay in
    order, as many copies as the notifications' topics."""
    return TopicSpec(name, partitions=1, retention_ms=AUDIT_RETENTION_MS,
                     replication_factor=REPLICATION_FACTOR,
                     min_insync_replicas=MIN_INSYNC_REPLICAS)


def topic_specs(audit_topic: str | None,
                specs: Sequence[TopicSpec] = ALL_TOPIC_SPECS) -> tuple[TopicSpec, ...]:
    """What ``topics`` reconciles: ``specs`` (every topic), and the audit
    topic if there is one."""
    return (*specs, *([audit_topic_spec(audit_topic)] if audit_topic else []))
