"""The fake APNs and FCM a push repetition runs against.

The Go pair (:mod:`bench.fastfake`) when ``go`` is there: a process of its
own, whose CPU is read apart from the worker's. Without ``go`` (or if it
fails to build), the Python fakes of :mod:`willowe_tasks.testing` inside the
bench's process, as before; their CPU is then the bench process's (the fakes
and the polling), and they cap the push rate on a small machine, so the
results say which fakes ran.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from bench.fastfake import FastFakes, FastFakeUnavailable


class ProviderFakes(Protocol):
    """What the push bench needs of a pair of fakes."""

    #: Which fakes: ``go``, or ``python`` with the reason the Go ones weren't used.
    kind: str
    #: What ``fake_provider_env`` reads of each.
    apns: Any
    fcm: Any

    def count(self) -> int:
        """Pushes answered so far, refused ones included (cheap)."""

    def split(self) -> tuple[list[Any], list[Any]]:
        """The pushes answered so far: APNs', FCM's."""

    def cpu_s(self) -> float:
        """CPU seconds the fakes have used so far."""


class _GoFakes:
    def __init__(self, fakes: FastFakes) -> None:
        self.kind = "go (bench/fastfake), a process of its own"
        self.apns = fakes.apns
        self.fcm = fakes.fcm
        self._fakes = fakes

    def count(self) -> int:
        return len(self._fakes.received())

    def split(self) -> tuple[list[Any], list[Any]]:
        received = self._fakes.received()
        return ([r for r in received if r.provider == "apns"],
                [r for r in received if r.provider == "fcm"])

    def cpu_s(self) -> float:
        return self._fakes.cpu_s()


class _PythonFakes:
    def __init__(self, apns: Any, fcm: Any, why: str) -> None:
        self.kind = f"python, in the bench's process ({why})"
        self.apns = apns
        self.fcm = fcm

    def count(self) -> int:
        # A list copy each; sorting out what was accepted walks every record.
        return len(self.apns.received) + len(self.fcm.received)

    def split(self) -> tuple[list[Any], list[Any]]:
        return self.apns.received, self.fcm.received

    def cpu_s(self) -> float:
        # The fakes share this process with the polling: both are counted.
        return time.process_time()


@contextlib.contextmanager
def provider_fakes(*, latency_s: float, log: Path) -> Iterator[ProviderFakes]:
    """Fakes answering every push after ``latency_s``: the Go ones if they can
    be built and started, else the Python ones (their output goes to ``log``)."""
    with contextlib.ExitStack() as stack:
        fakes: ProviderFakes
        try:
            fakes = _GoFakes(stack.enter_context(FastFakes(latency_s=latency_s, log=log)))
        except FastFakeUnavailable as e:
            from willowe_tasks.testing import FakeAPNs, FakeFCM

            fakes = _PythonFakes(stack.enter_context(FakeAPNs(latency_s=latency_s)),
                                 stack.enter_context(FakeFCM(latency_s=latency_s)), str(e))
        yield fakes

def arrived(fakes: ProviderFakes, n: int) -> int:
    """Pushes that reached the fakes; ``n`` once all of them were accepted."""
    count = fakes.count()
    if count >= n:
        ios, android = fakes.split()
        if sum(r.ok for r in ios) + sum(r.ok for r in android) < n:
            return n - 1  # some were refused; their retries are still to come
    return count
