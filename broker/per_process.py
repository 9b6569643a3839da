"""Objects made lazily, once per process: Kafka clients here, and the
application's connections, event loops and SQLite handles.

Dramatiq forks worker processes after the app is imported, and web servers
fork after preloading it: a kafka-python client inherited through a fork has
lost its IO thread, so its first request would wait forever; an HTTP/2
connection or a database handle would be shared by two processes. Each holder
makes its object on first use in each process and remakes it after a fork.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["PerProcess"]

T = TypeVar("T")


class PerProcess(Generic[T]):
    """Holds what ``make`` returns, made on first :meth:`get` in each process."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._client: T | None = None
        self._pid = 0

    def get(self) -> T:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client = self._make()
                self._pid = os.getpid()
            return self._client

    def made_here(self) -> T | None:
        """The client if this process made it, without making one."""
        with self._lock:
            return self._ours()

    def close(self, close: Callable[[T], None]) -> None:
        """Close the client if this process made it (a parent's is not ours to close)."""
        with self._lock:
            client = self._ours()
            self._client = None
        if client is not None:
            close(client)

    def _ours(self) -> T | None:
        return self._client if self._pid == os.getpid() else None
