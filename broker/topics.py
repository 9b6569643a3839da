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
- Replication: a spec *wishes* for a replication factor and a
  ``min.insync.replicas``; reconcile fits the wish to the brokers it finds
  (:mod:`broker.replication`: fewer brokers, fewer copies, with a warning in
  the report). Fewer copies than that: a partition reassignment adds them.
  More copies than the wish are kept and reported, like partitions.
  ``min.insync.replicas`` is a topic config, repaired like the others, but
  never raised above the replicas in sync at that moment (it would refuse
  every ``acks=all`` write until they catch up).

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
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import TopicAlreadyExistsError

from broker._topic_admin import (
    TopicReconcileError,
    describe_partitions,
    set_configs,
    topic_configs,
)
from broker.replication import (
    ReplicasNotAdded,
    add_replicas,
    fit,
    fit_warnings,
    live_brokers,
    replicas_of,
)

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

#: How long reconcile waits for added replicas to catch up, in seconds; a big
#: topic may take longer (the reassignment goes on, and a warning says so).
REASSIGNMENT_WAIT_S = 60.0

#: The drift key of a topic's partition count (the others are config keys).
PARTITIONS_KEY = "partitions"

#: The drift key of a topic's replication factor.
REPLICAS_KEY = "replication.factor"

#: The topic config that says how many replicas an acks=all write needs.
MIN_INSYNC_KEY = "min.insync.replicas"


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
    ``kafka-configs`` would show them.

    ``replication_factor`` and ``min_insync_replicas`` are wishes that
    reconcile fits to the cluster (see :mod:`broker.replication`); None
    leaves them to the cluster's ``default.replication.factor`` and
    ``min.insync.replicas``.
    """

    name: str
    partitions: int
    retention_ms: int
    replication_factor: int | None = None
    cleanup_policy: str = "delete"
    extra_configs: Mapping[str, str] = field(default_factory=dict)
    min_insync_replicas: int | None = None

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 249:
            raise ValueError(f"topic name must be 1–249 characters, got {self.name!r}")
        if self.partitions < 1:
            raise ValueError(f"partitions of {self.name} must be ≥ 1, got {self.partitions}")
        for name, value in (("replication_factor", self.replication_factor),
                            ("min_insync_replicas", self.min_insync_replicas)):
            if value is not None and value < 1:
                raise ValueError(f"{name} of {self.name} must be ≥ 1, got {value}")
        if (self.replication_factor is not None and self.min_insync_replicas is not None
                and self.min_insync_replicas > self.replication_factor):
            raise ValueError(
                f"min_insync_replicas of {self.name} ({self.min_insync_replicas}) must not exceed "
                f"its replication_factor ({self.replication_factor}): Kafka would ask for the "
                f"{self.replication_factor} copies there are, not {self.min_insync_replicas}"
            )
        if self.retention_ms < -1 or self.retention_ms == 0:
            raise ValueError(
                f"retention_ms of {self.name} must be positive or -1 (forever), "
                f"got {self.retention_ms}"
            )

    @property
    def configs(self) -> dict[str, str]:
        """Every topic config the spec pins; reconcile compares and repairs each key."""
        configs = {
            "retention.ms": str(self.retention_ms),
            "cleanup.policy": self.cleanup_policy,
            **self.extra_configs,
        }
        if self.min_insync_replicas is not None:
            configs[MIN_INSYNC_KEY] = str(self.min_insync_replicas)
        return configs

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
    #: A partition reassignment that adds copies on more brokers.
    ADD_REPLICAS = "add replicas"
    SET_CONFIG = "set config"
    #: Reported only: the cluster differs in a way the spec allows.
    KEEP = "keep"


@dataclass(frozen=True)
class TopicDrift:
    """One difference between a spec and the cluster.

    ``key`` is ``"partitions"``, ``"replication.factor"`` or a config key
    such as ``"retention.ms"`` (empty for a missing topic); ``found`` is the
    cluster's value (None: the topic or key is missing) and ``wanted`` the
    spec's.
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
    TopicAction.ADD_REPLICAS: ("would add replicas", "added replicas"),
    TopicAction.SET_CONFIG: ("would repair", "repaired"),
    TopicAction.KEEP: ("kept", "kept"),
}


