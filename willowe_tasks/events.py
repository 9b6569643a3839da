"""The application's event bus: business code says what happened, listeners
(metrics, traces, logs) decide what to make of it.

Dispatch emits one event per push, per stale notification dropped and per
notification deferred, the providers' circuit breakers their changes of
state, the removal guard's verdicts come through here, and the broker's own events
(:mod:`broker.instrumentation`: messages finished, records sent and
dead-lettered) are fed into the same bus by the application. Nothing in
the delivery path names a metrics library.

Emitting is synchronous, on the emitter's thread, and costs a dictionary
lookup when nobody listens. A listener must be quick; one that raises is
logged and skipped, never allowed to fail a delivery.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "BreakerChanged",
    "EventBus",
    "NotificationDeferred",
    "NotificationExpired",
    "PushFinished",
    "TokenGuardVerdict",
]

logger = logging.getLogger(__name__)

E = TypeVar("E")

#: What a push came to (the ``outcome`` of :class:`PushFinished`).
ACCEPTED = "accepted"
TOKEN_REMOVED = "token_removed"
#: The provider rejected the token, but it was registered again since: kept.
TOKEN_KEPT = "token_kept"
RETRY_LATER = "retry_later"
REFUSED = "refused"
MAYBE_DELIVERED = "maybe_delivered"


# Events are made once a message (or push) and read, never changed; not frozen
# all the same, since building a frozen dataclass costs a microsecond more.
@dataclass(slots=True)
class PushFinished:
    """One push request to a provider got its answer (or none).

    ``reason`` is the provider's reason ("" when it accepted);
    ``sent_at`` is when the notification was sent (unix seconds), ``started_at``
    when this request started, and ``round_trip_s`` how long it took.
    """

    provider: str
    outcome: str
    reason: str
    priority: str
    sent_at: float
    started_at: float
    round_trip_s: float


@dataclass(slots=True)
class NotificationExpired:
    """A notification's deadline had passed when a worker got to it: dropped."""

    kind: str
    priority: str


@dataclass(slots=True)
class NotificationDeferred:
    """Some of a notification's devices must wait (see
    :mod:`willowe_tasks.deferral`): the notification goes back to Kafka for
    ``delay_s`` without spending a retry. One event per provider and reason
    (``provider_down``, ``provider_throttled``, ``quota_spent``,
    ``device_throttled``)."""

    kind: str
    priority: str
    provider: str
    reason: str
    delay_s: float


@dataclass(slots=True)
class BreakerChanged:
    """A provider credential's circuit breaker changed state (``closed``,
    ``open``, ``half_open``; see :mod:`willowe_tasks.breakers`)."""

    provider: str
    #: Which credential: "apns:<team>/<key id>", "fcm:<project>", …
    credential: str
    old: str
    new: str


@dataclass(slots=True)
class TokenGuardVerdict:
    """The removal guard's answer about a rejected token (``verdict``: remove,
    remove_and_recheck or hold; see :mod:`willowe_tasks.token_guard`)."""

    provider: str
    reason: str
    verdict: str


class EventBus:
    """Routes each event to the handlers subscribed to its type."""

    def __init__(self) -> None:
        self._handlers: dict[type, tuple[Callable[[Any], None], ...]] = {}
        self._lock = threading.Lock()

    def subscribe(self, kind: type[E], handler: Callable[[E], None]) -> None:
        """Call ``handler`` with every event of type ``kind`` (exactly that type)."""
        with self._lock:
            # Copied on write: emit() reads without the lock.
            self._handlers = {**self._handlers,
                              kind: (*self._handlers.get(kind, ()), handler)}

    def unsubscribe(self, kind: type[E], handler: Callable[[E], None]) -> None:
        with self._lock:
            kept = tuple(h for h in self._handlers.get(kind, ()) if h != handler)
            self._handlers = {**self._handlers, kind: kept}

    def wants(self, kind: type) -> bool:
        """Whether anybody listens to ``kind`` (skip building an event nobody reads)."""
        return bool(self._handlers.get(kind))

    def emit(self, event: object) -> None:
        for handler in self._handlers.get(type(event), ()):
            try:
                handler(event)
            except Exception:
                logger.exception("Event handler %r failed on a %s.", handler,
                                 type(event).__name__)
