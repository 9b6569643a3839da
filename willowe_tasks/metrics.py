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

Counting costs the message path a few dictionary updates: each thread tallies
into a dictionary of its own, and :meth:`Metrics.flush` (every
``FLUSH_INTERVAL_S`` in a worker) adds what grew to the prometheus-client
values. In multiprocess mode each of those writes takes a process-wide lock
and touches a memory-mapped file (2-4 µs a message, a histogram being
two writes), which cost a GIL-bound drain 15 % of its rate; batched, a
second's worth of messages makes one write per series. A finished message,
the one event every message makes, is one dictionary lookup: its counter
and its actor's run time share a row (see :class:`_ThreadTally`).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from broker.instrumentation import MessageFinished, RecordDeadLettered, RecordSent
from willowe_tasks.breakers import BreakerState
from willowe_tasks.events import (
    ACCEPTED,
    BreakerChanged,
    EventBus,
    NotificationDeferred,
    PushFinished,
    TokenGuardVerdict,
)

__all__ = ["DEAD_LETTERED", "FLUSH_INTERVAL_S", "Metrics"]

#: How often a worker adds its tallies to the shared values: how stale a scrape may be.
FLUSH_INTERVAL_S = 1.0

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

    def __init__(self, metric: Any, buckets: tuple[float, ...] = ()) -> None:
        self._metric = metric
        self._children: dict[Hashable, Any] = {}
        #: Upper bounds of a histogram's buckets (empty for a counter).
        self.buckets = buckets

    def get(self, values: tuple[str, ...]) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


#: Tally keys: (series, label values) for a counter; (series, label values,
#: bucket index) for a histogram's bucket, (series, label values, SUM) for its sum.
_SUM = -1

#: A finished-message row: messages counted, seconds run, then one count per
#: processing bucket (+Inf's last).
_COUNT, _SECONDS, _FIRST_BUCKET = 0, 1, 2


