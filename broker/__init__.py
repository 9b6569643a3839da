"""A Dramatiq broker on Apache Kafka, with the topic admin and a local Kafka
runner for development and tests. Generic: it knows queues, topics, offsets
and priorities, and nothing of any application built on it."""

from broker.kafka import BatchSendError, KafkaBroker
from broker.topics import (
    TopicAction,
    TopicDrift,
    TopicReconcileError,
    TopicReport,
    TopicSpec,
    reconcile,
)

__all__ = [
    "BatchSendError",
    "KafkaBroker",
    "TopicAction",
    "TopicDrift",
    "TopicReconcileError",
    "TopicReport",
    "TopicSpec",
    "reconcile",
]
