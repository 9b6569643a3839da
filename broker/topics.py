"""Topic specs and their reconciliation with a live cluster.

A :class:`TopicSpec` says what a topic should look like; :func:`reconcile`
compares the cluster with the specs and returns a :class:`TopicReport`: one
:class:`TopicDrift` per difference, each with the action taken for it.

- A missing topic is created.
- Fewer partitions than the spec: partitions are added.
- A config that differs (``retention.ms`` changed by hand during an
  incident) is set back to the spec's value.
- More partitions than the spec is *kept* and reported, never an error: a
  spec's partition count is a minimum. Kafka cannot remove partitions, and an
  operator raising them to spread load is following the runbook.

``reconcile(..., check=True)`` computes the same report and changes nothing,
for monitoring or before repairing a change that should not be reverted yet.

Each Dramatiq queue is three topics: the queue itself, its ``.DQ`` (delayed
messages and retries) and its ``.XQ`` (dead letters); :meth:`TopicSpec.with_companions`
derives the two from the first so their facts live in one place.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import kafka.errors
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import TopicAlreadyExistsError

__all__ = [
    "DEFAULT_DEAD_LETTER_RETENTION_MS",
    "TopicAction",
    "TopicDrift",
    "TopicReconcileError",
    "TopicReport",
    "TopicSpec",
    "create_missing",
    "dead_letter_name",
    "delay_name",
    "reconcile",
]

logger = logging.getLogger(__name__)

#: How long dead letters are kept: long enough to look at them after a weekend.
DEFAULT_DEAD_LETTER_RETENTION_MS = 7 * 24 * 3600 * 1000

#: How long reconcile waits for the controller on each request.
ADMIN_TIMEOUT_MS = 30_000

#: The drift key of a topic's partition count (the others are config keys).
PARTITIONS_KEY = "partitions"


def delay_name(queue_name: str) -> str:
    """The topic that holds a queue's delayed messages (Dramatiq's ``dq_name``)."""
    return f"{queue_name}.DQ"


def dead_letter_name(queue_name: str) -> str:
    """The topic that holds a queue's dead letters (Dramatiq's ``xq_name``)."""
    return f"{queue_name}.XQ"


@dataclass(frozen=True)
class TopicSpec:
    """What one topic should look like. ``partitions`` is a minimum;
    ``configs`` holds Kafka topic configs as strings, exactly as
    ``kafka-configs`` would show them."""

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
        """Every topic config the spec pins; reconcile compares and repairs each key."""
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


class TopicAction(enum.Enum):
    """What reconcile does about one difference between a spec and the cluster."""

    CREATE = "create"
    ADD_PARTITIONS = "add partitions"
    SET_CONFIG = "set config"
    #: Reported only: the cluster differs in a way the spec allows.
    KEEP = "keep"


@dataclass(frozen=True)
class TopicDrift:
    """One difference between a spec and the cluster.

    ``key`` is ``"partitions"`` or a config key such as ``"retention.ms"``
    (empty for a missing topic); ``found`` is the cluster's value (None: the
    topic or key is missing) and ``wanted`` the spec's.
    """

    topic: str
    action: TopicAction
    key: str
    found: str | None
    wanted: str
    #: Why a difference is kept (empty for a change).
    reason: str = ""

    @property
    def is_change(self) -> bool:
        return self.action is not TopicAction.KEEP

    def __str__(self) -> str:
        if self.action is TopicAction.CREATE:
            return f"{self.topic} ({self.wanted})"
        if self.action is TopicAction.KEEP:
            return f"{self.topic}: {self.key} {self.found} (spec {self.wanted}: {self.reason})"
        return f"{self.topic}: {self.key} {self.found} → {self.wanted}"


_VERBS: dict[TopicAction, tuple[str, str]] = {
    # action: (verb when checking, verb when applied)
    TopicAction.CREATE: ("would create", "created"),
    TopicAction.ADD_PARTITIONS: ("would add partitions", "added partitions"),
    TopicAction.SET_CONFIG: ("would repair", "repaired"),
    TopicAction.KEEP: ("kept", "kept"),
}


@dataclass(frozen=True)
class TopicReport:
    """What :func:`reconcile` found and what it did.

    ``applied`` is False for a check: ``changes`` are then what a plain run
    would do, and nothing was changed.
    """

    drifts: tuple[TopicDrift, ...]
    applied: bool

    @property
    def changes(self) -> list[TopicDrift]:
        """Differences that were (or, in a check, would be) changed."""
        return [d for d in self.drifts if d.is_change]

    @property
    def kept(self) -> list[TopicDrift]:
        """Differences the specs allow, reported and left as they are."""
        return [d for d in self.drifts if not d.is_change]

    @property
    def in_sync(self) -> bool:
        """Nothing to change (kept differences don't count)."""
        return not self.changes

    def lines(self) -> list[str]:
        """One line per drift, led by what was (or would be) done."""
        tense = 1 if self.applied else 0
        return [f"{_VERBS[d.action][tense]} {d}" for d in self.drifts]


class TopicReconcileError(Exception):
    """Reconcile could not read or change a topic; the message names it and why."""


def reconcile(
    admin: KafkaAdminClient, specs: Iterable[TopicSpec], *, check: bool = False
) -> TopicReport:
    """Make the cluster match ``specs`` and report what differed.

    With ``check=True`` nothing is changed: the report lists what a plain run
    would do. Raises :class:`TopicReconcileError` when Kafka refuses a change
    or does not describe a topic, and kafka-python's ``KafkaError`` when it
    can't be reached.
    """
    specs = list(specs)
    drifts = _plan(admin, specs)
    if check:
        return TopicReport(tuple(drifts), applied=False)
    report = TopicReport(tuple(_apply(admin, specs, drifts)), applied=True)
    for line in report.lines():
        logger.info("Topic %s", line)
    return report


def create_missing(admin: KafkaAdminClient, specs: Iterable[TopicSpec]) -> list[TopicDrift]:
    """Create the topics of ``specs``; one that appeared meanwhile is left alone.

    Returns once each created topic is in the brokers' metadata with a leader
    per partition: CreateTopics answers before that, and a describe or
    produce right after it can still find no such topic.
    """
    created = []
    for spec in specs:
        try:
            admin.create_topics(
                {spec.name: {
                    "num_partitions": spec.partitions,
                    "replication_factor": spec.replication_factor,
                    "configs": spec.configs,
                }},
                timeout_ms=ADMIN_TIMEOUT_MS,
                wait_for_metadata=True,
            )
        except TopicAlreadyExistsError:
            # Another process (a second worker, make topics) won the race.
            continue
        created.append(_creation(spec))
    return created


def _creation(spec: TopicSpec) -> TopicDrift:
    settings = {PARTITIONS_KEY: str(spec.partitions), **spec.configs}
    return TopicDrift(spec.name, TopicAction.CREATE, "", None,
                      ", ".join(f"{key}={value}" for key, value in settings.items()))


def _plan(admin: KafkaAdminClient, specs: list[TopicSpec]) -> list[TopicDrift]:
    """Every difference between ``specs`` and the cluster; reads only."""
    existing = set(admin.list_topics())
    present = [s for s in specs if s.name in existing]
    partitions = _partition_counts(admin, [s.name for s in present])
    configs = _topic_configs(admin, present)
    drifts = []
    for spec in specs:
        if spec.name not in existing:
            drifts.append(_creation(spec))
            continue
        drifts.extend(_partition_drift(spec, partitions[spec.name]))
        current = configs[spec.name]
        drifts.extend(
            TopicDrift(spec.name, TopicAction.SET_CONFIG, key, current[key], wanted)
            for key, wanted in spec.configs.items()
            if current[key] != wanted
        )
    return drifts


def _partition_drift(spec: TopicSpec, have: int) -> list[TopicDrift]:
    found, wanted = str(have), str(spec.partitions)
    if have < spec.partitions:
        return [TopicDrift(spec.name, TopicAction.ADD_PARTITIONS, PARTITIONS_KEY, found, wanted)]
    if have > spec.partitions:
        return [TopicDrift(spec.name, TopicAction.KEEP, PARTITIONS_KEY, found, wanted,
                           "the spec's count is a minimum, and Kafka cannot remove partitions")]
    return []


def _apply(
    admin: KafkaAdminClient, specs: list[TopicSpec], drifts: list[TopicDrift]
) -> list[TopicDrift]:
    """Carry out the changes among ``drifts``; return those done, and the kept ones."""
    to_create = {d.topic for d in drifts if d.action is TopicAction.CREATE}
    created = {d.topic for d in create_missing(admin, [s for s in specs if s.name in to_create])}
    grow = {d.topic: int(d.wanted) for d in drifts if d.action is TopicAction.ADD_PARTITIONS}
    if grow:
        admin.create_partitions(grow, timeout_ms=ADMIN_TIMEOUT_MS)
    repairs = [d for d in drifts if d.action is TopicAction.SET_CONFIG]
    if repairs:
        _set_configs(admin, repairs)
    # A topic another process created meanwhile was not created by this run.
    return [d for d in drifts if d.action is not TopicAction.CREATE or d.topic in created]


def _partition_counts(admin: KafkaAdminClient, names: list[str]) -> dict[str, int]:
    if not names:
        return {}
    counts = {}
    for topic in admin.describe_topics(names):
        if topic["error_code"]:
            error = kafka.errors.for_code(topic["error_code"]).__name__
            raise TopicReconcileError(f"{topic['name']}: Kafka could not describe it ({error})")
        counts[topic["name"]] = len(topic["partitions"])
    return counts


def _topic_configs(
    admin: KafkaAdminClient, specs: list[TopicSpec]
) -> dict[str, dict[str, str | None]]:
    """The current value of each config key the specs pin, per topic."""
    if not specs:
        return {}
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, s.name, dict.fromkeys(s.configs))
         for s in specs],
        config_filter="all",
    ).get("topic", {})
    configs = {}
    for spec in specs:
        entries = described.get(spec.name, {})
        # kafka-python drops a resource's error code and returns no entries
        # instead: an unknown key, or a topic this broker doesn't know yet.
        missing = [key for key in spec.configs if key not in entries]
        if missing:
            raise TopicReconcileError(
                f"{spec.name}: Kafka returned no value for {', '.join(missing)} "
                "(not a topic config, or the topic is not in this broker's metadata yet)"
            )
        configs[spec.name] = {key: entries[key]["value"] for key in spec.configs}
    return configs


def _set_configs(admin: KafkaAdminClient, repairs: list[TopicDrift]) -> None:
    wanted: dict[str, dict[str, str]] = {}
    for drift in repairs:
        wanted.setdefault(drift.topic, {})[drift.key] = drift.wanted
    # Incremental alter (Kafka ≥ 2.3) sets only these keys and leaves any
    # other config of the topic as it is.
    results = admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, configs)
         for topic, configs in wanted.items()],
        incremental=True,
    ).get("topic", {})
    # alter_configs reports a refusal per resource instead of raising.
    refused = {topic: results.get(topic, "no answer") for topic in wanted}
    refused = {topic: result for topic, result in refused.items() if result != "OK"}
    if refused:
        raise TopicReconcileError("Kafka refused config changes: " + "; ".join(
            f"{topic} ({', '.join(wanted[topic])}): {result}" for topic, result in refused.items()
        ))
