"""A circuit breaker per provider credential: stop pushing to a provider
that is down, probe it every few seconds, resume when it answers.

::

    closed ──(``failures`` outage answers in a row)──▶ open
    open ──(``probe_interval_s`` later, one caller)──▶ half-open: that push is the probe
    half-open ──(the probe is answered)──▶ closed
    half-open ──(the probe fails)──▶ open, and the next probe is due an interval later

Only answers that say the provider itself is failing count (:func:`is_outage`:
5xx, timeouts, connections refused or dropped); a 429 is a throttle, and a
refusal of one push (400, 410) is an answer from a provider that works.
While the breaker is open, dispatch defers the provider's devices instead of
pushing to them (:mod:`willowe_tasks.deferral`), so an outage spends no
notification's retries, and the other providers' devices go on as before.

Breakers live in each worker process (:class:`willowe_tasks.services.Services`):
every process finds out on its own, after ``failures`` answers, and probes
on its own. A restarted process starts closed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum

from willowe_tasks.providers import TransientDeliveryError

__all__ = ["BreakerState", "CircuitBreaker", "is_outage"]

logger = logging.getLogger(__name__)

#: HTTP statuses from this one up say the provider failed, not the request.
SERVER_ERROR_STATUS = 500


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def is_outage(error: TransientDeliveryError) -> bool:
    """Whether ``error`` says the provider is failing: a 5xx, or no answer at
    all (a timeout, a refused or dropped connection, its auth server away).
    A throttle (429) is not an outage: the provider works, and says to slow down."""
    if error.throttled is not None:
        return False
    return error.status_code is None or error.status_code >= SERVER_ERROR_STATUS


class CircuitBreaker:
    """One provider credential's breaker; thread-safe.

    ``failures`` is the run of outage answers that opens it (0: never opens).
    ``on_change(old, new)`` is called on every change of state, outside the
    lock. ``clock`` is monotonic seconds.
    """

    def __init__(self, name: str, *, failures: int, probe_interval_s: float,
                 on_change: Callable[[BreakerState, BreakerState], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 0:
            raise ValueError(f"failures must be 0 (never open) or more, got {failures}")
        if probe_interval_s <= 0:
            raise ValueError(f"probe_interval_s must be positive, got {probe_interval_s}")
        self.name = name
        self.failures = failures
        self.probe_interval_s = probe_interval_s
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._run = 0
        self._next_probe_at = 0.0

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, {self._state.value})"

    @property
    def state(self) -> BreakerState:
        return self._state

    def blocked_for(self) -> float | None:
        """Seconds until the provider may be tried again (the next probe), or
        None when a push may go now. Changes nothing: ask it before doing work
        a push needs, then take the slot with :meth:`allow`."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return None
            wait = self._next_probe_at - self._clock()
            return wait if wait > 0 else None

    def allow(self) -> bool:
        """Whether a push may go now. Closed: always. Open: once per probe
        interval, and that push is the probe (the breaker turns half-open)."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return True
            now = self._clock()
            if now < self._next_probe_at:
                return False
            # A probe is due; in half-open, the last one never reported back
            # (its thread died): another goes, an interval later.
            self._next_probe_at = now + self.probe_interval_s
            old, self._state = self._state, BreakerState.HALF_OPEN
        self._changed(old, BreakerState.HALF_OPEN)
        return True

    def succeeded(self) -> None:
        """The provider answered (whatever it said about the push)."""
        with self._lock:
            self._run = 0
            old, self._state = self._state, BreakerState.CLOSED
        self._changed(old, BreakerState.CLOSED)

    def failed(self) -> BreakerState:
        """An outage answer (see :func:`is_outage`); returns the state after it."""
        with self._lock:
            self._run += 1
            old = self._state
            if old is BreakerState.HALF_OPEN or (
                    old is BreakerState.CLOSED and 0 < self.failures <= self._run):
                self._state = BreakerState.OPEN
                self._next_probe_at = max(self._next_probe_at,
                                          self._clock() + self.probe_interval_s)
            new = self._state
        self._changed(old, new)
        return new

    def _changed(self, old: BreakerState, new: BreakerState) -> None:
        if old is new:
            return
        if new is BreakerState.OPEN and old is BreakerState.CLOSED:
            logger.warning("%s is down (%d failed pushes in a row): its pushes are deferred,"
                           " with a probe every %gs.", self.name, self._run,
                           self.probe_interval_s)
        elif new is BreakerState.CLOSED:
            logger.warning("%s answers again: its pushes resume.", self.name)
        if self._on_change is not None:
            self._on_change(old, new)
