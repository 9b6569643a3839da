"""An asyncio event loop in a background thread that plain threads hand work to.

Used by the push clients: Dramatiq's worker threads are synchronous, while
libcurl's multi handle, which multiplexes every push of a process on shared
HTTP/2 connections, is not thread-safe and is driven from a single thread
(see :mod:`willowe_tasks.providers._curl`).

The loop and the resource living on it (a
:class:`~willowe_tasks.providers._curl.CurlDriver`) are made on first use, and
made again in a forked child: a thread does not survive ``fork()``, and a
connection must not be shared between processes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from broker.per_process import PerProcess

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: How long close() waits for the resource's teardown and the thread's exit.
CLOSE_TIMEOUT_S = 5.0


@dataclass
class _Running(Generic[T]):
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    resource: T


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
        self._running: PerProcess[_Running[T]] = PerProcess(self._start)
        self._closed = False

    def call(self, work: Callable[[T], Awaitable[R]], timeout_s: float) -> R:
        """Run ``work(resource)`` on the loop and return its result.

        Raises :class:`TimeoutError` (after cancelling the work) if it takes longer
        than ``timeout_s``; other exceptions propagate unchanged.
        """
        if self._closed:
            raise RuntimeError(f"{self._name} is closed")
        running = self._running.get()

        async def run() -> R:
            return await work(running.resource)

        future = asyncio.run_coroutine_threadsafe(run(), running.loop)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"{self._name} did not answer within {timeout_s}s") from None

    def call_soon(self, work: Callable[[T], None]) -> None:
        """Run ``work(resource)`` on the loop soon, without waiting for it.

        Cheaper than :meth:`call` (no task, no future chained across
        threads) for work that reports back by itself.
        """
        if self._closed:
            raise RuntimeError(f"{self._name} is closed")
        running = self._running.get()
        running.loop.call_soon_threadsafe(work, running.resource)

    def close(self) -> None:
        """Tear the resource down and stop the thread. Idempotent."""
        self._closed = True
        self._running.close(self._stop)

    def _start(self) -> _Running[T]:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
        thread.start()

        async def setup() -> T:
            return self._setup()

        resource = asyncio.run_coroutine_threadsafe(setup(), loop).result(CLOSE_TIMEOUT_S)
        logger.debug("%s started in process %d", self._name, os.getpid())
        return _Running(loop, thread, resource)

    def _stop(self, running: _Running[T]) -> None:
        future = asyncio.run_coroutine_threadsafe(self._teardown(running.resource), running.loop)
        try:
            future.result(CLOSE_TIMEOUT_S)
        except Exception:
            logger.warning("%s: closing its connections failed", self._name, exc_info=True)
        running.loop.call_soon_threadsafe(running.loop.stop)
        running.thread.join(CLOSE_TIMEOUT_S)
        if not running.thread.is_alive():
            running.loop.close()
