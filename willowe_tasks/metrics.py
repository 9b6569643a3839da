"""The workers' Prometheus metrics: a listener on the application's event bus.

Names follow Prometheus' conventions (base units, ``_total`` for counters)
and are a contract with the operator tools and dashboards that read them:
rename none. The lag, dead-letter and member gauges are not here: Kafka
knows them, and :mod:`willowe_tasks.exporter` reads them there, so they
exist while every worker is down.

=====================================  =========  ===============================
metric                                 type       labels
=====================================  =========  ===============================
willowe_messages_total                 counter    topic, actor, outcome
willowe_processing_seconds             histogram  actor
willowe_pushes_total                   counter    provider, outcome, reason
willowe_push_round_trip_seconds        histogram  provider
willowe_send_to_accepted_seconds       histogram  priority
willowe_producer_sends_total           counter    outcome
willowe_dead_letters_total             counter    topic, reason
willowe_token_guard_verdicts_total     counter    provider, reason, verdict
willowe_worker_start_time_seconds      gauge      (pid, in multiprocess mode)
=====================================  =========  ===============================

Label children are looked up once and kept: ``labels()`` takes a lock and
builds a tuple on every call, which the message path should not pay.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from broker.instrumentation import MessageFinished, RecordDeadLettered, RecordSent
from willowe_tasks.events import ACCEPTED, EventBus, PushFinished, TokenGuardVerdict

__all__ = ["DEAD_LETTERED", "Metrics"]

#: The outcome of ``willowe_messages_total`` for a message written to its ``.XQ``.
DEAD_LETTERED = "dead_lettered"

#: Actors here take milliseconds (analytics) to a push timeout (seconds).
PROCESSING_BUCKETS_S = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60)

#: One push: tens of milliseconds normally, up to the push timeout (10 s by default).
ROUND_TRIP_BUCKETS_S = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)

#: From send() to the provider: well under a second when workers keep up,
#: minutes to hours behind a backlog or an outage.
SEND_TO_ACCEPTED_BUCKETS_S = (.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900,
                              3600)


class _Children:
    """A metric's label children by label values, made once each."""

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[Hashable, Any] = {}

    def get(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            # (Two threads may both make it: labels() returns the same child.)
            child = self._children[values] = self._metric.labels(*values)
        return child


class Metrics:
    """The metrics, in ``registry`` (prometheus-client's default one if None).

    In prometheus-client's multiprocess mode (see
    :mod:`willowe_tasks.worker_metrics`) the values go to the run's shared
    files whatever the registry.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        def counter(name: str, doc: str, labels: list[str]) -> _Children:
            return _Children(Counter(name, doc, labels, **where))

        def histogram(name: str, doc: str, labels: list[str],
                      buckets: tuple[float, ...]) -> _Children:
            return _Children(Histogram(name, doc, labels, buckets=buckets, **where))

        where: dict[str, Any] = {} if registry is None else {"registry": registry}
        self.messages = counter(
            "willowe_messages_total",
            "Messages by how they ended: processed, retried, dead_lettered, expired_dropped,"
            " skipped.", ["topic", "actor", "outcome"])
        self.processing = histogram(
            "willowe_processing_seconds", "An actor's run time.", ["actor"],
            PROCESSING_BUCKETS_S)
        self.pushes = counter(
            "willowe_pushes_total",
            "Push requests by outcome (accepted, token_removed, token_kept, retry_later,"
            " refused, maybe_delivered) and the provider's reason.",
            ["provider", "outcome", "reason"])
        self.round_trip = histogram(
            "willowe_push_round_trip_seconds", "One push request to a provider.", ["provider"],
            ROUND_TRIP_BUCKETS_S)
        self.send_to_accepted = histogram(
            "willowe_send_to_accepted_seconds",
            "From send() (the message's timestamp) to the provider accepting the push.",
            ["priority"], SEND_TO_ACCEPTED_BUCKETS_S)
        self.sends = counter("willowe_producer_sends_total",
                             "Records sent to Kafka, by outcome (ok, failed).", ["outcome"])
        self.dead_letters = counter(
            "willowe_dead_letters_total",
            "Records written to a dead-letter topic, by source topic and reason"
            " (failed, undecodable).", ["topic", "reason"])
        self.guard_verdicts = counter(
            "willowe_token_guard_verdicts_total",
            "The removal guard's verdicts on rejected tokens (remove, remove_and_recheck,"
            " hold).", ["provider", "reason", "verdict"])
        # One series per process in multiprocess mode ("liveall" adds a pid
        # label, and drops a process that shut down cleanly): how many
        # processes a scrape covers, and when each started.
        self.started = Gauge("willowe_worker_start_time_seconds",
                             "When this worker process started (unix seconds).",
                             multiprocess_mode="liveall", **where)

    def subscribe(self, bus: EventBus) -> Callable[[], None]:
        """Count ``bus``'s events from now on; returns what undoes it."""
        handlers: list[tuple[type, Callable[[Any], None]]] = [
            (MessageFinished, self.on_message_finished),
            (RecordDeadLettered, self.on_dead_lettered),
            (RecordSent, self.on_sent),
            (PushFinished, self.on_push),
            (TokenGuardVerdict, self.on_guard_verdict),
        ]
        for kind, handler in handlers:
            bus.subscribe(kind, handler)
        self.started.set(time.time())

        def unsubscribe() -> None:
            for kind, handler in handlers:
                bus.unsubscribe(kind, handler)
        return unsubscribe

    def on_message_finished(self, event: MessageFinished) -> None:
        if event.outcome is not None:
            self.messages.get(event.queue, event.actor, event.outcome).inc()
        if event.duration_s is not None:
            self.processing.get(event.actor).observe(event.duration_s)

    def on_dead_lettered(self, event: RecordDeadLettered) -> None:
        self.messages.get(event.queue, event.actor, DEAD_LETTERED).inc()
        self.dead_letters.get(event.queue, event.reason).inc()

    def on_sent(self, event: RecordSent) -> None:
        self.sends.get("ok" if event.ok else "failed").inc()

    def on_push(self, event: PushFinished) -> None:
        self.pushes.get(event.provider, event.outcome, event.reason).inc()
        self.round_trip.get(event.provider).observe(event.round_trip_s)
        if event.outcome == ACCEPTED:
            accepted_at = event.started_at + event.round_trip_s
            self.send_to_accepted.get(event.priority).observe(
                max(0.0, accepted_at - event.sent_at))

    def on_guard_verdict(self, event: TokenGuardVerdict) -> None:
        self.guard_verdicts.get(event.provider, event.reason, event.verdict).inc()
