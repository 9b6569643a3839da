"""A token bucket that every worker process of a fleet shares, and the store
it lives in.

A bucket refills at ``rate_per_s`` up to ``capacity`` tokens; a push takes
one. Whatever the number of processes, the tokens taken in any stretch of
``T`` seconds are at most ``capacity + rate_per_s × T``. The bucket's state
is two numbers (tokens, when last refilled) in a store all the processes
share: PostgreSQL for a fleet (:mod:`.postgres`), a SQLite file for the
processes of one host (:mod:`.sqlite`). Processes take tokens in small
batches (:mod:`.gate`), so a push is not a database round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Bucket", "Grant", "QuotaStore", "take_from", "wait_for_token_s"]


@dataclass(frozen=True)
class Bucket:
    """The shape of one shared bucket (its state is in the store)."""

    #: Which bucket: a provider credential ("fcm:willowe-prod").
    name: str
    rate_per_s: float
    #: Tokens it holds at most: what may go out at once after a quiet spell.
    capacity: float

    def __post_init__(self) -> None:
        if not self.rate_per_s > 0:
            raise ValueError(f"bucket {self.name!r}: rate_per_s must be positive")
        if not self.capacity >= 1:
            raise ValueError(f"bucket {self.name!r}: capacity must be at least 1 token")


@dataclass(frozen=True)
class Grant:
    """What a store handed out."""

    #: Tokens taken: 0 up to what was asked for.
    granted: int
    #: When none were: seconds until the bucket holds a whole token again.
    wait_s: float = 0.0


class QuotaStore(Protocol):
    """Where buckets live; safe for every thread and process that shares it."""

    def take(self, bucket: Bucket, want: int) -> Grant:
        """Take up to ``want`` tokens from ``bucket`` (made full on first use)."""
        ...

    def close(self) -> None: ...


def take_from(tokens: float, elapsed_s: float, bucket: Bucket, want: int
              ) -> tuple[int, float]:
    """The bucket's arithmetic: ``tokens`` held ``elapsed_s`` ago, refilled
    since and ``want`` asked for; returns (tokens granted, tokens left).
    Whole tokens only; a clock that went back refills nothing."""
    available = min(bucket.capacity, tokens + bucket.rate_per_s * max(0.0, elapsed_s))
    granted = max(0, min(want, int(available)))
    return granted, available - granted


def wait_for_token_s(tokens_left: float, bucket: Bucket) -> float:
    """Seconds until a bucket holding ``tokens_left`` has a whole token."""
    return max(0.0, (1.0 - tokens_left) / bucket.rate_per_s)
