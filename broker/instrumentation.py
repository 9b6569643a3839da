"""What a broker and its workers report as they go, for whoever listens:
metrics, traces, logs. Nothing here counts or exports anything itself.

Two sources, one kind of listener (a callable taking an event):

* :class:`MessageEvents`, a Dramatiq middleware for any broker, reports how
  each message ended (processed, retried, skipped, or an outcome the actor
  set with :func:`report_outcome`) and how long its actor ran;
* :class:`~broker.kafka.KafkaBroker` (``events=``) reports what only it sees:
  each record sent, with its outcome, and each record written to a dead-letter
  topic (failed messages and undecodable records alike).

A listener runs on the thread that emits (a worker thread, the consumer
thread, the sender's thread): it must be quick and must not raise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.common import q_name

__all__ = [
    "PROCESSED",
    "RETRIED",
    "SKIPPED",
    "BrokerEvent",
    "EventListener",
    "MessageEvents",
    "MessageFinished",
    "RecordDeadLettered",
    "RecordSent",
    "report_outcome",
]

#: Outcomes MessageEvents reports; an actor may report its own instead of PROCESSED.
PROCESSED = "processed"
RETRIED = "retried"
SKIPPED = "skipped"


# Events are made once a message (or push) and read, never changed; not frozen
# all the same, since building a frozen dataclass costs a microsecond more.
@dataclass(slots=True)
class MessageFinished:
    """A message's run ended, or its retry was scheduled.

    ``outcome`` is None when the actor raised and what follows is reported
    apart (a :data:`RETRIED` event, or a :class:`RecordDeadLettered`);
    ``duration_s`` is None for events that are not an actor's run.
    """

    queue: str
    actor: str
    outcome: str | None
    duration_s: float | None


@dataclass(slots=True)
class RecordSent:
    """A record was handed to Kafka and acknowledged (``ok``), or refused."""

    topic: str
    ok: bool


@dataclass(slots=True)
class RecordDeadLettered:
    """A record is on its queue's dead-letter topic now (Kafka acknowledged it).

    ``queue`` is the canonical queue it came from; ``actor`` is read from the
    record's headers ("" when it had none: an undecodable record from elsewhere).
    """

    queue: str
    actor: str
    reason: str


BrokerEvent = MessageFinished | RecordSent | RecordDeadLettered

#: Receives every event; see the module's docstring for the rules.
EventListener = Callable[[Any], None]

_current = threading.local()


def report_outcome(outcome: str) -> None:
    """Called by an actor: the message it is running ends with ``outcome``
    instead of "processed" (say "expired_dropped" for stale work it dropped).
    Applies only if the actor then returns normally."""
    _current.outcome = outcome


class MessageEvents(dramatiq.Middleware):
    """Reports each message's end to ``listener`` as :class:`MessageFinished`.

    A message whose actor raised is reported again once its fate is known:
    :data:`RETRIED` when Dramatiq's Retries enqueues it to the delay queue
    (from ``after_enqueue``, so the middleware's place in the list does not
    matter); a dead letter is the broker's to report. Skipped messages that
    were also failed (AgeLimit) are dead letters too, so only the others
    count as :data:`SKIPPED`.
    """

    def __init__(self, listener: EventListener) -> None:
        self.listener = listener
        #: Canonical queue name by the name a message carries (a handful of queues).
        self._canonical: dict[str, str] = {}

    def _finished(self, message: dramatiq.Message | dramatiq.MessageProxy, outcome: str | None,
                  duration_s: float | None) -> MessageFinished:
        # A MessageProxy hands out its message's fields through __getattr__,
        # which Python reaches only after a failed lookup has raised an
        # AttributeError: 1.1 µs a field here, against 0.04 µs for the message
        # itself, and two fields were most of what this middleware cost a message.
        fields = getattr(message, "_message", message)
        queue = fields.queue_name
        canonical = self._canonical.get(queue)
        if canonical is None:
            canonical = self._canonical[queue] = q_name(queue)
        return MessageFinished(canonical, fields.actor_name, outcome, duration_s)

    def before_process_message(self, broker: dramatiq.Broker,
                               message: dramatiq.MessageProxy) -> None:
        # Worker threads run one message at a time, start to end.
        _current.started = time.perf_counter()
        _current.outcome = None

    def after_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy,
                              *, result: Any = None, exception: BaseException | None = None
                              ) -> None:
        started = getattr(_current, "started", None)
        duration = None if started is None else time.perf_counter() - started
        outcome = None if exception is not None else (_current.outcome or PROCESSED)
        _current.started = _current.outcome = None
        self.listener(self._finished(message, outcome, duration))

    def after_skip_message(self, broker: dramatiq.Broker,
                           message: dramatiq.MessageProxy) -> None:
        _current.started = _current.outcome = None
        if not message.failed:
            self.listener(self._finished(message, SKIPPED, None))

    def after_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message,
                      delay: int | None) -> None:
        # Retries sets "retries" and enqueues with a delay; the worker moving a
        # due retry back from the delay queue enqueues it without one, and is
        # not a second retry.
        if delay is not None and "retries" in message.options:
            self.listener(self._finished(message, RETRIED, None))
