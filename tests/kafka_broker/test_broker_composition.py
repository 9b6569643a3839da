"""Dramatiq's composition (groups, groups of groups, pipelines) on this broker,
with the Results middleware: the promises of Dramatiq's own
``test_groups_execute_jobs_in_parallel`` and ``test_groups_execute_inner_groups``
hold on Kafka. Their 0.5 s timing is a bench goal (``bench/goals.py``), not
an assertion here: parallelism is shown by jobs that can only finish together.
"""

from __future__ import annotations

import threading

import dramatiq
import pytest
from broker_support import BrokerFactory, WorkerFactory
from dramatiq.middleware import GroupCallbacks, default_middleware
from dramatiq.rate_limits.backends import StubBackend as StubRateLimiterBackend
from dramatiq.results import Results
from dramatiq.results.backends import StubBackend

from broker import KafkaBroker

#: Jobs of one flat group, as in Dramatiq's test; the worker runs at least as many.
PARALLEL_JOBS = 5

#: Groups of groups, as in Dramatiq's test: this many groups of this many jobs.
INNER_GROUPS = 3
INNER_GROUP_JOBS = 2

#: How long one send may take here, topic creation included, in milliseconds.
SEND_TIMEOUT_MS = 30_000

#: Longest a job waits for its siblings, and a test for a group's results, in seconds.
WAIT_S = 60


@pytest.fixture
def broker(make_broker: BrokerFactory) -> KafkaBroker:
    """Dramatiq's default middleware, GroupCallbacks and Results on stub backends."""
    # A first send makes its topic, within the send timeout; beside a starting
    # worker on a busy machine that took longer than the 2 s default. These
    # tests are not about send timeouts.
    return make_broker(send_timeout_ms=SEND_TIMEOUT_MS, middleware=[
        *(m() for m in default_middleware),
        GroupCallbacks(StubRateLimiterBackend()),
        Results(backend=StubBackend()),
    ])


@pytest.fixture
def running(broker: KafkaBroker, start_worker: WorkerFactory) -> KafkaBroker:
    start_worker(broker, threads=PARALLEL_JOBS)
    return broker


def test_a_group_runs_its_jobs_in_parallel(running: KafkaBroker, queue_name: str) -> None:
    # Given an actor whose jobs each wait until all of the group's jobs run at once
    # (run one after another, the first would wait in vain and fail)
    together = threading.Barrier(PARALLEL_JOBS, timeout=WAIT_S)

    @dramatiq.actor(broker=running, queue_name=queue_name, store_results=True, max_retries=0)
    def rendezvous(n: int) -> int:
        together.wait()
        return n * 10

    # When a group of them runs
    jobs = dramatiq.group(rendezvous.message(n) for n in range(PARALLEL_JOBS))
    jobs.run()

    # Then every result comes back, in the group's order, and the group is complete
    results = list(jobs.get_results(block=True, timeout=WAIT_S * 1000))
    assert results == [n * 10 for n in range(PARALLEL_JOBS)]
    assert jobs.completed
    assert jobs.completed_count == PARALLEL_JOBS


def test_groups_of_groups_return_each_inner_groups_results(
    running: KafkaBroker, queue_name: str,
) -> None:
    # Given an actor that labels its input
    @dramatiq.actor(broker=running, queue_name=queue_name, store_results=True, max_retries=0)
    def label(group: int, job: int) -> str:
        return f"{group}.{job}"

    # When a group of groups runs
    outer = dramatiq.group(
        dramatiq.group(label.message(g, j) for j in range(INNER_GROUP_JOBS))
        for g in range(INNER_GROUPS))
    outer.run()

    # Then the results nest as the groups do, and the outer group is complete
    results = list(outer.get_results(block=True, timeout=WAIT_S * 1000))
    assert results == [[f"{g}.{j}" for j in range(INNER_GROUP_JOBS)]
                       for g in range(INNER_GROUPS)]
    assert outer.completed


def test_a_pipeline_result_is_its_last_actors_result(
    running: KafkaBroker, queue_name: str,
) -> None:
    # Given an actor that adds
    @dramatiq.actor(broker=running, queue_name=queue_name, store_results=True, max_retries=0)
    def add(x: int, y: int) -> int:
        return x + y

    # When a pipeline passes each sum on
    # (Each step after the first gets the previous result as its last argument.)
    pipe = (add.message(1, 2) | add.message_with_options(args=(3,))
            | add.message_with_options(args=(4,)))
    pipe.run()

    # Then the last result is the whole sum and each step's result is kept
    assert pipe.get_result(block=True, timeout=WAIT_S * 1000) == 10
    assert list(pipe.get_results(block=True, timeout=WAIT_S * 1000)) == [3, 6, 10]
    assert pipe.completed


def test_a_group_of_pipelines_calls_its_completion_callback_once(
    running: KafkaBroker, queue_name: str,
) -> None:
    # Given an actor that adds, and a callback that records when it runs
    finished = threading.Event()
    calls: list[int] = []

    @dramatiq.actor(broker=running, queue_name=queue_name, store_results=True, max_retries=0)
    def add(x: int, y: int) -> int:
        return x + y

    @dramatiq.actor(broker=running, queue_name=queue_name, max_retries=0)
    def done(tag: int) -> None:
        calls.append(tag)
        finished.set()

    # When a group of pipelines runs with a completion callback
    pipes = dramatiq.group(add.message(n, 1) | add.message_with_options(args=(10,))
                           for n in range(3))
    pipes.add_completion_callback(done.message(7))
    pipes.run()

    # Then each pipeline's last result comes back and the callback ran once
    assert list(pipes.get_results(block=True, timeout=WAIT_S * 1000)) == [11, 12, 13]
    assert finished.wait(WAIT_S)
    running.join(queue_name, timeout=WAIT_S * 1000)
    assert calls == [7]
