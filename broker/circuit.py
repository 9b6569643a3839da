"""A circuit breaker for sending to Kafka: fail at once while Kafka can't
take a message.

A web request that sends a message must not wait out a dead Kafka each time
(the guide's ``try { send } catch { old path }``): once Kafka is found unable
to take sends, the circuit opens and every send fails at once, until a probe
in the background, every ``probe_interval_s``, finds it able again.

What opens it:

- :meth:`SendCircuit.failed`: no broker gave the producer so much as
  metadata within the send timeout. Kafka is away; open at once.
- :meth:`SendCircuit.suspect`: one send was not acknowledged in time. On a
  cluster that is also what a broker's crash looks like until the controller
  fences it (the partitions it led, and every ``acks=all`` write whose
  in-sync replicas still count it, wait until then), while other sends go
  through. So the probe is asked first, on the circuit's thread: the circuit
  opens only if no broker answers, or if the topic has fewer in-sync replicas
  than its ``min.insync.replicas`` (then sends fail with
  :class:`NotEnoughReplicas`). Otherwise sends go on.

A message Kafka refuses for itself (too large, not authorised) never opens it;
the broker decides which failures are which.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dramatiq.errors import ConnectionFailed

__all__ = ["CircuitOpen", "NotEnoughReplicas", "SendCircuit", "Unwritable"]

logger = logging.getLogger(__name__)


class CircuitOpen(ConnectionFailed):
    """Kafka was unreachable a moment ago; this send was not tried.

    Nothing of the message reached Kafka (``maybe_sent`` is False).
    """

    maybe_sent = False
    #: How the message says what is wrong with Kafka.
    state = "has been unreachable"


class NotEnoughReplicas(CircuitOpen):
    """Kafka answers, but a partition of the topic has fewer in-sync replicas
    than its ``min.insync.replicas``, so it refuses ``acks=all`` writes rather
    than keep a message on too few disks; this send was not tried."""

    state = "has had too few in-sync replicas to store a message safely"


@dataclass(frozen=True)
class Unwritable:
    """What a probe found: Kafka can't take a send now."""

    #: What sends raise while the circuit is open.
    error: type[CircuitOpen]
    #: Why, for that error's message.
    why: str


#: A probe: given the topic a send failed for (None: any), why Kafka can't
#: take a send now, or None when it can.
Probe = Callable[[str | None], Unwritable | None]


class SendCircuit:
    """Closed (sends go through) or open (they fail at once).

    ``probe`` runs on a thread of the circuit's own, never in a caller's
    send. ``where`` names Kafka in errors.
    """

    def __init__(self, probe: Probe, *, probe_interval_s: float, where: str) -> None:
        if probe_interval_s <= 0:
            raise ValueError(f"probe_interval_s must be positive, got {probe_interval_s}")
        self._probe = probe
        self._probe_interval_s = probe_interval_s
        self._where = where
        self._lock = threading.Lock()
        self._open_since: float | None = None
        self._unwritable = Unwritable(CircuitOpen, "")
        self._topic: str | None = None
        self._suspecting = False
        self._closed_event = threading.Event()
        self._closed_event.set()

    @property
    def is_open(self) -> bool:
        return self._open_since is not None

    def check(self) -> None:
        """Raise :class:`CircuitOpen` (or :class:`NotEnoughReplicas`) while
        the circuit is open."""
        open_since, unwritable = self._open_since, self._unwritable
        if open_since is not None:
            raise unwritable.error(
                f"Kafka at {self._where} {unwritable.error.state} for "
                f"{time.monotonic() - open_since:.1f}s ({unwritable.why}); not sending")

    def failed(self, cause: BaseException) -> None:
        """No broker answered a send: open, and probe until Kafka answers."""
        self._open(Unwritable(CircuitOpen, f"{type(cause).__name__}: {cause}"[:300]), None)

    def suspect(self, cause: BaseException, topic: str | None) -> None:
        """A send to ``topic`` was not acknowledged in time: ask the probe
        (in the background) whether Kafka can take sends, and open only if
        it can't."""
        with self._lock:
            if self._open_since is not None or self._suspecting:
                return
            self._suspecting = True
        logger.info("A send to %s was not acknowledged in time (%s); asking Kafka whether it"
                    " takes sends.", topic, type(cause).__name__)
        threading.Thread(target=self._check_suspicion, args=(topic,),
                         name="kafka-send-probe", daemon=True).start()

    def wait_closed(self, timeout_s: float) -> bool:
        """Wait until the circuit is closed; whether it is."""
        return self._closed_event.wait(timeout_s)

    def _check_suspicion(self, topic: str | None) -> None:
        try:
            unwritable = self._probe_safely(topic)
            if unwritable is not None:
                self._open(unwritable, topic)
        finally:
            with self._lock:
                self._suspecting = False

    def _open(self, unwritable: Unwritable, topic: str | None) -> None:
        with self._lock:
            if self._open_since is not None:
                return
            self._open_since = time.monotonic()
            self._unwritable = unwritable
            self._topic = topic
            self._closed_event.clear()
        logger.warning("Kafka at %s can't take sends (%s); they fail at once until it can"
                       " (probed every %.1f s).", self._where, unwritable.why,
                       self._probe_interval_s)
        # A new prober each time it opens: the one before, if any, has
        # already closed the circuit and is on its way out.
        threading.Thread(target=self._probe_until_closed, name="kafka-send-probe",
                         daemon=True).start()

    def _probe_safely(self, topic: str | None) -> Unwritable | None:
        try:
            return self._probe(topic)
        except Exception as e:  # a probe that breaks means "not yet"
            logger.debug("Kafka probe failed", exc_info=True)
            return Unwritable(self._unwritable.error, f"the probe failed: {type(e).__name__}")

    def _probe_until_closed(self) -> None:
        while True:
            time.sleep(self._probe_interval_s)
            unwritable = self._probe_safely(self._topic)
            if unwritable is None:
                with self._lock:
                    down_s = time.monotonic() - (self._open_since or time.monotonic())
                    self._open_since = None
                    self._closed_event.set()
                logger.warning("Kafka at %s takes sends again after %.1f s; sending.",
                               self._where, down_s)
                return
            self._unwritable = unwritable
