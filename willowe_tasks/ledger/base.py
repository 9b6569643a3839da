"""The delivery ledger's contract: at most one push per (notification, device).

See :mod:`willowe_tasks.ledger.sqlite` for the guarantee and where it stops.
Keys are :func:`willowe_tasks.tokens.token_key` digests, never tokens.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["DeliveryLedger"]


class DeliveryLedger(Protocol):
    """Two-phase record of which devices got which notification."""

    def claim(
        self,
        notification_id: str,
        token_key: str,
        *,
        lease_s: float,
        reclaim_expired: bool = False,
    ) -> bool:
        """Reserve the pair for one push; False if it must not be pushed now."""
        ...

    def mark_delivered(self, notification_id: str, token_key: str) -> None:
        """The provider accepted the push: never push this pair again."""
        ...

    def release(self, notification_id: str, token_key: str) -> bool:
        """The push certainly failed: let a retry claim the pair again."""
        ...

    def delivered(self, notification_id: str) -> set[str]:
        """Keys whose push for this notification is confirmed."""
        ...

    def maybe_delivered(self, notification_id: str) -> set[str]:
        """Keys whose claim expired without confirmation; they are not pushed again."""
        ...

    def prune(self, older_than_s: float) -> int:
        """Forget settled pairs last touched more than ``older_than_s`` ago."""
        ...

    def close(self) -> None: ...