@dataclass(frozen=True)
class TopicReport:
    """What :func:`reconcile` found and what it did.

    ``applied`` is False for a check: ``changes`` are then what a plain run
    would do, and nothing was changed. ``specs`` are the specs as fitted to
    this cluster (replication lowered where it has fewer brokers than they
    wish for), and ``warnings`` say where and what that costs.
    """

    drifts: tuple[TopicDrift, ...]
    applied: bool
    specs: tuple[TopicSpec, ...] = ()
    warnings: tuple[str, ...] = ()

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


def reconcile(
    admin: KafkaAdminClient, specs: Iterable[TopicSpec], *, check: bool = False
) -> TopicReport:
    """Make the cluster match ``specs`` (fitted to its brokers) and report
    what differed.

    With ``check=True`` nothing is changed: the report lists what a plain run
    would do. Raises :class:`TopicReconcileError` when Kafka refuses a change
    or does not describe a topic, and kafka-python's ``KafkaError`` when it
    can't be reached.
    """
    plan = _plan(admin, list(specs))
    if check:
        return TopicReport(tuple(plan.drifts), applied=False, specs=tuple(plan.specs),
                           warnings=tuple(plan.warnings))
    report = TopicReport(tuple(_apply(admin, plan)), applied=True, specs=tuple(plan.specs),
                         warnings=tuple(plan.warnings))
    # Logged with the rest of the report; the caller shows the warnings as it sees fit.
    for warning in report.warnings:
        logger.info("%s", warning)
    for line in report.lines():
        logger.info("Topic %s", line)
    return report


