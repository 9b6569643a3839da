"""Back off one device that its provider throttles, and only that device.

APNs answers 429 ``TooManyRequests`` when "the server received too many
requests for the same device token": the throttle is per device, so pushing
to that device again soon only earns another 429, while every other device
is served as usual. Each throttled device waits ``initial_s``, doubling with
each 429 in a row up to ``max_s`` (or longer if the provider's Retry-After
says so); an accepted push forgets it.

Per worker process, as the providers' clients are: a second process learns
the same from its own first 429.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DeviceBackoff"]

#: Devices remembered at most (a process serving a throttling storm must not
#: grow without bound); the longest-known are forgotten first.
MAX_DEVICES = 100_000


@dataclass
class _Throttle:
    until: float
    #: 429s in a row: the next wait doubles with each.
    strikes: int


class DeviceBackoff:
    """Which devices wait, by token key, and until when; thread-safe.
    ``clock`` is monotonic seconds."""

    def __init__(self, *, initial_s: float, max_s: float, max_devices: int = MAX_DEVICES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {initial_s} and {max_s}")
        self.initial_s = initial_s
        self.max_s = max_s
        self._max_devices = max_devices
        self._clock = clock
        self._lock = threading.Lock()
        self._devices: OrderedDict[str, _Throttle] = OrderedDict()

    def wait_s(self, key: str) -> float | None:
        """Seconds ``key``'s device must still wait, or None when it may be pushed."""
        with self._lock:
            throttle = self._devices.get(key)
            if throttle is None:
                return None
            wait = throttle.until - self._clock()
        return wait if wait > 0 else None

    def throttled(self, key: str, retry_after_s: float | None = None) -> float:
        """The provider throttled ``key``'s device: how long it waits now."""
        with self._lock:
            known = self._devices.pop(key, None)
            strikes = 1 if known is None else known.strikes + 1
            wait = min(self.max_s, self.initial_s * 2 ** (strikes - 1))
            if retry_after_s is not None:
                wait = max(wait, retry_after_s)
            self._devices[key] = _Throttle(self._clock() + wait, strikes)
            while len(self._devices) > self._max_devices:
                self._devices.popitem(last=False)
        return wait

    def delivered(self, key: str) -> None:
        """The provider accepted a push to ``key``'s device: no more waiting."""
        if self._devices:  # the common case takes no lock
            with self._lock:
                self._devices.pop(key, None)

    def __len__(self) -> int:
        return len(self._devices)
