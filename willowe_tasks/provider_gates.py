"""What a push to one provider credential must pass, and what its answers teach.

Three gates, asked in turn by dispatch for each device:

* the device's own backoff (:mod:`willowe_tasks.device_backoff`): APNs
  throttles single devices;
* the credential's circuit breaker (:mod:`willowe_tasks.breakers`): the
  provider is down;
* the credential's share of a fleet-wide quota (:mod:`willowe_tasks.quota`),
  for a provider that has one (FCM).

A device that can't pass gets a :class:`~willowe_tasks.deferral.Deferral`;
dispatch serves the others and defers the notification. The cheap, harmless
gates are asked before the ledger claims the pair (:meth:`before_claim`),
the ones that use something up (a probe's turn, a token) only once the pair
is claimed (:meth:`admit`), so a device that was served already costs no token.
"""

from __future__ import annotations

from willowe_tasks.breakers import BreakerState, CircuitBreaker, is_outage
from willowe_tasks.deferral import (
    DEVICE_THROTTLED,
    PROVIDER_DOWN,
    PROVIDER_THROTTLED,
    QUOTA_SPENT,
    Deferral,
)
from willowe_tasks.device_backoff import DeviceBackoff
from willowe_tasks.providers import TransientDeliveryError
from willowe_tasks.providers.errors import THROTTLED_DEVICE, THROTTLED_SENDER
from willowe_tasks.quota import QuotaGate

__all__ = ["ProviderGates"]


class ProviderGates:
    """The gates of one provider credential in one process.

    ``quota_wait_s`` is how long a worker thread may wait for a quota token
    before the device is deferred instead; ``throttle_wait_s`` is the wait
    after a sender-wide 429 that names no Retry-After.
    """

    def __init__(self, provider: str, credential: str, *, breaker: CircuitBreaker,
                 backoff: DeviceBackoff, quota: QuotaGate | None = None,
                 quota_wait_s: float = 0.0, throttle_wait_s: float = 1.0) -> None:
        self.provider = provider
        self.credential = credential
        self.breaker = breaker
        self.backoff = backoff
        self.quota = quota
        self.quota_wait_s = quota_wait_s
        self.throttle_wait_s = throttle_wait_s

    def __repr__(self) -> str:
        return f"ProviderGates({self.credential!r}, breaker={self.breaker.state.value})"

    def before_claim(self, key: str) -> Deferral | None:
        """Whether the device with token key ``key`` must wait; uses nothing up."""
        wait = self.backoff.wait_s(key)
        if wait is not None:
            return Deferral(self.provider, DEVICE_THROTTLED, wait, grows=False)
        wait = self.breaker.blocked_for()
        if wait is not None:
            return Deferral(self.provider, PROVIDER_DOWN, wait)
        return None

    def admit(self) -> Deferral | None:
        """Take the turn to push (the probe's, while the breaker is open) and a
        quota token, waiting up to ``quota_wait_s`` for one; or say why not."""
        if not self.breaker.allow():
            return Deferral(self.provider, PROVIDER_DOWN, self.breaker.blocked_for() or 0.0)
        if self.quota is not None:
            wait = self.quota.take(self.quota_wait_s)
            if wait:
                # Growing: many notifications waiting on one bucket would
                # otherwise all come back every token's worth of time.
                return Deferral(self.provider, QUOTA_SPENT, wait)
        return None

    def answered(self, key: str, *, accepted: bool) -> None:
        """The provider answered a push to ``key``'s device (``accepted`` or not)."""
        self.breaker.succeeded()
        if accepted:
            self.backoff.delivered(key)

    def failed(self, error: TransientDeliveryError, key: str) -> Deferral | None:
        """Learn from a transient failure; return the device's deferral when
        the failure is not the notification's to pay for with a retry."""
        if error.throttled == THROTTLED_DEVICE:
            self.breaker.succeeded()  # a provider that throttles is up
            wait = self.backoff.throttled(key, error.retry_after_s)
            return Deferral(self.provider, DEVICE_THROTTLED, wait, grows=False)
        if error.throttled == THROTTLED_SENDER:
            self.breaker.succeeded()
            wait = error.retry_after_s if error.retry_after_s is not None \
                else self.throttle_wait_s
            if self.quota is not None:
                self.quota.hold_off(wait)
            return Deferral(self.provider, PROVIDER_THROTTLED, wait)
        if is_outage(error) and self.breaker.failed() is not BreakerState.CLOSED:
            # This failure opened the breaker or came while it was open: the
            # provider is down, and the notification waits for it.
            return Deferral(self.provider, PROVIDER_DOWN, self.breaker.blocked_for() or 0.0)
        return None
