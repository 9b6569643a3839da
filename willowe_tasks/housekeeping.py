"""State that would grow without bound, trimmed on a schedule in each worker.

* The delivery ledger forgets settled pairs older than ``LEDGER_RETENTION_DAYS``
  (at least the longest lifetime of a notification, so a redelivery within it
  is still recognised).
* The device registry forgets devices marked invalid for longer than
  ``INVALID_DEVICE_RETENTION_DAYS`` (long enough to restore them after a
  misconfiguration is noticed).

Each worker process runs it on a thread of its own, first a random part of
the interval after start (so processes started together don't all prune at
once), then every interval. Both jobs are idempotent: several processes doing
them is harmless.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence

import dramatiq

__all__ = ["Housekeeping", "HousekeepingMiddleware"]

logger = logging.getLogger(__name__)

Job = tuple[str, Callable[[], int]]


class Housekeeping:
    """Runs ``jobs`` (name, callable returning how many rows it removed) every
    ``interval_s`` on a daemon thread, until :meth:`stop`."""

    def __init__(self, jobs: Callable[[], Sequence[Job]], *, interval_s: float,
                 first_delay_s: float | None = None) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self._jobs = jobs
        self._interval_s = interval_s
        self._first_delay_s = (random.uniform(0, interval_s) if first_delay_s is None
                               else first_delay_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="housekeeping", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def run_once(self) -> dict[str, int]:
        """Run every job now; a job that fails is logged and the others still run."""
        removed = {}
        for name, job in self._jobs():
            try:
                removed[name] = job()
            except Exception:
                logger.exception("Housekeeping job %s failed; it runs again next time.", name)
        return removed

    def _run(self) -> None:
        delay = self._first_delay_s
        while not self._stop.wait(delay):
            self.run_once()
            delay = self._interval_s


class HousekeepingMiddleware(dramatiq.Middleware):
    """Starts a :class:`Housekeeping` in each worker process, stops it at shutdown."""

    def __init__(self, make: Callable[[], Housekeeping]) -> None:
        self._make = make
        self._running: Housekeeping | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._running = self._make()
        self._running.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self._running is not None:
            self._running.stop()
            self._running = None
