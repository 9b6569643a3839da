"""A Dramatiq broker on Apache Kafka, with the topic admin and a local Kafka
runner for development and tests. Generic: it knows queues, topics, offsets
and priorities, and nothing of any application built on it."""

from broker.access import AuthenticationFailed, AuthorizationFailed, KafkaAccessDenied
from broker.acls import AclReconcileError, AclReport, AclSpec, reconcile_acls
from broker.encryption import AesGcmCipher, KeyRing
from broker.kafka import BatchSendError, KafkaBroker
from broker.payload_codec import PayloadCodec
from broker.topics import (
    TopicAction,
    TopicDrift,
    TopicReconcileError,
    TopicReport,
    TopicSpec,
    reconcile,
)

__all__ = [
    "AclReconcileError",
    "AclReport",
    "AclSpec",
    "AesGcmCipher",
    "AuthenticationFailed",
    "AuthorizationFailed",
    "BatchSendError",
    "KafkaAccessDenied",
    "KafkaBroker",
    "KeyRing",
    "PayloadCodec",
    "TopicAction",
    "TopicDrift",
    "TopicReconcileError",
    "TopicReport",
    "TopicSpec",
    "reconcile",
    "reconcile_acls",
]
