"""Small helpers any test may import (``from support import FakeClock``)."""

from __future__ import annotations

import time
from collections.abc import Callable


class FakeClock:
    """Unix seconds that only move when a test says so."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_until(condition: Callable[[], object], timeout_s: float, *,
               interval_s: float = 0.05) -> bool:
    """Whether ``condition()`` came true within ``timeout_s`` (polled)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return bool(condition())
