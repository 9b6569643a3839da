"""Replays started from the dashboard: one at a time, in a thread of their
own, so the page answers (and shows the progress) while they run."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["ReplayJob", "ReplayJobs"]

#: Finished jobs the page still lists.
KEEP_FINISHED = 5


@dataclass
class ReplayJob:
    topic: str
    cause: str
    total: int = 0
    done: int = 0
    state: str = "running"
    summary: str = ""
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None


#: Runs one replay: (job to report progress on) → the summary line.
RunReplay = Callable[[ReplayJob], str]


class ReplayJobs:
    def __init__(self, run: RunReplay) -> None:
        self._run = run
        self._lock = threading.Lock()
        self._jobs: deque[ReplayJob] = deque(maxlen=KEEP_FINISHED + 1)
        self._threads: list[threading.Thread] = []

    def start(self, topic: str, cause: str) -> ReplayJob | None:
        """Start a replay, or return None while another is running."""
        with self._lock:
            if any(j.state == "running" for j in self._jobs):
                return None
            job = ReplayJob(topic, cause)
            self._jobs.append(job)
            thread = threading.Thread(target=self._execute, args=(job,),
                                      name="dashboard-replay", daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return job

    def recent(self) -> list[ReplayJob]:
        with self._lock:
            return list(reversed(self._jobs))

    def wait(self, timeout_s: float) -> None:
        """Wait for running replays to end (at shutdown)."""
        deadline = time.monotonic() + timeout_s
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    def _execute(self, job: ReplayJob) -> None:
        try:
            job.summary = self._run(job)
            job.state = "finished"
        except Exception as e:  # the page shows it; the thread must not die silently
            job.summary = f"{type(e).__name__}: {e}"
            job.state = "failed"
        finally:
            job.finished_at = time.time()
