"""The start-up scenario for any Dramatiq broker: how soon a freshly started
worker runs its first message, and Dramatiq's two composition checks
(``test_groups_execute_jobs_in_parallel``, ``test_groups_execute_inner_groups``
in Dramatiq's own tests) timed from the worker's start.

Every measurement gets a fresh broker, group and queues, on a warm server:
the queues exist before the clock starts, so what is timed is the worker
joining and fetching, not topic creation.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq
from _common import Params
from _dramatiq_peer import Bench, System
from dramatiq.results import Results
from dramatiq.results.backends import StubBackend

#: Queues of the worker-start measurement: as many as ``dramatiq willowe_tasks``
#: consumes (three priority topics), each with its delay queue.
QUEUES = 3

#: How long one composition job sleeps, and how many run side by side:
#: Dramatiq's own tests use five jobs of 100 ms, and three groups of two.
JOB_S = 0.1
PARALLEL_JOBS = 5
INNER_GROUPS = 3
INNER_GROUP_JOBS = 2

#: Longest wait for a first message or a group's results, in seconds.
WAIT_S = 60.0

#: Pause between making the queues and starting the worker: the server has
#: settled (a warm start), in seconds.
WARM_S = 0.5


def startup(system: System, params: Params) -> dict[str, Any]:
    first = _first_message(system, {**params, "queue": f"{params['queue']}-first",
                                    "group": f"{params['group']}-first"})
    flat = _composition(system, {**params, "queue": f"{params['queue']}-group",
                                 "group": f"{params['group']}-group"}, inner=False)
    inner = _composition(system, {**params, "queue": f"{params['queue']}-inner",
                                  "group": f"{params['group']}-inner"}, inner=True)
    return {"worker_start_s": first, "group_s": flat, "inner_groups_s": inner}


def _first_message(system: System, params: Params) -> float:
    """Seconds from ``Worker.start()`` to the actor running a message queued
    before it, with one actor on each of :data:`QUEUES` queues."""
    bench = Bench(system, params)
    ran = threading.Event()
    ran_at: list[float] = []

    def noop() -> None:
        if not ran.is_set():
            ran_at.append(time.perf_counter())
            ran.set()

    queues = [f"{params['queue']}-{i}" for i in range(QUEUES)]
    for i, queue in enumerate(queues):
        dramatiq.actor(actor_name=f"bench_first_{i}", queue_name=queue,
                       broker=bench.broker)(noop)
    system.create_queues(bench.broker, queues)
    bench.broker.actors["bench_first_0"].send()
    time.sleep(WARM_S)
    try:
        start = time.perf_counter()
        with bench.worker():
            if not ran.wait(WAIT_S):
                raise RuntimeError(f"no message ran within {WAIT_S:.0f}s of the worker's start")
        return ran_at[0] - start
    finally:
        system.close(bench.broker)


def _composition(system: System, params: Params, *, inner: bool) -> float:
    """Seconds from ``Worker.start()`` until a group of 100 ms jobs (or a
    group of groups) has every result, as Dramatiq's tests wait for it."""
    bench = Bench(system, params)
    bench.broker.add_middleware(Results(backend=StubBackend()))

    def wait() -> None:
        time.sleep(JOB_S)

    actor = dramatiq.actor(actor_name="bench_wait", store_results=True,
                           queue_name=params["queue"], broker=bench.broker)(wait)
    system.create_queues(bench.broker, [params["queue"]])
    time.sleep(WARM_S)
    try:
        start = time.perf_counter()
        with bench.worker():
            if inner:
                g = dramatiq.group(dramatiq.group(actor.message() for _ in range(INNER_GROUP_JOBS))
                                   for _ in range(INNER_GROUPS))
            else:
                g = dramatiq.group(actor.message() for _ in range(PARALLEL_JOBS))
            g.run()
            results = list(g.get_results(block=True, timeout=int(WAIT_S * 1000)))
            elapsed = time.perf_counter() - start
        expected: list[Any] = ([[None] * INNER_GROUP_JOBS] * INNER_GROUPS if inner
                               else [None] * PARALLEL_JOBS)
        if results != expected or not g.completed:
            raise RuntimeError(f"the group returned {results!r}, expected {expected!r}")
        return elapsed
    finally:
        system.close(bench.broker)
