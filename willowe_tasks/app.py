"""An application: a Kafka broker built from settings, the notification actors
declared on it, and, in each process, the services they deliver with.

``import willowe_tasks`` builds the *default* application from the
environment and makes its broker Dramatiq's global one, so
``dramatiq willowe_tasks`` runs workers on it and ``from willowe_tasks import
send_match`` sends through it. Building one opens no connection and starts no
thread: Kafka clients, push providers and databases are made on first use.

Tests and tools build their own from the settings they need::

    app = App(load_settings(kafka_broker="127.0.0.1:19092", kafka_group_id="tests"))
    app.actors.send_match.send("user123", {"name": "Анна", "age": 25})
    worker = dramatiq.Worker(app.broker)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.cli import RET_CONNECT
from dramatiq.middleware import CurrentMessage, Retries, default_middleware

from broker import KafkaBroker
from broker.instrumentation import MessageEvents, report_outcome
from broker.per_process import PerProcess
from broker.spool import SqliteSpool
from willowe_tasks import logs
from willowe_tasks.actors import Actors, declare_actors
from willowe_tasks.audit import AuditTrail, build_trail
from willowe_tasks.audit_hooks import AuditedDeviceRegistry, AuditMiddleware, kafka_publisher
from willowe_tasks.database_url import DatabaseNotReady
from willowe_tasks.events import EventBus, NotificationExpired
from willowe_tasks.housekeeping import HousekeepingMiddleware
from willowe_tasks.kafka_clients import client_options, payload_codec, producer_options
from willowe_tasks.priorities import BANDS
from willowe_tasks.services import Services, build_housekeeping, build_services
from willowe_tasks.settings import Settings, get_settings
from willowe_tasks.tracing import TraceContext
from willowe_tasks.worker_metrics import WorkerMetrics

__all__ = ["App", "ServicesAtBoot", "build_broker", "default_app"]

logger = logging.getLogger(__name__)


class App:
    """The notification application on a broker of its own.

    ``events`` is its event bus (:mod:`willowe_tasks.events`): the broker's,
    the workers' and dispatch's events, for metrics and traces.
    ``tracer_provider``: OpenTelemetry's, for spans (default: the global one).
    """

    def __init__(self, settings: Settings, *, tracer_provider: Any = None) -> None:
        self.settings = settings
        self.events = EventBus()
        self.broker = build_broker(
            settings, events=self.events.emit if settings.metrics_enabled else None)
        self._audit: PerProcess[AuditTrail] = PerProcess(self._build_trail)
        self._services: PerProcess[Services] = PerProcess(self._build_services)
        self.actors: Actors = declare_actors(
            self.broker, self.services, deliver_inline=settings.send_fallback == "direct")
        self.broker.add_middleware(ServicesAtBoot(self.services))
        # Each worker process trims the ledger and the registry on a schedule.
        self.broker.add_middleware(
            HousekeepingMiddleware(lambda: build_housekeeping(self.services, settings)))
        # Every record carries a traceparent; spans when OpenTelemetry is configured.
        self.broker.add_middleware(TraceContext(self.events, tracer_provider=tracer_provider))
        if settings.metrics_enabled:
            self.broker.add_middleware(MessageEvents(self.events.emit))
            # A stale notification dropped is a message outcome of its own.
            self.events.subscribe(NotificationExpired,
                                  lambda _: report_outcome("expired_dropped"))
            self.broker.add_middleware(WorkerMetrics(self.events, settings))
        self.broker.add_middleware(AuditMiddleware(self.audit))

    def services(self) -> Services:
        """This process's services, built on first use."""
        return self._services.get()

    def audit(self) -> AuditTrail:
        """This process's audit trail, opened on first use."""
        return self._audit.get()

    def close(self) -> None:
        """Close the broker's clients and this process's services."""
        self.broker.close()
        self._services.close(lambda services: services.close())
        self._audit.close(lambda trail: trail.close())

    def _build_services(self) -> Services:
        services = build_services(self.settings, events=self.events)
        # Registrations and removals go into the audit trail.
        services.registry = AuditedDeviceRegistry(services.registry, self.audit)
        return services

    def _build_trail(self) -> AuditTrail:
        topic = self.settings.audit_topic
        publish = kafka_publisher(lambda: self.broker.producer, topic) if topic else None
        return build_trail(self.settings, publish)


class ServicesAtBoot(dramatiq.Middleware):
    """Builds each worker process's services as it boots (``dramatiq
    willowe_tasks``), so a database that can't be used (unreachable, refusing
    the login, schema behind) stops the workers at start-up, naming
    ``DATABASE_URL`` and the host, instead of failing the first push."""

    def __init__(self, services: Callable[[], Services]) -> None:
        self._services = services

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        try:
            self._services()
        except DatabaseNotReady as e:
            logger.critical("Cannot start: %s", e)
            # Dramatiq's status for "connection failed during worker start-up";
            # its main process stops the other workers and exits with it.
            raise SystemExit(RET_CONNECT) from None


def build_broker(settings: Settings, events: Callable[[Any], None] | None = None
                 ) -> KafkaBroker:
    middleware = [m() for m in default_middleware if m is not Retries]
    middleware.append(Retries(min_backoff=settings.kafka_retry_initial,
                              max_retries=settings.kafka_retry_retries))
    # Actors read their message id (the notification id) and send time.
    middleware.append(CurrentMessage())
    return KafkaBroker(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.kafka_group_id,
        client_id=settings.kafka_client_id,
        middleware=middleware,
        priority_queues=[(b.actor_priority, b.topic.name) for b in BANDS],
        # `make topics` (or compose's topics service) owns their shape.
        create_topics=False,
        send_timeout_ms=settings.kafka_send_timeout_ms,
        probe_interval_ms=settings.kafka_probe_interval_ms,
        spool=(SqliteSpool(settings.spool_path, max_records=settings.spool_max_records)
               if settings.send_fallback == "spool" and settings.spool_path else None),
        static_membership=settings.kafka_static_membership,
        membership_dir=settings.kafka_membership_dir,
        events=events,
        payload_codec=payload_codec(settings),
        producer_options=producer_options(settings),
        **client_options(settings),
    )


_default: App | None = None
_default_lock = threading.Lock()


def default_app() -> App:
    """The application the environment describes, built once; its broker is
    Dramatiq's global broker."""
    global _default
    with _default_lock:
        if _default is None:
            logs.install()
            _default = App(get_settings())
            dramatiq.set_broker(_default.broker)
        return _default
