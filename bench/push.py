"""The push scenario's machinery: notifications through a real worker into
the local fake APNs and FCM.

One repetition (:func:`run_once`): start both fakes with a fixed latency,
register one device per user (half iOS, half Android) in a fresh registry,
queue one match per user, then start ``dramatiq willowe_tasks`` and time the
pushes as the fakes receive them. Every (notification, token) pair must
arrive exactly once; what did not, or came twice, is counted.

The application's topics have fixed names and live on the shared Kafka, so
each repetition's consumer group is made to start where those topics end
(nothing queued before it is seen), and what the repetition queued is
deleted from the topic afterwards, as ``make demo`` and the tests do. The
same goes the other way: a ``make test`` or ``make demo`` flushing those
topics mid-run takes this run's messages along; that is detected and noted.

The messages are sent by a child process (``python -m bench.push send``),
since importing ``willowe_tasks`` builds the application's broker from the
environment, which differs per repetition.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from bench.envs import ROOT
from bench.proc_cpu import session_cpu_s
from bench.push_fakes import arrived, provider_fakes
from bench.runner import start, terminate_all

#: Seconds each fake waits before answering a push: a distant provider.
LATENCY_S = 0.02

#: The same for the scenario with many pushes in flight: real APNs and FCM
#: answer in tens to hundreds of milliseconds.
WIDE_LATENCY_S = 0.1

#: Longest the sender child may take, in seconds.
SEND_TIMEOUT_S = 180

#: How long the worker may take to its first push (start-up, group join), and
#: then go without one, before the repetition gives up, seconds.
FIRST_PUSH_S = 90.0
STALL_S = 30.0

#: After the last expected push, how long to keep listening for duplicates.
SETTLE_S = 1.0

#: Poll interval while waiting for pushes.
POLL_S = 0.05


class PushFailed(RuntimeError):
    """A repetition could not be measured (sender failed, worker died, no pushes)."""


@dataclass(frozen=True)
class User:
    user_id: str
    platform: str
    token: str


def users(prefix: str, n: int) -> list[User]:
    """``n`` users, each with one device: even ones iOS, odd ones Android."""
    out = []
    for i in range(n):
        user_id = f"{prefix}-u{i}"
        if i % 2 == 0:
            token = hashlib.sha256(user_id.encode()).hexdigest()  # 64 hex digits, as APNs
            out.append(User(user_id, "ios", token))
        else:
            out.append(User(user_id, "android", f"bench-fcm-{user_id}"))
    return out


def concurrency(threads: int) -> tuple[int, str]:
    """Pushes that can be in flight at once, and the formula that gave it.

    Each worker thread pushes its notification's devices one after another,
    so at most one push per thread is in flight. Both providers' pushes are
    streams of multiplexed HTTP/2 connections, and libcurl opens another
    connection when one's streams are all busy, so the streams are no bound.
    """
    return threads, f"worker threads {threads}, one push in flight each"


def run_once(*, bootstrap: str, group: str, n: int, threads: int, workdir: Path,
             latency_s: float = LATENCY_S,
             on_worker_start: Callable[[int], None] | None = None) -> dict[str, Any]:
    """One repetition; returns its figures (see module docstring).
    ``on_worker_start`` is given the worker's pid (a profiler attaches)."""
    from willowe_tasks.registry import SQLiteDeviceRegistry
    from willowe_tasks.testing import fake_provider_env

    workdir.mkdir(parents=True, exist_ok=True)
    people = users(group, n)
    with provider_fakes(latency_s=latency_s, log=workdir / "fakes.log") as fakes:
        # The Go fakes' endpoints carry the same attributes as FakeAPNs/FakeFCM.
        env = {**os.environ, "KAFKA_BROKER": bootstrap, "KAFKA_GROUP_ID": group,
               "PYTHONUNBUFFERED": "1",
               **fake_provider_env(fakes.apns, fakes.fcm, workdir)}
        with SQLiteDeviceRegistry(env["DEVICE_REGISTRY_PATH"]) as registry:
            for user in people:
                registry.register(user.user_id, user.platform, user.token,
                                  fakes.apns.bundle_id if user.platform == "ios"
                                  else "com.willowe.android")
        topics = _consumed_topics()
        queued_from = _start_group_at_end(bootstrap, group, topics)
        ids = _send(env, group, n)
        queued_to = _end_offsets(bootstrap, topics)
        expected = {(nid, user.token) for nid, user in zip(ids, people, strict=True)}
        try:
            run = _run_worker(env, threads, workdir / "worker.log", n,
                              lambda: arrived(fakes, n), fakes.cpu_s, on_worker_start)
        finally:
            flushed = _flushed_by_others(bootstrap, queued_from)
            _discard_until(bootstrap, queued_to)
        ios, android = fakes.split()
        if flushed and not any(r.ok for r in ios + android):
            raise PushFailed("another process flushed the application's topics (make test? "
                             "make demo?) and took this run's messages along")
        row = _figures(ios, android, expected, run.started, run.finished, threads, latency_s)
        row.update(_cpu_figures(run))
        row["flushed_by_others"] = flushed
        row["fakes"] = fakes.kind
        return row

