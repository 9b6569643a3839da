"""The dashboard's view of Kafka: the status (lag, members, dead letters
waiting) and the dead letters grouped by priority and cause.

Kafka is read at most once per :data:`VIEW_MAX_AGE_S` however many browsers
look, and the dead letters themselves are read again only when an ``.XQ``'s
offsets moved (they rarely do, and reading them is the dear part).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from kafka import TopicPartition

from willowe_tasks.ops.clients import OpsKafka
from willowe_tasks.ops.dead_letters import DeadLetter
from willowe_tasks.ops.names import band_of_topic
from willowe_tasks.ops.replay_log import ReplayLog
from willowe_tasks.ops.status import Status, read_status
from willowe_tasks.priorities import BANDS

__all__ = ["DeadLetterGroup", "KafkaView", "KafkaWatcher"]

#: How long one reading of Kafka serves every page load, in seconds.
VIEW_MAX_AGE_S = 1.0


@dataclass(frozen=True)
class DeadLetterGroup:
    """The dead letters of one priority with one cause."""

    priority: str
    topic: str
    cause: str
    #: Not replayed (nor dropped as expired) yet.
    waiting: int
    #: Of those, the ones that can be replayed (decodable).
    replayable: int
    replayed: int
    expired_dropped: int
    #: Age of the oldest one waiting, seconds.
    oldest_s: float | None
    #: One error text of the group (tokens hashed), to tell what it is about.
    example_error: str


@dataclass(frozen=True)
class KafkaView:
    status: Status
    groups: list[DeadLetterGroup]

    @property
    def waiting(self) -> int:
        return sum(g.waiting for g in self.groups)


class KafkaWatcher:
    def __init__(self, kafka: OpsKafka, log: ReplayLog) -> None:
        self._kafka = kafka
        self._log = log
        self._lock = threading.Lock()
        self._view: KafkaView | None = None
        self._read_at = 0.0
        self._letters: list[DeadLetter] = []
        self._letters_key: object = None

    def view(self, *, fresh: bool = False) -> KafkaView:
        with self._lock:
            if fresh or self._view is None or time.monotonic() - self._read_at > VIEW_MAX_AGE_S:
                status = read_status(self._kafka)
                self._view = KafkaView(status, self._groups(self._dead_letters()))
                self._read_at = time.monotonic()
            return self._view

    def _dead_letters(self) -> list[DeadLetter]:
        topics = [b.topic.name for b in BANDS]
        starts, ends = self._kafka.dead_letters.offsets(topics)
        key = (_frozen(starts), _frozen(ends))
        if key != self._letters_key:
            self._letters = self._kafka.dead_letters.read(topics)
            self._letters_key = key
        return self._letters

    def _groups(self, letters: Sequence[DeadLetter]) -> list[DeadLetterGroup]:
        handled = self._log.handled(letters)
        now = time.time()
        grouped: dict[tuple[str, str], list[DeadLetter]] = {}
        for letter in letters:
            grouped.setdefault((letter.topic, letter.cause), []).append(letter)
        groups = []
        for (topic, cause), members in grouped.items():
            band = band_of_topic(topic)
            waiting = [d for d in members if d.where not in handled]
            outcomes = [handled[d.where] for d in members if d.where in handled]
            groups.append(DeadLetterGroup(
                priority=band.word if band else "?", topic=band.topic.name if band else topic,
                cause=cause, waiting=len(waiting),
                replayable=sum(1 for d in waiting if d.message is not None),
                replayed=outcomes.count("replayed"),
                expired_dropped=outcomes.count("expired"),
                oldest_s=max((d.age_s(now) for d in waiting), default=None),
                example_error=(waiting or members)[0].error[:160]))
        order: dict[str, int] = {b.word: i for i, b in enumerate(BANDS)}
        return sorted(groups, key=lambda g: (order.get(g.priority, 99), -g.waiting, g.cause))


def _frozen(offsets: dict[TopicPartition, int]) -> tuple[tuple[str, int, int], ...]:
    return tuple(sorted((tp.topic, tp.partition, o) for tp, o in offsets.items()))
