"""One process's share of a fleet-wide quota: tokens taken from the shared
bucket in small batches, spent locally, and let go of if not spent soon.

Why batches: a push must not cost a database round trip. Why they expire
after :data:`HOLD_S`: a process that took tokens and spends them later would
let the fleet exceed its rate in the window where it does. With every token
spent within ``HOLD_S`` of being taken, and each push reaching the provider
within :data:`TRIP_S` of being sent, the pushes the provider counts in any
window of ``T`` seconds used tokens taken within ``T + HOLD_S + TRIP_S``: at
most ``capacity + rate × (T + HOLD_S + TRIP_S)``. :func:`fleet_bucket` sizes
the shared bucket so that this stays within ``per_minute + burst`` for a
60-second window.

A batch doubles when it was spent before it expired and halves when tokens
were let go of, between 1 and ``max_batch``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from willowe_tasks.quota.base import Bucket, QuotaStore

__all__ = ["HOLD_S", "MAX_BATCH", "TRIP_S", "QuotaGate", "fleet_bucket", "min_burst"]

#: Longest a process keeps tokens it took, in seconds: long enough for a few
#: pushes' round trips, short next to the quota's minute.
HOLD_S = 0.5

#: Allowance for a push's way to the provider, in seconds: a push sent at
#: the end of one window may be counted in the next.
TRIP_S = 0.5

#: Most tokens a process takes in one round trip.
MAX_BATCH = 100

#: The window a provider's per-minute quota counts over, in seconds.
MINUTE_S = 60.0

#: Longest single sleep while waiting for a token, in seconds (a wait is
#: re-checked at least this often).
MAX_SLEEP_S = 0.25


def min_burst(per_minute: int) -> int:
    """The smallest burst :func:`fleet_bucket` accepts for ``per_minute``: what
    processes may hold and what may be on its way, plus one token."""
    return _margin(per_minute) + 1


def _margin(per_minute: int) -> int:
    return math.ceil(per_minute / MINUTE_S * (HOLD_S + TRIP_S))


def fleet_bucket(name: str, *, per_minute: int, burst: int) -> Bucket:
    """The shared bucket for a quota of ``per_minute`` messages, such that the
    fleet sends at most ``per_minute + burst`` in any 60 seconds, the tokens
    processes hold included."""
    if burst < min_burst(per_minute):
        raise ValueError(f"burst must be at least {min_burst(per_minute)} for {per_minute} a"
                         f" minute (what processes may hold for {HOLD_S:g}s and send in"
                         f" {TRIP_S:g}s, plus one)")
    return Bucket(name, rate_per_s=per_minute / MINUTE_S, capacity=burst - _margin(per_minute))


class QuotaGate:
    """This process's door to ``bucket`` in ``store``; thread-safe.
    ``clock`` is monotonic seconds; ``sleep`` waits (both for tests)."""

    def __init__(self, store: QuotaStore, bucket: Bucket, *, max_batch: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = store
        self.bucket = bucket
        #: No bigger than what the fleet's rate makes in a hold: a batch
        #: should be spendable before it expires.
        self.max_batch = max_batch or max(1, min(MAX_BATCH,
                                                 int(bucket.rate_per_s * HOLD_S / 2)))
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._batch = 1
        self._tokens = 0
        self._expires_at = 0.0
        self._empty_until = 0.0

    def take(self, max_wait_s: float = 0.0) -> float:
        """Take one token, waiting for one up to ``max_wait_s``. Returns 0.0
        when taken; otherwise the seconds until one is likely (a caller that
        can't wait that long comes back later)."""
        deadline = self._clock() + max_wait_s
        while True:
            wait = self._try()
            if wait == 0.0:
                return 0.0
            left = deadline - self._clock()
            if wait > left:
                return wait
            self._sleep(min(wait, MAX_SLEEP_S))

    def hold_off(self, seconds: float) -> None:
        """The provider said the quota is spent (a 429 despite the bucket: other
        senders on the same quota): take nothing for ``seconds``."""
        with self._lock:
            self._tokens = 0
            self._empty_until = max(self._empty_until, self._clock() + seconds)

    def _try(self) -> float:
        with self._lock:
            now = self._clock()
            if self._tokens > 0 and now < self._expires_at:
                self._tokens -= 1
                return 0.0
            if now < self._empty_until:
                return self._empty_until - now
            # The last batch was spent before it expired: ask for more. Some of
            # it expired unspent: less.
            if self._tokens > 0:
                self._batch = max(1, self._batch // 2)
            elif now < self._expires_at:
                self._batch = min(self.max_batch, self._batch * 2)
            # The hold runs from before the request: the store's moment of taking
            # comes later, so tokens are never held past HOLD_S of it.
            started = now
            grant = self.store.take(self.bucket, self._batch)
            if grant.granted == 0:
                self._tokens, self._expires_at = 0, 0.0
                self._empty_until = self._clock() + grant.wait_s
                return max(grant.wait_s, 1e-3)
            self._tokens = grant.granted - 1
            self._expires_at = started + HOLD_S
            return 0.0
