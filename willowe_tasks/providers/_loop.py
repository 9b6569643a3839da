"""An asyncio event loop in a background thread that plain threads hand work to.

Used by the APNs client: Dramatiq's worker threads are synchronous, while the
only thread-safe way to share one HTTP/2 connection in httpx is its asyncio
client driven from a single thread (see :mod:`willowe_tasks.providers.apns.client`).

The loop and the resource living on it (an ``httpx.AsyncClient``) are made on
first use, and made again in a forked child: a thread does not survive
``fork()``, and a connection must not be shared between processes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: How long close() waits for the resource's teardown and the thread's exit.
CLOSE_TIMEOUT_S = 5.0


class LoopThread(Generic[T]):
    """Run coroutines on a private event loop; callable from any thread.

    ``setup`` makes the resource on the loop thread (so it binds to that loop);
    ``teardown`` releases it when the runner is closed.
    """

    def __init__(
        self,
        name: str,
        setup: Callable[[], T],
        teardown: Callable[[T], Coroutine[Any, Any, None]],
    ) -> None:
        self._name = name
        self._setup = setup
        self._teardown = teardown
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._resource: T | None = None
        self._pid: int | None = None
        self._closed = False

    def call(self, work: Callable[[T], Awaitable[R]], timeout_s: float) -> R:
        """Run ``work(resource)`` on the loop and return its result.

        Raises :class:`TimeoutError` (after cancelling the work) if it takes longer
        than ``timeout_s``; other exceptions propagate unchanged.
        """
        loop, resource = self._ensure_started()

        async def run() -> R:
            return await work(resource)

        future = asyncio.run_coroutine_threadsafe(run(), loop)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"{self._name} did not answer within {timeout_s}s") from None

    def close(self) -> None:
        """Tear the resource down and stop the thread. Idempotent."""
        with self._lock:
            self._closed = True
            loop, thread, resource = self._loop, self._thread, self._resource
            self._loop = self._thread = self._resource = None
            owned = self._pid == os.getpid()
        if loop is None or thread is None or not owned:
            return
        if resource is not None:
            future = asyncio.run_coroutine_threadsafe(self._teardown(resource), loop)
            try:
                future.result(CLOSE_TIMEOUT_S)
            except Exception:
                logger.warning("%s: closing its connections failed", self._name, exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(CLOSE_TIMEOUT_S)
        if not thread.is_alive():
            loop.close()

    def _ensure_started(self) -> tuple[asyncio.AbstractEventLoop, T]:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self._name} is closed")
            if self._loop is None or self._pid != os.getpid():
                self._start()
            assert self._loop is not None and self._resource is not None
            return self._loop, self._resource

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
        thread.start()

        async def setup() -> T:
            return self._setup()

        self._resource = asyncio.run_coroutine_threadsafe(setup(), loop).result(CLOSE_TIMEOUT_S)
        self._loop, self._thread, self._pid = loop, thread, os.getpid()
        logger.debug("%s started in process %d", self._name, self._pid)