def _figures(ios: list[Any], android: list[Any], expected: set[tuple[str, str]],
             started: float, finished: bool, threads: int, latency_s: float) -> dict[str, Any]:
    received = ios + android
    ok = [r for r in received if r.ok]
    pairs = Counter(_pair(r) for r in ok)
    if not ok:
        raise PushFailed("no push reached the fakes")
    times = sorted(r.received_at for r in ok)
    span = times[-1] - times[0]
    in_flight, formula = concurrency(threads)
    ceiling = in_flight / latency_s
    rate = (len(ok) - 1) / span if span > 0 else 0.0  # a single push has no rate
    return {
        "pushes": len(ok),
        "expected": len(expected),
        "rate": rate,
        "rate_from_start": len(ok) / (times[-1] - started),
        "ceiling": ceiling,
        "ratio": rate / ceiling,
        "lost": len(expected - set(pairs)),
        "duplicated": sum(c - 1 for c in pairs.values() if c > 1),
        "unexpected": sum(c for p, c in pairs.items() if p not in expected),
        "refused": len(received) - len(ok),
        "ios": sum(1 for r in ios if r.ok),
        "in_flight": median_in_flight(times, latency_s),
        "connections": (len({r.connection for r in ios if r.ok})
                        + len({r.connection for r in android if r.ok})),
        "finished": finished,
        "formula": f"{formula} ÷ {latency_s * 1000:g} ms",
    }


def median_in_flight(arrivals: list[float], latency_s: float) -> float:
    """Median pushes the fakes were holding when one arrived: those that
    arrived less than ``latency_s`` before it (each is held that long), so
    what the worker had in flight. ``arrivals`` sorted."""
    if not arrivals:
        return 0.0
    held = [i - bisect.bisect_right(arrivals, t - latency_s, hi=i) + 1
            for i, t in enumerate(arrivals)]
    return float(statistics.median(held))


def _cpu_figures(run: WorkerRun) -> dict[str, float]:
    """CPU milliseconds per push, the worker's and the fakes' apart (they
    share the machine's cores); zero when too few pushes were measured."""
    if run.pushes_measured <= 0:
        return {"worker_cpu_ms_per_push": 0.0, "fakes_cpu_ms_per_push": 0.0}
    return {"worker_cpu_ms_per_push": 1000 * run.worker_cpu_s / run.pushes_measured,
            "fakes_cpu_ms_per_push": 1000 * run.fakes_cpu_s / run.pushes_measured}


def _pair(record: Any) -> tuple[str, str]:
    """(notification id, token) of a push the fakes received."""
    return record.data.get("notification_id", ""), record.token


def _consumed_topics() -> list[str]:
    """Every topic a worker of the application consumes: each priority topic
    and its delay topic."""
    from broker.topics import delay_name
    from willowe_tasks.topics import PRIORITY_TOPIC_NAMES

    return [name for topic in PRIORITY_TOPIC_NAMES for name in (topic, delay_name(topic))]


def _start_group_at_end(bootstrap: str, group: str, topics: list[str]
                        ) -> dict[TopicPartition, int]:
    """Commit the topics' current end offsets for the new ``group``, so its
    workers skip whatever earlier runs or other users left there; return them."""
    from broker.topics import reconcile
    from willowe_tasks.topics import ALL_TOPIC_SPECS

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-push")
    try:
        reconcile(admin, ALL_TOPIC_SPECS)  # as `make topics`: the app creates none itself
    finally:
        admin.close()
    ends = _end_offsets(bootstrap, topics)
    seeder = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                           enable_auto_commit=False, client_id="bench-push")
    try:
        seeder.assign(list(ends))
        seeder.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in ends.items()})
    finally:
        seeder.close(autocommit=False)
    return ends


