"""Where the application's actions meet the audit trail: worker starts and
stops, device registrations and removals, and the audit topic.

- :class:`AuditMiddleware` records ``worker.start`` and ``worker.stop`` with
  the worker's principal and queues.
- :class:`AuditedDeviceRegistry` wraps any :class:`DeviceRegistry`: each
  registration, removal and purge is recorded with the token's hash, never
  the token. The web app registers through it (``App.services().registry``
  is one), so the trail knows who registered what.
- :func:`kafka_publisher` sends entries to the audit topic;
  :func:`operator_trail` is the trail of an operator command.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

import dramatiq
from kafka import KafkaProducer

from willowe_tasks.audit import AuditTrail, Publish, build_trail
from willowe_tasks.kafka_clients import client_options
from willowe_tasks.registry import Device, DeviceRegistry
from willowe_tasks.settings import Settings
from willowe_tasks.tokens import token_hash

__all__ = ["AuditMiddleware", "AuditedDeviceRegistry", "kafka_publisher", "operator_trail"]

#: How long an operator command waits at its end for the audit topic to take
#: its entries, in seconds.
PUBLISH_FLUSH_TIMEOUT_S = 10.0

logger = logging.getLogger(__name__)


class AuditMiddleware(dramatiq.Middleware):
    """Records each worker process's start and stop in its trail."""

    def __init__(self, trail: Callable[[], AuditTrail]) -> None:
        self._trail = trail

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._record("worker.start", broker, worker)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._record("worker.stop", broker, worker)

    def _record(self, what: str, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        queues = sorted(worker.consumer_whitelist or broker.get_declared_queues())
        codec = getattr(broker, "payload_codec", None)
        cipher = getattr(codec, "cipher", None)
        try:
            # Key ids (never keys) show when a rotation reached each worker.
            self._trail().record(what, queues=queues, group=getattr(broker, "group_id", None),
                                 payload_key_ids=cipher.ring.ids if cipher else [])
        except OSError as e:
            # A trail that can't be written must not stop workers from stopping.
            logger.error("Could not record %s in the audit trail: %s", what, e)


class AuditedDeviceRegistry:
    """A :class:`DeviceRegistry` whose registrations and removals go into the trail."""

    def __init__(self, registry: DeviceRegistry, trail: Callable[[], AuditTrail]) -> None:
        self.registry = registry
        self._trail = trail

    def __repr__(self) -> str:
        return f"AuditedDeviceRegistry({self.registry!r})"

    def register(self, user_id: str, platform: str, token: str, app_id: str) -> Device:
        try:
            device = self.registry.register(user_id, platform, token, app_id)
        except Exception as e:
            self._trail().record("device.register", outcome="failed", user_id=user_id,
                                 platform=platform, token_hash=token_hash(token),
                                 error=type(e).__name__)
            raise
        self._trail().record("device.register", user_id=user_id, platform=platform,
                             token_hash=device.token_hash, app_id=app_id)
        return device

    def unregister(self, token: str) -> bool:
        removed = self.registry.unregister(token)
        self._trail().record("device.unregister", token_hash=token_hash(token),
                             removed=removed)
        return removed

    def purge_invalid(self, older_than_s: float) -> int:
        purged = self.registry.purge_invalid(older_than_s)
        if purged:
            self._trail().record("device.purge_invalid", count=purged,
                                 older_than_s=older_than_s)
        return purged

    # -- the rest of the registry, as it is ---------------------------------

    def mark_invalid(self, token: str, reason: str, *, invalid_since: float | None = None,
                     at: float | None = None) -> bool:
        return self.registry.mark_invalid(token, reason, invalid_since=invalid_since, at=at)

    def restore(self, *, since: float, reason: str | None = None) -> int:
        return self.registry.restore(since=since, reason=reason)

    def invalid_counts(self, *, since: float = 0.0) -> dict[str, int]:
        return self.registry.invalid_counts(since=since)

    def devices_for(self, user_id: str) -> list[Device]:
        return self.registry.devices_for(user_id)

    def count(self) -> int:
        return self.registry.count()

    def close(self) -> None:
        self.registry.close()


def kafka_publisher(producer: Callable[[], KafkaProducer], topic: str) -> Publish:
    """Sends each entry to ``topic`` without waiting; a failure is logged."""

    def publish(entry: bytes) -> None:
        future = producer().send(topic, value=entry)
        future.add_errback(lambda e: logger.error(
            "Audit entry not stored on topic %s: %s", topic, e))

    return publish


@contextlib.contextmanager
def operator_trail(settings: Settings) -> Iterator[AuditTrail]:
    """The trail of one operator command; entries also go to the audit topic
    (through a producer of the command's own, flushed at the end)."""
    made: list[KafkaProducer] = []

    def producer() -> KafkaProducer:
        if not made:
            made.append(KafkaProducer(bootstrap_servers=settings.bootstrap_servers,
                                      client_id=settings.kafka_client_id,
                                      **client_options(settings)))
        return made[0]

    topic = settings.audit_topic
    trail = build_trail(settings, kafka_publisher(producer, topic) if topic else None)
    try:
        yield trail
    finally:
        trail.close()
        for made_producer in made:
            made_producer.flush(timeout=PUBLISH_FLUSH_TIMEOUT_S)
            made_producer.close(timeout=PUBLISH_FLUSH_TIMEOUT_S)
