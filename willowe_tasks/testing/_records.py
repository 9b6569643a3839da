"""What a fake received, and which failures it was told to answer with.

Both are touched by the server's event-loop thread and read or changed by test
threads, so both are guarded by locks.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request a fake answered, with what it answered."""

    #: Device or registration token the request was for (``None`` if unreadable).
    token: str | None
    method: str
    path: str
    #: Lower-case header names; the last value when a header was repeated.
    headers: Mapping[str, str]
    #: The parsed JSON body, or ``None`` when it was not JSON.
    json: Any
    #: ``time.time()`` when the request arrived (before any injected latency).
    received_at: float
    #: ``host:port`` of the client's end of the TCP connection (``#n`` for the
    #: n-th connection from that address).
    connection: str
    http_version: str
    #: HTTP status the fake answered with.
    status: int
    #: The provider's reason (APNs ``reason`` / FCM ``errorCode``) when it failed.
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def data(self) -> Mapping[str, Any]:
        """The push's custom data: FCM's ``message.data``, or the keys of an
        APNs payload beside ``aps`` (empty when the body was not JSON)."""
        body = self.json if isinstance(self.json, dict) else {}
        if "message" in body:  # FCM v1
            return body["message"].get("data") or {}
        return {key: value for key, value in body.items() if key != "aps"}


def freeze_headers(headers: tuple[tuple[str, str], ...]) -> Mapping[str, str]:
    return MappingProxyType(dict(headers))


class RequestLog:
    """Append-only, thread-safe record with a bounded wait."""

    def __init__(self) -> None:
        self._items: list[ReceivedRequest] = []
        self._changed = threading.Condition()

    def append(self, item: ReceivedRequest) -> None:
        with self._changed:
            self._items.append(item)
            self._changed.notify_all()

    def snapshot(self) -> list[ReceivedRequest]:
        with self._changed:
            return list(self._items)

    def clear(self) -> None:
        with self._changed:
            self._items.clear()

    def wait_for(self, count: int, timeout_s: float) -> list[ReceivedRequest]:
        """Block until ``count`` requests were recorded; :class:`TimeoutError` after
        ``timeout_s`` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._items) >= count, timeout_s):
                raise TimeoutError(
                    f"{len(self._items)} of {count} requests arrived within {timeout_s}s"
                )
            return list(self._items)


@dataclass(slots=True)
class Fault:
    status: int
    reason: str
    remaining: int
    retry_after: str | None
    token: str | None


class FaultPlan:
    """Failures to answer with instead of success, consumed in the order added."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(
        self,
        status: int,
        reason: str,
        *,
        times: int,
        retry_after: float | str | None,
        token: str | None,
    ) -> None:
        if times < 1:
            raise ValueError("times must be at least 1")
        if retry_after is not None and not isinstance(retry_after, str):
            retry_after = f"{retry_after:g}"
        with self._lock:
            self._faults.append(Fault(status, reason, times, retry_after, token))

    def take(self, token: str | None) -> Fault | None:
        """The first fault that applies to ``token``, using up one of its times."""
        with self._lock:
            for fault in self._faults:
                if fault.token is None or fault.token == token:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
