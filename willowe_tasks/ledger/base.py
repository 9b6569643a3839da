"""The delivery ledger's contract: at most one push per (notification, device).

See :mod:`willowe_tasks.ledger.sqlite` for the guarantee and where it stops.
Keys are :func:`willowe_tasks.tokens.token_key` digests, never tokens.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import threading
from collections.abc import Callable
from typing import Protocol

from willowe_tasks.tokens import TOKEN_KEY_PREFIX

__all__ = ["CLAIMED", "DELIVERED", "LOGGED_KEY_CHARS", "NOTIFICATION_ID_MAX_CHARS", "UNCERTAIN",
           "DeliveryLedger", "check_age", "check_lease", "check_pair", "default_owner",
           "prune_in_batches", "short_key"]

logger = logging.getLogger(__name__)

#: Longest accepted notification id, in characters.
NOTIFICATION_ID_MAX_CHARS = 200
#: Characters of a key shown in log lines.
LOGGED_KEY_CHARS = len(TOKEN_KEY_PREFIX) + 12

#: A pair's states: pushed now by its owner, confirmed, or claimed by a
#: worker that never said how its push went (maybe delivered).
CLAIMED = "claimed"
DELIVERED = "delivered"
UNCERTAIN = "uncertain"

_TOKEN_KEY_RE = re.compile(r"sha256:[0-9a-f]{64}")
_HOSTNAME = socket.gethostname()


class DeliveryLedger(Protocol):
    """Two-phase record of which devices got which notification."""

    def claim(
        self,
        notification_id: str,
        token_key: str,
        *,
        lease_s: float,
        reclaim_expired: bool = False,
        owner: str | None = None,
    ) -> bool:
        """Reserve the pair for one push; False if it must not be pushed now.
        ``owner`` names the claimant for :meth:`release` (default: this host,
        process and thread)."""
        ...

    def mark_delivered(self, notification_id: str, token_key: str) -> None:
        """The provider accepted the push: never push this pair again."""
        ...

    def release(self, notification_id: str, token_key: str, *, owner: str | None = None) -> bool:
        """The push certainly failed: let a retry claim the pair again (only
        ``owner``'s claim)."""
        ...

    def delivered(self, notification_id: str) -> set[str]:
        """Keys whose push for this notification is confirmed."""
        ...

    def maybe_delivered(self, notification_id: str) -> set[str]:
        """Keys whose claim expired without confirmation; they are not pushed again."""
        ...

    def counts(self) -> dict[str, int]:
        """Pairs per state: ``in_flight``, ``maybe_delivered``, ``delivered``."""
        ...

    def prune(self, older_than_s: float) -> int:
        """Forget settled pairs last touched more than ``older_than_s`` ago."""
        ...

    def close(self) -> None: ...


def check_pair(notification_id: str, token_key: str) -> None:
    """ValueError naming the argument unless both are usable ledger keys."""
    if not isinstance(notification_id, str) or not notification_id.strip():
        raise ValueError("notification_id: must be a non-empty string")
    if len(notification_id) > NOTIFICATION_ID_MAX_CHARS:
        raise ValueError(f"notification_id: must be at most {NOTIFICATION_ID_MAX_CHARS} characters")
    if not isinstance(token_key, str) or not _TOKEN_KEY_RE.fullmatch(token_key):
        # The value is not echoed: it may be a raw device token passed by mistake.
        raise ValueError(
            "token_key: must be token_key(token), i.e. 'sha256:' and 64 lower-case hex"
            " digits; never pass a raw device token"
        )


def check_lease(lease_s: float) -> None:
    if not (math.isfinite(lease_s) and lease_s > 0):
        raise ValueError(f"lease_s: must be a positive number of seconds, got {lease_s!r}")


def check_age(older_than_s: float) -> None:
    if not (math.isfinite(older_than_s) and older_than_s >= 0):
        raise ValueError(f"older_than_s: must be >= 0 seconds, got {older_than_s!r}")


def default_owner() -> str:
    """Who claims, unless told: this host, process and thread."""
    return f"{_HOSTNAME}:{os.getpid()}:{threading.get_ident()}"


def short_key(key: str) -> str:
    """The start of a key, for log lines."""
    return key[:LOGGED_KEY_CHARS]


def prune_in_batches(delete_batch: Callable[[int], int], batch_rows: int,
                     older_than_s: float) -> int:
    """Call ``delete_batch(batch_rows)`` (one short transaction each, so claims
    never wait long) until a batch comes back short; return the rows deleted."""
    check_age(older_than_s)
    total = 0
    while True:
        deleted = delete_batch(batch_rows)
        total += deleted
        if deleted < batch_rows:
            break
    if total:
        logger.info("pruned %d delivery records older than %.0f s", total, older_than_s)
    return total
