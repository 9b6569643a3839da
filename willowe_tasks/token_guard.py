"""A brake on removing device tokens when the cause is more likely our setup.

A phone that uninstalled the app, or a token that moved to another install,
makes a provider reject its token now and then. When most pushes of a window
are rejected *for the same reason*, the tokens are not the problem: a worker
points at the wrong APNs environment (every token answers ``BadDeviceToken``),
keeps a default ``APNS_TOPIC`` (``DeviceTokenNotForTopic``), or holds the
credentials of another Firebase project (``SENDER_ID_MISMATCH``). Removing
tokens then would empty the registry, so the guard stops it:

* ``REMOVE``: the usual case; the token is marked invalid.
* ``REMOVE_AND_RECHECK``: too few pushes in the window to tell yet (a worker
  that just started). The token is marked, but its notification is retried,
  so that if the guard trips meanwhile (and restores the marks) the phone
  still gets it.
* ``HOLD``: tripped. Nothing is removed; the notification is retried like a
  provider outage, and ends in the dead letters if the setup is never fixed.
  Tripping restores the tokens marked for that reason during the window, and
  logs an error naming the setting that is likely wrong.

The window is per worker process. Other processes trip on their own traffic;
``python -m willowe_tasks devices restore`` undoes what they marked before.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["GuardVerdict", "TokenRemovalGuard", "likely_cause"]

logger = logging.getLogger(__name__)

#: What each mass rejection most likely means, by (provider, reason).
LIKELY_CAUSES = {
    ("apns", "BadDeviceToken"): "APNS_ENDPOINT may name the wrong APNs environment "
                                "(sandbox tokens sent to production, or the reverse)",
    ("apns", "DeviceTokenNotForTopic"): "APNS_TOPIC (or the devices' app ids) may not be "
                                        "the bundle id the tokens were issued for",
    ("apns", "Unregistered"): "APNS_ENDPOINT or APNS_TOPIC may not match the app",
    ("fcm", "SENDER_ID_MISMATCH"): "FCM_PROJECT_ID / FCM_SERVICE_ACCOUNT_FILE may belong "
                                   "to another Firebase project than the app's",
    ("fcm", "UNREGISTERED"): "FCM_PROJECT_ID may not be the app's Firebase project",
    ("fcm", "INVALID_ARGUMENT"): "FCM_PROJECT_ID may not be the app's Firebase project",
}


def likely_cause(provider: str, reason: str) -> str:
    return LIKELY_CAUSES.get((provider, reason),
                             f"the {provider.upper()} settings may not match the app")


class GuardVerdict(enum.Enum):
    REMOVE = "remove"
    REMOVE_AND_RECHECK = "remove_and_recheck"
    HOLD = "hold"


@dataclass(frozen=True)
class Trip:
    """The guard tripped: restore the marks made for ``reason`` since ``since``."""

    provider: str
    reason: str
    since: float


class TokenRemovalGuard:
    """Counts each provider's push outcomes over a sliding window.

    ``max_share``: share of a window's pushes rejected for one reason above
    which removal stops. ``min_pushes``: pushes a window needs before the share
    is trusted. ``on_trip`` is called once each time the guard trips. Thread
    safe; ``clock`` returns unix seconds (marks in the registry use the same).
    """

    def __init__(self, *, max_share: float, window_s: float, min_pushes: int,
                 on_trip: Callable[[Trip], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if not 0 < max_share <= 1:
            raise ValueError(f"max_share must be in (0, 1], got {max_share}")
        if window_s <= 0 or min_pushes < 1:
            raise ValueError("window_s must be positive and min_pushes at least 1")
        self.max_share = max_share
        self.window_s = window_s
        self.min_pushes = min_pushes
        self._on_trip = on_trip
        self._clock = clock
        self._lock = threading.Lock()
        #: provider → (time, rejection reason or None for any other outcome)
        self._outcomes: dict[str, deque[tuple[float, str | None]]] = {}
        #: provider → how many of its window's outcomes had each reason
        self._counts: dict[str, Counter[str | None]] = {}
        self._tripped: set[tuple[str, str]] = set()

    def pushed(self, provider: str) -> None:
        """A push got an answer that was not a token rejection."""
        with self._lock:
            self._record(provider, None)
            # A reason stops being held once its share falls.
            for key in [k for k in self._tripped if k[0] == provider]:
                if not self._over_share(*key):
                    self._tripped.discard(key)
                    logger.warning("%s %s rejections are back under %.0f%% of pushes; removing"
                                   " rejected tokens again.", provider, key[1],
                                   self.max_share * 100)

    def rejected(self, provider: str, reason: str) -> GuardVerdict:
        """A push was rejected because of its token: may the token go?"""
        trip = None
        with self._lock:
            now = self._record(provider, reason)
            key = (provider, reason)
            total = len(self._outcomes[provider])
            if self._over_share(provider, reason) and total >= self.min_pushes:
                if key not in self._tripped:
                    self._tripped.add(key)
                    trip = Trip(provider, reason, now - self.window_s)
                verdict = GuardVerdict.HOLD
            elif key in self._tripped:
                verdict = GuardVerdict.HOLD
            elif total < self.min_pushes:
                verdict = GuardVerdict.REMOVE_AND_RECHECK
            else:
                verdict = GuardVerdict.REMOVE
        if trip is not None:
            logger.error(
                "%s rejected the tokens of over %.0f%% of %d pushes in %.0f s with %s: not"
                " removing tokens, and restoring those removed for it since then. Likely cause:"
                " %s.", provider.upper(), self.max_share * 100, total, self.window_s, reason,
                likely_cause(provider, reason))
            if self._on_trip is not None:
                self._on_trip(trip)
        return verdict

    def _record(self, provider: str, reason: str | None) -> float:
        now = self._clock()
        outcomes = self._outcomes.setdefault(provider, deque())
        counts = self._counts.setdefault(provider, Counter())
        outcomes.append((now, reason))
        counts[reason] += 1
        while outcomes and outcomes[0][0] < now - self.window_s:
            counts[outcomes.popleft()[1]] -= 1
        return now

    def _over_share(self, provider: str, reason: str) -> bool:
        total = len(self._outcomes.get(provider, ()))
        return total > 0 and self._counts[provider][reason] / total > self.max_share
