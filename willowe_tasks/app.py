"""The application's broker, built from settings and made Dramatiq's global
broker, so ``dramatiq willowe_tasks`` runs workers on it."""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import CurrentMessage, Retries, default_middleware

from broker import KafkaBroker
from willowe_tasks import logs
from willowe_tasks.housekeeping import HousekeepingMiddleware
from willowe_tasks.services import build_housekeeping
from willowe_tasks.settings import Settings, get_settings
from willowe_tasks.topics import PRIORITY_TOPICS

__all__ = ["broker", "build_broker"]


def build_broker(settings: Settings) -> KafkaBroker:
    middleware = [m() for m in default_middleware if m is not Retries]
    middleware.append(Retries(min_backoff=settings.kafka_retry_initial,
                              max_retries=settings.kafka_retry_retries))
    # Actors read their message id (the notification id) and send time.
    middleware.append(CurrentMessage())
    # Each worker process trims the ledger and the registry on a schedule.
    middleware.append(HousekeepingMiddleware(lambda: build_housekeeping(settings)))
    return KafkaBroker(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.kafka_group_id,
        client_id=settings.kafka_client_id,
        middleware=middleware,
        priority_queues=[(ceiling, spec.name) for ceiling, spec in PRIORITY_TOPICS],
        # `make topics` (or compose's topics service) owns their shape.
        create_topics=False,
    )


logs.install()
broker = build_broker(get_settings())
dramatiq.set_broker(broker)