def create_missing(admin: KafkaAdminClient, specs: Iterable[TopicSpec]) -> list[TopicDrift]:
    """Create the topics of ``specs`` as they are (no fitting: see
    :func:`reconcile`); one that appeared meanwhile is left alone.

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
                    # -1: the cluster's default.replication.factor (KIP-464).
                    "replication_factor": spec.replication_factor or -1,
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
    settings = {PARTITIONS_KEY: str(spec.partitions)}
    if spec.replication_factor is not None:
        settings[REPLICAS_KEY] = str(spec.replication_factor)
    settings.update(spec.configs)
    return TopicDrift(spec.name, TopicAction.CREATE, "", None,
                      ", ".join(f"{key}={value}" for key, value in settings.items()))


@dataclass(frozen=True)
class _Plan:
    """What reconcile read and would change."""

    #: The specs fitted to the cluster, in the order given.
    specs: list[TopicSpec]
    drifts: list[TopicDrift]
    warnings: list[str]
    #: The live brokers' ids.
    brokers: list[int]
    #: describe_topics' partitions of each topic that exists.
    partitions: dict[str, list[dict[str, Any]]]


def _plan(admin: KafkaAdminClient, wished: list[TopicSpec]) -> _Plan:
    """Every difference between ``wished`` (fitted to the cluster) and the
    cluster; reads only."""
    brokers = live_brokers(admin)
    existing = set(admin.list_topics())
    partitions = describe_partitions(admin, [s.name for s in wished if s.name in existing])
    specs = [_fitted(spec, len(brokers), partitions.get(spec.name)) for spec in wished]
    configs = topic_configs(admin, {s.name: list(s.configs) for s in specs if s.name in existing})
    drifts = []
    for wish, spec in zip(wished, specs, strict=True):
        if spec.name not in existing:
            drifts.append(_creation(spec))
            continue
        drifts.extend(_partition_drift(spec, len(partitions[spec.name])))
        drifts.extend(_replica_drift(wish, spec, partitions[spec.name]))
        current = configs[spec.name]
        drifts.extend(
            TopicDrift(spec.name, TopicAction.SET_CONFIG, key, current[key], wanted)
            for key, wanted in spec.configs.items()
            if current[key] != wanted
        )
    warnings = fit_warnings([(w.name, w.replication_factor, w.min_insync_replicas,
                              s.replication_factor, s.min_insync_replicas)
                             for w, s in zip(wished, specs, strict=True)], len(brokers))
    return _Plan(specs, drifts, warnings, brokers, partitions)


def _fitted(spec: TopicSpec, brokers: int, partitions: list[dict[str, Any]] | None) -> TopicSpec:
    found = replicas_of(partitions) if partitions else None
    replicas, min_insync = fit(spec.replication_factor, spec.min_insync_replicas, brokers, found)
    return replace(spec, replication_factor=replicas, min_insync_replicas=min_insync)


def _partition_drift(spec: TopicSpec, have: int) -> list[TopicDrift]:
    found, wanted = str(have), str(spec.partitions)
    if have < spec.partitions:
        return [TopicDrift(spec.name, TopicAction.ADD_PARTITIONS, PARTITIONS_KEY, found, wanted)]
    if have > spec.partitions:
        return [TopicDrift(spec.name, TopicAction.KEEP, PARTITIONS_KEY, found, wanted,
                           "the spec's count is a minimum, and Kafka cannot remove partitions")]
    return []


def _replica_drift(wish: TopicSpec, spec: TopicSpec,
                   partitions: list[dict[str, Any]]) -> list[TopicDrift]:
    if spec.replication_factor is None:
        return []
    have = replicas_of(partitions)
    most = max(len(p["replica_nodes"]) for p in partitions)
    wished = wish.replication_factor or spec.replication_factor
    if have < spec.replication_factor:
        return [TopicDrift(spec.name, TopicAction.ADD_REPLICAS, REPLICAS_KEY, str(have),
                           str(spec.replication_factor))]
    if most > wished:
        return [TopicDrift(spec.name, TopicAction.KEEP, REPLICAS_KEY, str(most), str(wished),
                           "more copies than the spec wishes cost only disk; lower them with "
                           "kafka-reassign-partitions if they were a mistake")]
    return []


def _apply(admin: KafkaAdminClient, plan: _Plan) -> list[TopicDrift]:
    """Carry out the changes among the plan's drifts; return those done, and
    the kept ones (including changes held back, with the reason)."""
    drifts = plan.drifts
    to_create = {d.topic for d in drifts if d.action is TopicAction.CREATE}
    created = {d.topic for d in create_missing(admin, [s for s in plan.specs
                                                       if s.name in to_create])}
    grow = {d.topic: int(d.wanted) for d in drifts if d.action is TopicAction.ADD_PARTITIONS}
    if grow:
        admin.create_partitions(grow, timeout_ms=ADMIN_TIMEOUT_MS)
    copies = {d.topic: int(d.wanted) for d in drifts if d.action is TopicAction.ADD_REPLICAS}
    if copies:
        try:
            add_replicas(admin, {t: plan.partitions[t] for t in copies}, copies, plan.brokers,
                         timeout_ms=ADMIN_TIMEOUT_MS, wait_s=REASSIGNMENT_WAIT_S)
        except ReplicasNotAdded as e:
            raise TopicReconcileError(str(e)) from None
    held = _held_back_raises(admin, [d for d in drifts if d.action is TopicAction.SET_CONFIG])
    drifts = [held.get(id(d), d) for d in drifts]
    wanted: dict[str, dict[str, str]] = {}
    for repair in (d for d in drifts if d.action is TopicAction.SET_CONFIG):
        wanted.setdefault(repair.topic, {})[repair.key] = repair.wanted
    if wanted:
        set_configs(admin, wanted)
    # A topic another process created meanwhile was not created by this run.
    return [d for d in drifts if d.action is not TopicAction.CREATE or d.topic in created]


def _held_back_raises(admin: KafkaAdminClient,
                      repairs: list[TopicDrift]) -> dict[int, TopicDrift]:
    """The min.insync.replicas raises (by id of the drift) that must wait:
    more than the replicas in sync now would refuse every acks=all write."""
    raises = [d for d in repairs if d.key == MIN_INSYNC_KEY
              and int(d.wanted) > int(d.found or 1)]
    if not raises:
        return {}
    described = describe_partitions(admin, [d.topic for d in raises])
    in_sync = {name: min(len(p["isr_nodes"]) for p in partitions)
               for name, partitions in described.items()}
    return {
        id(d): replace(d, action=TopicAction.KEEP,
                       reason=f"only {in_sync[d.topic]} replica(s) in sync now; run again once "
                              "the others have caught up")
        for d in raises if in_sync[d.topic] < int(d.wanted)
    }
