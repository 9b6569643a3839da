"""The state of the queues as Kafka has it: what ``status`` prints and the
dashboard shows.

Per priority topic and partition: end offset, the group's committed offset,
lag in messages and in seconds (the age of the oldest record the group has
not finished: time lag); retries waiting on each ``.DQ``; the group's
members; dead letters waiting on each ``.XQ``. All of it comes from Kafka's
offsets, so it is there while every worker is down.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from dramatiq.common import dq_name, xq_name
from kafka.errors import KafkaError

from broker.admin import PartitionLag
from willowe_tasks.ops.clients import OpsKafka
from willowe_tasks.priorities import BANDS, band

__all__ = ["Member", "Status", "TopicStatus", "parse_max_lag", "read_status"]

#: Reads of the offsets tried before a retriable Kafka error is reported.
READ_ATTEMPTS = 3

#: Pause between those attempts, seconds.
RETRY_PAUSE_S = 0.5

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h)?")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, None: 1}


@dataclass(frozen=True)
class Member:
    client_id: str
    host: str


@dataclass(frozen=True)
class TopicStatus:
    priority: str
    topic: str
    partitions: list[PartitionLag]
    #: Retries and delayed messages waiting on the topic's ``.DQ``.
    retries_waiting: int
    read_at: float

    @property
    def lag_messages(self) -> int:
        return sum(p.messages for p in self.partitions)

    @property
    def lag_seconds(self) -> float:
        return max((p.seconds(self.read_at) for p in self.partitions), default=0.0)


@dataclass(frozen=True)
class Status:
    group: str
    #: None when the group could not be described (it never existed, say).
    members: list[Member] | None
    topics: list[TopicStatus]
    #: Records on each ``.XQ``.
    dead_letters: dict[str, int]
    read_at: float = field(default_factory=time.time)

    def breaches(self, max_lag_s: dict[str, float]) -> list[str]:
        """Each priority whose lag in seconds passes its threshold, described."""
        return [f"{t.priority}: {t.lag_seconds:.1f} s behind (max {max_lag_s[t.priority]:g} s)"
                for t in self.topics
                if t.priority in max_lag_s and t.lag_seconds > max_lag_s[t.priority]]

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "read_at": round(self.read_at, 3),
            "members": None if self.members is None else [
                {"client_id": m.client_id, "host": m.host} for m in self.members],
            "topics": [{
                "priority": t.priority, "topic": t.topic, "lag_messages": t.lag_messages,
                "lag_seconds": round(t.lag_seconds, 3), "retries_waiting": t.retries_waiting,
                "dead_letters": self.dead_letters.get(xq_name(t.topic), 0),
                "partitions": [{
                    "partition": p.partition, "end_offset": p.end_offset,
                    "committed": p.committed, "lag_messages": p.messages,
                    "lag_seconds": round(p.seconds(self.read_at), 3),
                } for p in t.partitions],
            } for t in self.topics],
            "dead_letters": self.dead_letters,
        }


def read_status(kafka: OpsKafka) -> Status:
    """Read the state of every priority topic from Kafka."""
    topics = [b.topic.name for b in BANDS]
    lags, retries = _lags(kafka, topics)
    now = time.time()
    return Status(
        group=kafka.group_id,
        members=_members(kafka),
        topics=[TopicStatus(b.word, b.topic.name,
                            sorted((p for p in lags if p.topic == b.topic.name),
                                   key=lambda p: p.partition),
                            sum(p.messages for p in retries if p.topic == dq_name(b.topic.name)),
                            now)
                for b in BANDS],
        dead_letters=kafka.dead_letters.waiting(topics),
        read_at=now,
    )


def _lags(kafka: OpsKafka, topics: list[str]
          ) -> tuple[list[PartitionLag], list[PartitionLag]]:
    for attempt in range(READ_ATTEMPTS):
        try:
            return (kafka.queue_admin.lag(topics),
                    kafka.queue_admin.lag([dq_name(t) for t in topics], timestamps=False))
        except KafkaError as e:
            # A group coordinator that is moving or loading answers "not
            # coordinator" for a moment (a Kafka just started, say).
            if not e.retriable or attempt == READ_ATTEMPTS - 1:
                raise
            time.sleep(RETRY_PAUSE_S)
    raise AssertionError("unreachable")


def _members(kafka: OpsKafka) -> list[Member] | None:
    try:
        described = kafka.broker.admin.describe_groups([kafka.group_id]).get(kafka.group_id)
    except KafkaError:
        return None
    if not described or described.get("error"):
        return None
    return [Member(str(m.get("client_id", "")), str(m.get("client_host", "")).lstrip("/"))
            for m in described.get("members", [])]


def parse_max_lag(text: str) -> dict[str, float]:
    """``high=30,medium=5m`` → ``{"high": 30.0, "medium": 300.0}``; ValueError
    naming what is wrong."""
    limits: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        word, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"{part!r} is not priority=seconds (e.g. high=30,medium=300)")
        band(word.strip())  # raises naming the priority words
        duration = _DURATION.fullmatch(value.strip())
        if duration is None or float(duration.group(1)) <= 0:
            raise ValueError(f"{part!r}: the lag must be seconds above 0 (30, 30s, 5m, 1h)")
        limits[word.strip()] = float(duration.group(1)) * _UNIT_S[duration.group(2)]
    if not limits:
        raise ValueError("expected priority=seconds[,priority=seconds…] (e.g. high=30)")
    return limits
