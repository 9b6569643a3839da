"""Topic specs and their reconciliation with a live cluster.

A :class:`TopicSpec` says what a topic should look like; :func:`reconcile`
makes the cluster agree: it creates what is missing, puts drifted configs
back, adds partitions where more are wanted, and refuses to shrink (Kafka
cannot remove partitions). It reports every change it made.

Each Dramatiq queue is three topics: the queue itself, its ``.DQ`` (delayed
messages and retries) and its ``.XQ`` (dead letters); :meth:`TopicSpec.with_companions`
derives the two from the first so their facts live in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import TopicAlreadyExistsError

__all__ = [
    "DEFAULT_DEAD_LETTER_RETENTION_MS",
    "PartitionShrinkRefused",
    "TopicChange",
    "TopicSpec",
    "dead_letter_name",
    "delay_name",
    "reconcile",
]

logger = logging.getLogger(__name__)

#: How long dead letters are kept: long enough to look at them after a weekend.
DEFAULT_DEAD_LETTER_RETENTION_MS = 7 * 24 * 3600 * 1000

#: How long reconcile waits for the controller on each request.
ADMIN_TIMEOUT_MS = 30_000


def delay_name(queue_name: str) -> str:
    """The topic that holds a queue's delayed messages (Dramatiq's ``dq_name``)."""
    return f"{queue_name}.DQ"


def dead_letter_name(queue_name: str) -> str:
    """The topic that holds a queue's dead letters (Dramatiq's ``xq_name``)."""
    return f"{queue_name}.XQ"


@dataclass(frozen=True)
class TopicSpec:
    """What one topic should look like. ``configs`` holds Kafka topic configs
    as strings, exactly as ``kafka-configs`` would show them."""

    name: str
    partitions: int
    retention_ms: int
    replication_factor: int = 1
    cleanup_policy: str = "delete"
    extra_configs: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 249:
            raise ValueError(f"topic name must be 1–249 characters, got {self.name!r}")
        if self.partitions < 1:
            raise ValueError(f"partitions of {self.name} must be ≥ 1, got {self.partitions}")
        if self.replication_factor < 1:
            raise ValueError(
                f"replication_factor of {self.name} must be ≥ 1, got {self.replication_factor}"
            )
        if self.retention_ms < -1 or self.retention_ms == 0:
            raise ValueError(
                f"retention_ms of {self.name} must be positive or -1 (forever), "
                f"got {self.retention_ms}"
            )

    @property
    def configs(self) -> dict[str, str]:
        return {
            "retention.ms": str(self.retention_ms),
            "cleanup.policy": self.cleanup_policy,
            **self.extra_configs,
        }

    def with_companions(
        self, dead_letter_retention_ms: int = DEFAULT_DEAD_LETTER_RETENTION_MS
    ) -> list[TopicSpec]:
        """This topic, its delay topic (same shape: a retry must outlive
        nothing the queue itself keeps) and its dead-letter topic."""
        return [
            self,
            replace(self, name=delay_name(self.name)),
            replace(self, name=dead_letter_name(self.name), retention_ms=dead_letter_retention_ms),
        ]


@dataclass(frozen=True)
class TopicChange:
    """One thing reconcile did to the cluster."""

    topic: str
    action: str  # "created", "altered", "partitions"
    detail: str

    def __str__(self) -> str:
        return f"{self.topic}: {self.action} ({self.detail})"


class PartitionShrinkRefused(ValueError):
    """A spec asks for fewer partitions than the topic has: Kafka can't do that."""


def reconcile(admin: KafkaAdminClient, specs: Iterable[TopicSpec]) -> list[TopicChange]:
    """Make the cluster match ``specs``; return what changed (empty: nothing to do).

    Checks every spec against the cluster before changing anything, so a
    refused shrink leaves the cluster untouched.
    """
    specs = list(specs)
    existing = set(admin.list_topics())
    partitions = _partition_counts(admin, [s.name for s in specs if s.name in existing])
    for spec in specs:
        have = partitions.get(spec.name)
        if have is not None and have > spec.partitions:
            raise PartitionShrinkRefused(
                f"{spec.name} has {have} partitions and the spec asks for {spec.partitions}: "
                "Kafka cannot remove partitions; recreate the topic (losing its data) "
                "or keep the higher count in the spec"
            )

    changes = create_missing(admin, [s for s in specs if s.name not in existing])
    for spec in specs:
        if spec.name not in existing:
            continue
        have = partitions[spec.name]
        if have < spec.partitions:
            admin.create_partitions({spec.name: spec.partitions}, timeout_ms=ADMIN_TIMEOUT_MS)
            changes.append(TopicChange(spec.name, "partitions", f"{have} → {spec.partitions}"))
        changes.extend(_repair_configs(admin, spec))
    for change in changes:
        logger.info("Topic %s", change)
    return changes


def create_missing(admin: KafkaAdminClient, specs: Iterable[TopicSpec]) -> list[TopicChange]:
    """Create the topics of ``specs``; one that appeared meanwhile is left alone."""
    changes = []
    for spec in specs:
        try:
            admin.create_topics(
                {spec.name: {
                    "num_partitions": spec.partitions,
                    "replication_factor": spec.replication_factor,
                    "configs": spec.configs,
                }},
                timeout_ms=ADMIN_TIMEOUT_MS,
            )
        except TopicAlreadyExistsError:
            # Another process (a second worker, make topics) won the race.
            continue
        changes.append(TopicChange(
            spec.name, "created",
            f"{spec.partitions} partitions, retention.ms={spec.retention_ms}",
        ))
    return changes


def _partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    if not names:
        return {}
    return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}


def _repair_configs(admin: KafkaAdminClient, spec: TopicSpec) -> list[TopicChange]:
    wanted = spec.configs
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, spec.name, dict.fromkeys(wanted))],
        config_filter="all",
    )
    current = {key: entry["value"] for key, entry in described["topic"][spec.name].items()}
    drifted = {key: value for key, value in wanted.items() if current.get(key) != value}
    if not drifted:
        return []
    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, spec.name, drifted)])
    return [
        TopicChange(spec.name, "altered", f"{key}: {current.get(key)} → {value}")
        for key, value in drifted.items()
    ]
