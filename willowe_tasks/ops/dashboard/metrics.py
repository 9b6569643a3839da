"""Throughput, error rate and latency from the workers' Prometheus metrics.

The dashboard scrapes DASHBOARD_METRICS_URL every few seconds and keeps the
scrapes of the last DASHBOARD_WINDOW_S. Counters and histograms only ever
grow, except when a worker restarts; so what happened in the window is each
series' *increase* across it, with a drop read as a restart from zero (as
Prometheus' ``increase()`` does). Names are the metrics contract's
(``willowe_messages_total``, ``willowe_send_to_accepted_seconds``).
"""

from __future__ import annotations

import math
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from willowe_tasks.ops.names import band_of_topic
from willowe_tasks.priorities import BANDS

__all__ = ["MetricsWindow", "PriorityRates", "Scrape", "WindowStats", "histogram_quantile",
           "parse_exposition", "scrape"]

#: Messages by topic, actor and outcome.
MESSAGES = "willowe_messages_total"
#: send() → provider accepted, per priority (a histogram's buckets).
LATENCY_BUCKETS = "willowe_send_to_accepted_seconds_bucket"

#: Outcomes counted as errors in the error rate.
ERROR_OUTCOMES = frozenset({"retried", "dead_lettered"})

#: Longest wait for one scrape, in seconds.
SCRAPE_TIMEOUT_S = 5.0

#: Most bytes of a scrape read: an exposition of a few hundred series is tens of KiB.
MAX_SCRAPE_BYTES = 8 * 1024 * 1024

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Scrape:
    """The ``willowe_*`` samples of one scrape: (name, labels) → value."""

    at: float
    samples: Mapping[tuple[str, Labels], float]


def parse_exposition(text: str, at: float) -> Scrape:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("willowe_"):
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return Scrape(at, samples)


def scrape(url: str, *, at: float | None = None) -> Scrape:
    """Fetch and parse the exposition at ``url`` (urllib.error.URLError, ValueError)."""
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:  # noqa: S310
        text = response.read(MAX_SCRAPE_BYTES).decode("utf-8", "replace")
    return parse_exposition(text, time.time() if at is None else at)


@dataclass(frozen=True)
class PriorityRates:
    """One priority over the window."""

    processed_per_s: float
    handled: float
    errors: float
    p50_s: float | None
    p99_s: float | None

    @property
    def error_rate(self) -> float | None:
        """Share of the window's messages that were retried or dead-lettered."""
        return self.errors / self.handled if self.handled else None


@dataclass(frozen=True)
class WindowStats:
    span_s: float
    priorities: dict[str, PriorityRates]
    #: (unix seconds, messages processed a second) between consecutive scrapes.
    throughput: list[tuple[float, float]] = field(default_factory=list)


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile of a histogram from cumulative bucket counts by upper
    bound (``+Inf`` included), interpolated linearly inside the bucket, as
    Prometheus' ``histogram_quantile`` does. None when it counted nothing."""
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # past the highest finite bound: that bound is all we know
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


class MetricsWindow:
    """The scrapes of the last ``window_s`` seconds (and one before, as the
    baseline the first increase is measured from)."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._scrapes: deque[Scrape] = deque()
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.last_success: float | None = None

    def add(self, scrape: Scrape) -> None:
        with self._lock:
            self._scrapes.append(scrape)
            while len(self._scrapes) > 2 and self._scrapes[1].at <= scrape.at - self.window_s:
                self._scrapes.popleft()
            self.last_success = scrape.at
            self.last_error = None

    def failed(self, error: str) -> None:
        with self._lock:
            self.last_error = error

    def stats(self) -> WindowStats | None:
        """What happened in the window; None until there are two scrapes."""
        with self._lock:
            scrapes = list(self._scrapes)
        if len(scrapes) < 2:
            return None
        span = scrapes[-1].at - scrapes[0].at
        messages = _increases(scrapes, MESSAGES)
        buckets = _increases(scrapes, LATENCY_BUCKETS)
        priorities: dict[str, PriorityRates] = {}
        for band in BANDS:
            by_outcome: dict[str, float] = {}
            for labels, increase in messages.items():
                found = band_of_topic(dict(labels).get("topic", ""))
                if found is not None and found.word == band.word:
                    outcome = dict(labels).get("outcome", "")
                    by_outcome[outcome] = by_outcome.get(outcome, 0.0) + increase
            latency: dict[float, float] = {}
            for labels, increase in buckets.items():
                values = dict(labels)
                if values.get("priority") == band.word and "le" in values:
                    bound = float(values["le"])
                    latency[bound] = latency.get(bound, 0.0) + increase
            priorities[band.word] = PriorityRates(
                processed_per_s=by_outcome.get("processed", 0.0) / span if span > 0 else 0.0,
                handled=sum(by_outcome.values()),
                errors=sum(v for k, v in by_outcome.items() if k in ERROR_OUTCOMES),
                p50_s=histogram_quantile(0.5, latency),
                p99_s=histogram_quantile(0.99, latency))
        return WindowStats(span, priorities, _throughput(scrapes))


def _increases(scrapes: Iterable[Scrape], name: str) -> dict[Labels, float]:
    """Each series' increase across the scrapes, a drop counting as a restart."""
    total: dict[Labels, float] = {}
    previous: dict[Labels, float] | None = None
    for scrape in scrapes:
        current = {labels: v for (n, labels), v in scrape.samples.items() if n == name}
        if previous is not None:
            for labels, value in current.items():
                before = previous.get(labels, 0.0)
                total[labels] = total.get(labels, 0.0) + (value - before if value >= before
                                                          else value)
        previous = current
    return total


def _throughput(scrapes: list[Scrape]) -> list[tuple[float, float]]:
    points = []
    for before, after in zip(scrapes, scrapes[1:], strict=False):
        span = after.at - before.at
        if span <= 0:
            continue
        processed = sum(v for labels, v in _increases([before, after], MESSAGES).items()
                        if dict(labels).get("outcome") == "processed")
        points.append((after.at, processed / span))
    return points
