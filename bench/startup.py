"""Start-up of the application's own worker process: from launching
``dramatiq willowe_tasks`` to its first message processed.

One repetition (:func:`process_start`): a fresh consumer group is made to
start where the application's topics end (as the push scenario does, since
those topics are shared), one ``track_event`` is queued, then the worker is
launched and timed until the analytics sink holds the event's line. The
measure includes the interpreter's start, imports, the worker's boot and its
group join; the in-process measure (``Worker.start()`` to first message) is
the peers' ``startup`` mode.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.push import _consumed_topics, _discard_until, _end_offsets, _start_group_at_end
from bench.redis_server import free_port
from bench.runner import start, terminate_all

#: How long the worker may take to its first message before the repetition
#: gives up, in seconds.
FIRST_MESSAGE_S = 90.0

#: How often the analytics file is looked at, in seconds: the resolution of
#: the measure.
POLL_S = 0.005


class StartupFailed(RuntimeError):
    """A repetition could not be measured (the worker died or ran nothing)."""


def process_start(*, bootstrap: str, group: str, workdir: Path, threads: int) -> float:
    """Seconds from launching ``dramatiq willowe_tasks`` (one process) to the
    first message it processed."""
    from willowe_tasks.app import App
    from willowe_tasks.settings import load_settings
    from willowe_tasks.testing import worker_command

    workdir.mkdir(parents=True, exist_ok=True)
    analytics = workdir / "analytics.jsonl"
    env = {**os.environ, "KAFKA_BROKER": bootstrap, "KAFKA_GROUP_ID": group,
           "ANALYTICS_PATH": str(analytics), "PYTHONUNBUFFERED": "1",
           "DEVICE_REGISTRY_PATH": str(workdir / "devices.sqlite3"),
           "DELIVERY_LOG_PATH": str(workdir / "delivery-log.sqlite3"),
           "METRICS_DIR": str(workdir / "metrics"), "METRICS_PORT": str(free_port())}
    topics = _consumed_topics()
    _start_group_at_end(bootstrap, group, topics)
    app = App(load_settings(kafka_broker=bootstrap, kafka_group_id=group))
    try:
        app.actors.track_event.send("bench_startup", {"group": group})
    finally:
        app.broker.close()
    queued_to = _end_offsets(bootstrap, topics)
    launched = time.perf_counter()
    worker = start(worker_command(processes=1, threads=threads), workdir / "worker.log",
                   env=env)
    try:
        deadline = time.monotonic() + FIRST_MESSAGE_S
        while not _has_a_line(analytics):
            if worker.poll() is not None:
                raise StartupFailed(f"worker exited {worker.returncode}; see {workdir}")
            if time.monotonic() > deadline:
                raise StartupFailed(f"no message processed within {FIRST_MESSAGE_S:.0f}s")
            time.sleep(POLL_S)
        return time.perf_counter() - launched
    finally:
        terminate_all([worker])
        _discard_until(bootstrap, queued_to)


def _has_a_line(path: Path) -> bool:
    try:
        return b"\n" in path.read_bytes()
    except FileNotFoundError:
        return False