def _flushed_by_others(bootstrap: str, queued_from: dict[TopicPartition, int]) -> bool:
    """Whether records at or after ``queued_from`` were deleted during the run:
    someone else flushed the application's topics (``make test`` and ``make
    demo`` do) and took this repetition's messages with them."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             client_id="bench-push")
    try:
        starts = consumer.beginning_offsets(list(queued_from))
    finally:
        consumer.close(autocommit=False)
    return any(starts[tp] > offset for tp, offset in queued_from.items())


def _end_offsets(bootstrap: str, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             client_id="bench-push")
    try:
        partitions = [TopicPartition(t, p) for t in topics
                      for p in sorted(consumer.partitions_for_topic(t) or ())]
        return dict(consumer.end_offsets(partitions))
    finally:
        consumer.close(autocommit=False)


def _discard_until(bootstrap: str, ends: dict[TopicPartition, int]) -> None:
    """Delete the records below ``ends``: this repetition's messages (and
    anything older) must not reach later runs' fresh groups."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-push")
    try:
        admin.delete_records({tp: offset for tp, offset in ends.items() if offset > 0})
    finally:
        admin.close()


def _send(env: dict[str, str], prefix: str, n: int) -> list[str]:
    """Queue one match per user through the application's own actor (in a
    child process with the repetition's settings); return the message ids."""
    child = subprocess.run([sys.executable, "-m", "bench.push", "send", prefix, str(n)],
                           env=env, cwd=ROOT, capture_output=True, text=True,
                           timeout=SEND_TIMEOUT_S, check=False)
    if child.returncode != 0:
        raise PushFailed(f"sender exited {child.returncode}: {child.stderr.strip()[-500:]}")
    ids = child.stdout.split()
    if len(ids) != n:
        raise PushFailed(f"sender queued {len(ids)} of {n} notifications")
    return ids


@dataclass
class WorkerRun:
    """What :func:`_run_worker` saw: when the worker started, whether every
    push arrived, and the CPU spent between the first push seen and the last
    (the worker's process tree, and the fakes': see :mod:`bench.push_fakes`)."""

    started: float
    finished: bool
    pushes_measured: int = 0
    worker_cpu_s: float = 0.0
    fakes_cpu_s: float = 0.0


def _run_worker(env: dict[str, str], threads: int, log: Path, n: int, progress: Any,
                fakes_cpu_s: Callable[[], float],
                on_start: Callable[[int], None] | None = None) -> WorkerRun:
    """Run one worker process until ``progress()`` reaches ``n`` (then
    :data:`SETTLE_S` more), or stalls, measuring its CPU per push."""
    from willowe_tasks.testing import worker_command

    run = WorkerRun(started=time.time(), finished=False)
    worker = start(worker_command(processes=1, threads=threads), log, env=env)
    if on_start is not None:
        on_start(worker.pid)
    first: tuple[int, float, float] | None = None  # pushes, worker CPU, fakes' CPU
    try:
        seen, deadline = 0, time.monotonic() + FIRST_PUSH_S
        while (count := progress()) < n:
            if worker.poll() is not None:
                raise PushFailed(f"worker exited {worker.returncode}; see {log}")
            if count > seen:
                seen, deadline = count, time.monotonic() + STALL_S
                if first is None:
                    # From the first push on: start-up (imports, group join) is
                    # another scenario's figure.
                    first = (count, session_cpu_s(worker.pid), fakes_cpu_s())
            elif time.monotonic() >= deadline:
                return run
            time.sleep(POLL_S)
        if first is not None:
            run.pushes_measured = n - first[0]
            run.worker_cpu_s = session_cpu_s(worker.pid) - first[1]
            run.fakes_cpu_s = fakes_cpu_s() - first[2]
        time.sleep(SETTLE_S)  # a duplicate would come right behind
        run.finished = True
        return run
    finally:
        terminate_all([worker])


def _send_main(prefix: str, n: int) -> None:
    """The sender child: one match per user, in one batch; ids on stdout."""
    from willowe_tasks import broker, send_match

    ids = []
    with broker.batch():
        for user in users(prefix, n):
            ids.append(send_match.send(user.user_id, {"name": "Анна", "age": 25}).message_id)
    print("\n".join(ids))


if __name__ == "__main__":
    if sys.argv[1:2] != ["send"] or len(sys.argv) != 4:
        sys.exit("usage: python -m bench.push send PREFIX COUNT")
    _send_main(sys.argv[2], int(sys.argv[3]))
