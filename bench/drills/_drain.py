"""A queue of numbered messages and the bench workers that drain it.

The workers are our broker's bench peer (``bench/peers/ours.py work``): each
writes a message's number to an ids file of its own before the message is
acked, so the files say what was processed, and by which worker, however
the worker ended. Each worker also logs at INFO to a file of its own.
"""

from __future__ import annotations

import collections
import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec

from bench.drills._common import Context, Result, message_verdict, read_ids, wait_until
from bench.runner import run_peer, start
from bench.systems import OURS

#: Seconds a worker spends on each message by default: at 8 threads that caps
#: a drain near 800 msg/s, so a fault lands while messages are in flight
#: (unslowed, 3,000 messages are gone in half a second).
WORK_MS = 10

#: How long a worker process may live at most, in seconds (the drills end it sooner).
WORKER_LIMIT_S = 600


class Drain:
    """``n`` numbered messages on a fresh queue (its own consumer group)."""

    def __init__(self, ctx: Context, name: str, n: int, *, partitions: int = 3,
                 work_ms: int = WORK_MS) -> None:
        self.ctx = ctx
        self.n = n
        self.queue = f"drill-{secrets.token_hex(3)}-{name}"
        self.params: dict[str, Any] = {
            "bootstrap": ctx.bootstrap, "queue": self.queue, "group": self.queue,
            "partitions": partitions, "payload_bytes": 8, "threads": 8, "n": n,
            "work_ms": work_ms, "limit_s": WORKER_LIMIT_S,
            # Static members, as the application's workers: a restarted worker
            # takes its partitions straight back.
            "slots": str(ctx.workdir / "slots"),
        }
        #: The ids file of each worker started, by its pid.
        self.ids_files: dict[int, Path] = {}

    def fill(self) -> None:
        """Send the numbers ``0..n-1`` (through the bench peer's batch send)."""
        run_peer(OURS, "fill-numbered", self.params, timeout_s=120, log_file=self.ctx.log)

    def start_worker(self) -> subprocess.Popen[bytes]:
        """A worker with an ids file and an INFO log of its own (kept with the
        run's logs when a drill fails: group joins and assignments show there)."""
        name = f"{self.queue}.{len(self.ids_files)}"
        ids_file = self.ctx.workdir / f"{name}.ids"
        params = {**self.params, "ids_file": str(ids_file),
                  "log_file": str(self.ctx.workdir / f"{name}.log")}
        proc = start([str(OURS.python()), str(OURS.script_path), "work", json.dumps(params)],
                     self.ctx.log)
        self.ids_files[proc.pid] = ids_file
        return proc

    def seen(self, *procs: subprocess.Popen[bytes]) -> collections.Counter[str]:
        """How often each number was processed (by ``procs``, or by any worker)."""
        files = [self.ids_files[p.pid] for p in procs] if procs else self.ids_files.values()
        return sum((read_ids(f) for f in files), collections.Counter())

    def distinct(self) -> int:
        """How many different numbers were processed so far."""
        return len(self.seen())

    def progress(self) -> str:
        seen = self.seen()
        return f"{len(seen)}/{self.n} processed ({sum(seen.values())} runs)"

    def wait(self, distinct: int, timeout_s: float) -> float | None:
        """Seconds until ``distinct`` different numbers were processed (None: timed out)."""
        return wait_until(lambda: self.distinct() >= distinct, timeout_s, progress=self.progress)

    def left_by_partition(self) -> list[int]:
        """Records of each partition the group has not committed yet: where
        the work still is (a consumer may drain one partition after another)."""
        admin = KafkaAdminClient(bootstrap_servers=self.ctx.bootstrap, client_id="drills")
        try:
            partitions = [TopicPartition(self.queue, p) for p in range(self.params["partitions"])]
            ends = admin.list_partition_offsets(dict.fromkeys(partitions, OffsetSpec.LATEST))
            done = admin.list_group_offsets({self.queue: partitions}).get(self.queue, {})
        finally:
            admin.close()
        return [ends[tp].offset - max(0, done[tp].offset if tp in done else 0)
                for tp in partitions]

    def verdict(self) -> Result:
        return message_verdict(self.seen(), self.n)
