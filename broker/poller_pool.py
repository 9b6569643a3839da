"""The group pollers of a process, and which consumer attaches to which.

A worker's consumers all attach to one :class:`~broker.poller.GroupPoller`:
the process is one member of the group. A second consumer of a queue that
has a live consumer already (two in one process, as tests make them) gets a
poller, and so a group member, of its own. A poller that failed takes no new
consumers: the ones Dramatiq restarts after the failure make a new one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable

from broker.poller import GroupPoller, PollerClosed, QueueFeed

__all__ = ["PollerPool"]

#: Makes a poller subscribed to ``topics`` from the start; ``index`` is the
#: lowest number no live poller of the process holds (its static identity).
MakePoller = Callable[[list[str], int], GroupPoller]


class PollerPool:
    """This process's pollers (remade empty after a fork)."""

    def __init__(self, make: MakePoller) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._pollers: list[tuple[int, GroupPoller]] = []
        self._expected: set[str] = set()
        self._pid = os.getpid()

    def expect(self, queue_names: Iterable[str]) -> None:
        """The queues a worker is about to consume: the first poller subscribes
        to all of them at once, so the group is joined once, not once per queue."""
        with self._lock:
            self._expected = set(queue_names)

    def attach(self, queue_name: str) -> tuple[GroupPoller, QueueFeed]:
        """A poller fetching ``queue_name`` and the feed it files its records in."""
        with self._lock:
            if self._pid != os.getpid():  # a parent's pollers have no thread here
                self._pollers, self._pid = [], os.getpid()
            self._pollers = [(i, p) for i, p in self._pollers if p.alive]
            for _, poller in self._pollers:
                if poller.usable and not poller.serves(queue_name):
                    try:
                        return poller, poller.attach(queue_name)
                    except PollerClosed:
                        continue
            held = {i for i, _ in self._pollers}
            index = next(i for i in range(len(held) + 1) if i not in held)
            topics = {queue_name}
            if queue_name in self._expected and not self._pollers:
                # A worker's first consumer: its member reads every queue the
                # worker consumes. (Once: a later poller, made for a second
                # consumer of a queue, reads only that queue.)
                topics |= self._expected
                self._expected = set()
            poller = self._make(sorted(topics), index)
            self._pollers.append((index, poller))
            return poller, poller.attach(queue_name)
