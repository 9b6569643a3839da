"""Stable identities for a worker's consumers: static group membership.

A consumer that restarts with the identity it had (Kafka's
``group.instance.id``, KIP-345) takes its partitions straight back, instead
of the group waiting out the dead member's session and then rebalancing.

The identity must be stable across a process's restarts and never shared by
two live processes. Here it is the host's name, the user's id and a *slot*:
the lowest number no other live process of this host and group holds, held by
an ``flock`` on a file in ``directory`` until the process ends (the kernel
lets go of it when the process dies, however it dies). A restarted worker
finds its slot free again and takes it; two processes can never hold one slot.
The process is one member of the group (one poller fetches for all its
queues, see :mod:`broker.poller`); a second poller of the process, rare (a
second consumer of a queue already consumed), adds its number.

Static members don't leave the group when they stop (their partitions would
wait out the session): :meth:`broker.admin.QueueAdmin.remove_static_member`
removes one on a clean stop.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
from pathlib import Path

__all__ = ["MAX_SLOTS", "ProcessSlot"]

#: Most processes of one group on one host.
MAX_SLOTS = 1024

#: What a group id or host name may keep in a file or instance name.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class ProcessSlot:
    """The slot this process holds for ``group_id`` on this host."""

    def __init__(self, directory: Path, group_id: str) -> None:
        folder = directory / _UNSAFE.sub("_", group_id)
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(MAX_SLOTS):
            fd = os.open(folder / f"slot-{number}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            # Kept open (and locked) for as long as this process lives.
            self._fd = fd
            self.number = number
            return
        raise RuntimeError(f"all {MAX_SLOTS} worker slots of {group_id!r} in {folder} are"
                           " held by live processes")

    def instance_id(self, poller: int = 0) -> str:
        """The ``group.instance.id`` of this process's ``poller``-th group poller
        (its first, unless a queue has two consumers in the process).

        The user id is part of it: two users' workers of one group on one
        host take their slots in folders of their own, so both may hold
        slot 0, and Kafka fences one of two members that share an id."""
        host = _UNSAFE.sub("_", socket.gethostname())
        base = f"{host}-u{os.getuid()}-{self.number}"
        return base if poller == 0 else f"{base}-p{poller}"
