"""A circuit breaker for sending to Kafka: fail at once while Kafka is away.

A web request that sends a message must not wait out a dead Kafka each time
(the guide's ``try { send } catch { old path }``): after one send finds Kafka
gone, the circuit opens and every send fails at once, until a probe in the
background finds Kafka answering again every ``probe_interval_s``.

Only "Kafka can't be reached" opens it (the broker decides which failures
mean that); a message Kafka refuses for itself leaves it closed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from dramatiq.errors import ConnectionFailed

__all__ = ["CircuitOpen", "SendCircuit"]

logger = logging.getLogger(__name__)


class CircuitOpen(ConnectionFailed):
    """Kafka was unreachable a moment ago; this send was not tried.

    Nothing of the message reached Kafka (``maybe_sent`` is False).
    """

    maybe_sent = False


class SendCircuit:
    """Closed (sends go through) or open (they fail at once).

    ``probe`` returns whether Kafka answers; it runs on a thread of the
    circuit's own while the circuit is open, never in a caller's send.
    ``where`` names Kafka in errors.
    """

    def __init__(self, probe: Callable[[], bool], *, probe_interval_s: float,
                 where: str) -> None:
        if probe_interval_s <= 0:
            raise ValueError(f"probe_interval_s must be positive, got {probe_interval_s}")
        self._probe = probe
        self._probe_interval_s = probe_interval_s
        self._where = where
        self._lock = threading.Lock()
        self._open_since: float | None = None
        self._cause = ""
        self._closed_event = threading.Event()
        self._closed_event.set()

    @property
    def is_open(self) -> bool:
        return self._open_since is not None

    def check(self) -> None:
        """Raise :class:`CircuitOpen` while the circuit is open."""
        open_since = self._open_since
        if open_since is not None:
            raise CircuitOpen(
                f"Kafka at {self._where} has been unreachable for "
                f"{time.monotonic() - open_since:.1f}s ({self._cause}); not sending")

    def failed(self, cause: BaseException) -> None:
        """A send found Kafka unreachable: open, and probe until it answers."""
        with self._lock:
            if self._open_since is not None:
                return
            self._open_since = time.monotonic()
            self._cause = f"{type(cause).__name__}: {cause}"[:300]
            self._closed_event.clear()
            logger.warning("Kafka at %s is unreachable; sends fail at once until it answers"
                           " (probed every %.1f s).", self._where, self._probe_interval_s)
            # A new prober each time it opens: the one before, if any, has
            # already closed the circuit and is on its way out.
            threading.Thread(target=self._probe_until_closed, name="kafka-send-probe",
                             daemon=True).start()

    def wait_closed(self, timeout_s: float) -> bool:
        """Wait until the circuit is closed; whether it is."""
        return self._closed_event.wait(timeout_s)

    def _probe_until_closed(self) -> None:
        while True:
            time.sleep(self._probe_interval_s)
            try:
                answered = self._probe()
            except Exception:  # a probe that breaks means "not yet"
                logger.debug("Kafka probe failed", exc_info=True)
                answered = False
            if answered:
                with self._lock:
                    down_s = time.monotonic() - (self._open_since or time.monotonic())
                    self._open_since = None
                    self._closed_event.set()
                logger.warning("Kafka at %s answers again after %.1f s; sending.",
                               self._where, down_s)
                return