class _ThreadTally:
    """What one thread counted since it started; only that thread writes here.

    ``messages`` keys a row (see ``_COUNT``) by (queue, actor, outcome), so a
    finished message costs one lookup instead of a counter's and two of the
    histogram's keys (1.1 µs a message instead of 2.2); :meth:`Metrics.flush`
    splits rows into the two series.
    """

    __slots__ = ("counts", "messages")

    def __init__(self) -> None:
        self.counts: dict[tuple[Any, ...], float] = {}
        self.messages: dict[tuple[str, str, str | None], list[float]] = {}


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
            return _Children(Histogram(name, doc, labels, buckets=buckets, **where), buckets)

        self._local = threading.local()
        self._lock = threading.Lock()  # flushes, and threads' first tallies
        #: Every thread's tally: only its own thread writes to it.
        self._tallies: list[_ThreadTally] = []
        #: What each key's tallies added up to at the last flush.
        self._flushed: dict[tuple[Any, ...], float] = {}
        self._stop = threading.Event()

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
        self.deferred = counter(
            "willowe_notifications_deferred_total",
            "Notifications put back on their delay queue without spending a retry, by the"
            " provider and why (provider_down, provider_throttled, quota_spent,"
            " device_throttled).", ["provider", "reason"])
        self.breaker_changes = counter(
            "willowe_provider_breaker_changes_total",
            "A provider credential's circuit breaker changing state, by the state it went"
            " to (open, half_open, closed).", ["provider", "state"])
        # Set, not tallied: a breaker changes seldom, and a scrape must show it
        # open at once. "livemax": open if any live process has it open.
        self.breaker_open = Gauge(
            "willowe_provider_breaker_open",
            "1 while a provider credential's circuit breaker is open or probing in any"
            " worker process, else 0.", ["provider", "credential"],
            multiprocess_mode="livemax", **where)
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
            (NotificationDeferred, self.on_deferred),
            (BreakerChanged, self.on_breaker_changed),
        ]
        for kind, handler in handlers:
            bus.subscribe(kind, handler)
        self.started.set(time.time())

        def unsubscribe() -> None:
            for kind, handler in handlers:
                bus.unsubscribe(kind, handler)
        return unsubscribe

    def on_message_finished(self, event: MessageFinished) -> None:
        rows = self._tally().messages
        key = (event.queue, event.actor, event.outcome)
        row = rows.get(key)
        if row is None:
            row = rows[key] = [0.0] * (_FIRST_BUCKET + len(PROCESSING_BUCKETS_S) + 1)
        if event.outcome is not None:
            row[_COUNT] += 1
        duration = event.duration_s
        if duration is not None:
            row[_SECONDS] += duration
            row[_FIRST_BUCKET + bisect.bisect_left(PROCESSING_BUCKETS_S, duration)] += 1

    def on_dead_lettered(self, event: RecordDeadLettered) -> None:
        self._add(self.messages, (event.queue, event.actor, DEAD_LETTERED))
        self._add(self.dead_letters, (event.queue, event.reason))

    def on_sent(self, event: RecordSent) -> None:
        self._add(self.sends, ("ok" if event.ok else "failed",))

    def on_push(self, event: PushFinished) -> None:
        tally = self._tally().counts
        self._add(self.pushes, (event.provider, event.outcome, event.reason))
        self._observe(tally, self.round_trip, (event.provider,), event.round_trip_s)
        if event.outcome == ACCEPTED:
            accepted_at = event.started_at + event.round_trip_s
            self._observe(tally, self.send_to_accepted, (event.priority,),
                          max(0.0, accepted_at - event.sent_at))

    def on_guard_verdict(self, event: TokenGuardVerdict) -> None:
        self._add(self.guard_verdicts, (event.provider, event.reason, event.verdict))

    def on_deferred(self, event: NotificationDeferred) -> None:
        self._add(self.deferred, (event.provider, event.reason))

    def on_breaker_changed(self, event: BreakerChanged) -> None:
        self._add(self.breaker_changes, (event.provider, event.new))
        self.breaker_open.labels(event.provider, event.credential).set(
            0 if event.new == BreakerState.CLOSED else 1)

    # -- tallies -------------------------------------------------------------

    def _tally(self) -> _ThreadTally:
        tally: _ThreadTally | None = getattr(self._local, "tally", None)
        if tally is None:
            tally = self._local.tally = _ThreadTally()
            with self._lock:
                self._tallies.append(tally)
        return tally

    def _add(self, metric: _Children, values: tuple[str, ...]) -> None:
        tally = self._tally().counts
        key = (metric, values)
        tally[key] = tally.get(key, 0) + 1

    @staticmethod
    def _observe(tally: dict[tuple[Any, ...], float], metric: _Children,
                 values: tuple[str, ...], amount: float) -> None:
        # The first bucket whose upper bound holds it; past the last, +Inf's.
        bucket = (metric, values, bisect.bisect_left(metric.buckets, amount))
        tally[bucket] = tally.get(bucket, 0) + 1
        total = (metric, values, _SUM)
        tally[total] = tally.get(total, 0) + amount

    def flush(self) -> None:
        """Add what every thread counted since the last flush to the values
        a scrape reads."""
        with self._lock:
            sums: dict[tuple[Any, ...], float] = {}
            for tally in self._tallies:
                # (A dict copy happens under the GIL: no update is half seen.)
                for key, value in tally.counts.copy().items():
                    sums[key] = sums.get(key, 0) + value
                self._sum_message_rows(tally, sums)
            for key, value in sums.items():
                grown = value - self._flushed.get(key, 0)
                if grown:
                    self._write(key, grown)
                    self._flushed[key] = value

    def _sum_message_rows(self, tally: _ThreadTally,
                          sums: dict[tuple[Any, ...], float]) -> None:
        """Add a thread's finished-message rows to ``sums`` under the keys
        of ``willowe_messages_total`` and ``willowe_processing_seconds``."""
        for (queue, actor, outcome), live_row in tally.messages.copy().items():
            # A row may be mid-update (count before seconds): what this flush
            # misses, the next one adds, as all tallies only grow.
            row = live_row[:]
            if outcome is not None:
                key: tuple[Any, ...] = (self.messages, (queue, actor, outcome))
                sums[key] = sums.get(key, 0) + row[_COUNT]
            key = (self.processing, (actor,), _SUM)
            sums[key] = sums.get(key, 0) + row[_SECONDS]
            for bucket, count in enumerate(row[_FIRST_BUCKET:]):
                if count:
                    key = (self.processing, (actor,), bucket)
                    sums[key] = sums.get(key, 0) + count

    @staticmethod
    def _write(key: tuple[Any, ...], grown: float) -> None:
        metric: _Children = key[0]
        child = metric.get(key[1])
        if len(key) == 2:
            child.inc(grown)
        elif key[2] == _SUM:
            child._sum.inc(grown)
        else:
            # prometheus-client has no public way to add n observations; a
            # histogram child keeps one value per bucket (non-cumulative) and
            # its sum, as observe() updates them (checked by the scrape tests).
            child._buckets[key[2]].inc(grown)

    def flush_every(self, interval_s: float = FLUSH_INTERVAL_S) -> threading.Thread:
        """Flush from a daemon thread every ``interval_s`` until :meth:`stop`."""
        def run() -> None:
            while not self._stop.wait(interval_s):
                self.flush()

        thread = threading.Thread(target=run, name="metrics-flush", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Stop flushing, after a last flush."""
        self._stop.set()
        self.flush()
