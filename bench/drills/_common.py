"""What every drill shares: where it runs, the processes it starts, bounded
waits with progress lines, and the counts a verdict is made of."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.log import say
from broker.localkafka import LocalKafka

if TYPE_CHECKING:
    from bench.drills._cluster_rig import PrivateCluster

#: How often a wait prints where it is, in seconds.
PROGRESS_EVERY_S = 5.0

#: How often a wait looks at its condition, in seconds.
POLL_S = 0.1

Result = dict[str, Any]


@dataclass(frozen=True)
class Context:
    """Where a drill runs: the Kafka it uses (``kafka`` is None when the
    drill may not restart it, as in tests), a scratch folder and a log file
    for everything the processes it starts print. The cluster drills use a
    three-node Kafka of their own (``cluster``), started when one first asks."""

    bootstrap: str
    workdir: Path
    kafka: LocalKafka | None = None
    cluster: PrivateCluster | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "drills.log"

    def need_kafka(self) -> LocalKafka:
        if self.kafka is None:
            raise RuntimeError("this drill stops Kafka: it needs the private LocalKafka")
        return self.kafka

    def need_cluster(self) -> PrivateCluster:
        if self.cluster is None:
            raise RuntimeError("this drill needs the private three-node Kafka")
        return self.cluster


# -- waiting ---------------------------------------------------------------------

def wait_until(done: Callable[[], bool], timeout_s: float, *,
               progress: Callable[[], str] | None = None) -> float | None:
    """Seconds until ``done()`` held, or None after ``timeout_s``; says
    ``progress()`` every few seconds meanwhile."""
    start_at = time.monotonic()
    next_say = start_at + PROGRESS_EVERY_S
    while True:
        now = time.monotonic()
        if done():
            return now - start_at
        if now - start_at > timeout_s:
            return None
        if progress is not None and now >= next_say:
            say(f"  … {progress()}")
            next_say = now + PROGRESS_EVERY_S
        time.sleep(POLL_S)


def spread(total: int, points: int) -> list[int]:
    """``points`` thresholds evenly spaced below ``total``: ``total/(points+1)``
    apart, so the last one leaves as much to do as the first one took."""
    return [total * i // (points + 1) for i in range(1, points + 1)]


# -- counting --------------------------------------------------------------------

def read_ids(path: Path) -> collections.Counter[str]:
    """How often each number was processed, from a worker's ids file."""
    try:
        return collections.Counter(path.read_text().split())
    except FileNotFoundError:
        return collections.Counter()


def tally(expected: Iterable[Any], seen: collections.Counter[Any]) -> Result:
    """The counts of a verdict: ``sent`` things expected, how often each was
    ``processed``, which were ``lost`` (never seen) and how many extra times
    some were seen (``duplicated``). Things seen but never expected are
    ``unexpected``."""
    wanted = set(expected)
    lost = wanted - set(seen)
    return {
        "sent": len(wanted),
        "processed": sum(n for key, n in seen.items() if key in wanted),
        "lost": len(lost),
        "duplicated": sum(n - 1 for key, n in seen.items() if key in wanted and n > 1),
        "unexpected": sum(n for key, n in seen.items() if key not in wanted),
    }


def message_verdict(seen: collections.Counter[str], n: int) -> Result:
    """Message-level counts for numbers ``0..n-1``: lost must be 0 (delivery
    is at least once); duplicates are redeliveries and only reported."""
    counts = tally((str(i) for i in range(n)), seen)
    return {**counts, "ok": counts["lost"] == 0 and counts["unexpected"] == 0}
