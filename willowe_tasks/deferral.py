"""Deferring a notification without spending its retries.

When a device can't be pushed now for a reason that is not the
notification's fault (its provider is down, its quota spent, the device
throttled), dispatch raises :class:`DeliveryDeferred` after serving every
other device. The actor then hands the message back to Kafka with a delay
(:func:`defer`: a copy on ``<queue>.DQ``, as Dramatiq's own retries go) and
returns normally, so Dramatiq's Retries middleware never sees a failure and
the message's ``retries`` stay as they were. Its own count,
``options["deferrals"]``, makes the waits grow: ``initial_s``, doubling, up
to ``max_s`` (the longest a delayed message holds its ``.DQ`` partition's
commit back), with ±20 % jitter so deferred work does not come back at once.

A deferral never outlives the notification's deadline: the last one brings
the message back just after it, and dispatch drops it there as expired
(counted, never dead-lettered). Devices served before are skipped by the
ledger when the message comes back.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.errors import ConnectionFailed

from willowe_tasks.events import EventBus, NotificationDeferred

__all__ = ["DEFERRALS_OPTION", "Deferral", "DeferralPolicy", "DeliveryDeferred", "defer"]

logger = logging.getLogger(__name__)

#: The message option counting a notification's deferrals (Dramatiq's own
#: ``retries`` is left alone).
DEFERRALS_OPTION = "deferrals"

#: Why a device waits (the ``reason`` of a :class:`Deferral`).
PROVIDER_DOWN = "provider_down"
PROVIDER_THROTTLED = "provider_throttled"
QUOTA_SPENT = "quota_spent"
DEVICE_THROTTLED = "device_throttled"

#: How far past the deadline the last deferral brings a notification back,
#: in seconds, so that it is surely expired when it comes.
PAST_DEADLINE_S = 0.05

#: Shortest deferral, in seconds: a message back on Kafka costs a round trip.
MIN_DELAY_S = 0.05

#: Each deferral's wait is scaled by a random factor in 1 ± this.
JITTER = 0.2

#: How long a deferral keeps trying to hand its message back to a Kafka that
#: refuses it, in seconds. Should it give up, Dramatiq's retry of the message
#: needs the same Kafka, and a message whose retry can't be sent is lost; a
#: worker thread held meanwhile is the backpressure a Kafka hiccup calls for.
SEND_PATIENCE_S = 30.0

#: First pause between those attempts, in seconds; doubles up to SEND_PAUSE_MAX_S.
SEND_PAUSE_S = 0.5
SEND_PAUSE_MAX_S = 5.0


@dataclass(frozen=True)
class Deferral:
    """One device that can't be pushed now."""

    provider: str
    reason: str
    #: Seconds it must wait at least (the next probe, a Retry-After, a backoff).
    wait_s: float
    #: Whether repeated deferrals wait longer each time (an outage may last,
    #: many may wait on one quota); a throttled device waits what it was told.
    grows: bool = True


class DeliveryDeferred(dramatiq.Retry):
    """Some devices of a notification must wait; the others were served.

    A :class:`dramatiq.Retry`, so that where nothing defers it (the sending
    process delivering inline, a task of one's own calling ``deliver``) it is
    retried like any transient failure.
    """

    def __init__(self, deferrals: list[Deferral], *, expires_at: float, kind: str,
                 priority: str) -> None:
        if not deferrals:
            raise ValueError("a deferral needs at least one device that waits")
        self.deferrals = deferrals
        self.expires_at = expires_at
        self.kind = kind
        self.priority = priority
        reasons = ", ".join(sorted({f"{d.provider} {d.reason}" for d in deferrals}))
        wait_s = max(MIN_DELAY_S, min(d.wait_s for d in deferrals))
        super().__init__(f"deferred: {reasons}", delay=int(wait_s * 1000))


@dataclass(frozen=True)
class DeferralPolicy:
    """How long deferred notifications wait."""

    initial_s: float = 1.0
    max_s: float = 30.0

    def delay_s(self, deferrals: list[Deferral], count: int, *, expires_at: float,
                now: float | None = None, jitter: Callable[[], float] = random.random
                ) -> float:
        """The wait before the ``count``-th deferral (0 for the first) comes back:
        the soonest any device may go, within ``max_s`` and the deadline."""
        growth = min(self.max_s, self.initial_s * 2 ** min(count, 62))
        waits = [max(d.wait_s, growth) if d.grows else d.wait_s for d in deferrals]
        delay = min(waits) * (1 + JITTER * (2 * jitter() - 1))
        delay = max(MIN_DELAY_S, min(self.max_s, delay))
        current = time.time() if now is None else now
        return min(delay, max(0.0, expires_at - current) + PAST_DEADLINE_S)


def defer(broker: dramatiq.Broker, message: Any, deferred: DeliveryDeferred,
          policy: DeferralPolicy, events: EventBus, *,
          sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.monotonic) -> float:
    """Put the running ``message`` back on its delay queue for ``deferred``;
    returns the delay in seconds. The running message then ends normally.
    Kafka refusing the copy is tried again for up to SEND_PATIENCE_S, then
    raised (``sleep`` and ``clock`` are for tests)."""
    count = int(message.options.get(DEFERRALS_OPTION, 0))
    delay_s = policy.delay_s(deferred.deferrals, count, expires_at=deferred.expires_at)
    copy = message.copy(options={DEFERRALS_OPTION: count + 1})
    give_up_at, pause = clock() + SEND_PATIENCE_S, SEND_PAUSE_S
    while True:
        try:
            broker.enqueue(copy, delay=int(delay_s * 1000))
            break
        except ConnectionFailed as e:
            if clock() + pause > give_up_at:
                raise
            # A copy that may have reached Kafka (a timeout) and is sent again
            # only makes a second run, which the ledger skips.
            logger.warning("Kafka did not take deferred notification %s (%s); trying again"
                           " in %gs.", message.message_id, type(e).__name__, pause)
            sleep(pause)
            pause = min(SEND_PAUSE_MAX_S, pause * 2)
    reasons = sorted({(d.provider, d.reason) for d in deferred.deferrals})
    logger.info("Deferred %s notification %s for %.1fs (%s; deferral %d).", deferred.kind,
                message.message_id, delay_s, ", ".join(f"{p} {r}" for p, r in reasons),
                count + 1)
    for provider, reason in reasons:
        events.emit(NotificationDeferred(deferred.kind, deferred.priority, provider, reason,
                                         delay_s))
    return delay_s
