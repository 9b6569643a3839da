"""Celery on Kafka through kombu's ``confluentkafka`` transport, in its own
venv. Producer settings as ours (acks=all, idempotent, linger 2 ms); topics
made with the same partition count; late acks, so a task is committed after
it ran, as ours is. The transport names the consumer group after the queue,
so a unique queue is a unique group.

Celery's worker wants the main thread (signal handlers), so drain and
latency run the worker there and measure from a second thread, which prints
the result and ends the process."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from _common import (
    READY_SETTLE_S,
    RESULT_PREFIX,
    STRAGGLER_S,
    Counter,
    Params,
    child_result,
    latency_summary,
    log,
    main,
    pace,
    payload,
    spawn,
    timed_rate,
    wait_until,
)
from celery import Celery

#: How long the worker may take to run its first task, in seconds.
READY_TIMEOUT_S = 90.0


class Bench:
    def __init__(self, params: Params) -> None:
        self.params = params
        self.app = Celery("bench", broker=f"confluentkafka://{params['bootstrap']}")
        self.app.conf.update(
            broker_transport_options={
                "num_partitions": params["partitions"],
                "kafka_producer_config": {"acks": "all", "enable.idempotence": True,
                                          "linger.ms": 2},
            },
            broker_connection_retry_on_startup=True,
            task_default_queue=params["queue"],
            task_ignore_result=True,
            task_acks_late=True,
            # Kafka has no fanout: remote control and events would fail.
            worker_enable_remote_control=False,
            worker_send_task_events=False,
            worker_hijack_root_logger=False,
            # The result line must reach stdout, not the log.
            worker_redirect_stdouts=False,
        )
        self.done = Counter(params.get("n") or 1 << 62)
        self.latencies: list[float] = []
        done, latencies = self.done, self.latencies

        @self.app.task(name="bench.work")
        def work(sent: float, body: str) -> None:
            if sent > 0:
                latencies.append(time.time() - sent)
            done.add()

        self.work = work

    def send(self, sent: float = 0.0) -> None:
        self.work.apply_async((sent, payload(self.params["payload_bytes"])))

    def run_worker(self, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        def measure_and_exit() -> None:
            try:
                result = measure()
            except Exception as e:
                result = {"error": f"{type(e).__name__}: {e}"}
            import json
            print(RESULT_PREFIX + json.dumps(result), flush=True)
            os._exit(0 if "error" not in result else 1)

        threading.Thread(target=measure_and_exit, daemon=True).start()
        worker = self.app.Worker(pool_cls="threads", concurrency=self.params["threads"],
                                 queues=[self.params["queue"]], loglevel="WARNING",
                                 without_heartbeat=True, without_mingle=True,
                                 without_gossip=True, quiet=True)
        worker.start()
        raise RuntimeError("the Celery worker stopped before the measurement ended")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while self.done.count == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("worker never ran a task")
            self.send()
            self.done.done.wait(1.0)
        time.sleep(READY_SETTLE_S)


def enqueue(params: Params) -> dict[str, Any]:
    bench = Bench(params)
    bench.send()
    single = timed_rate(params["n_single"], lambda i: bench.send())
    log(f"single {single:.0f}/s")
    # No batch form: kombu's transport flushes the producer after each message.
    batch = timed_rate(params["n_batch"], lambda i: bench.send())
    return {"single_rate": single, "batch_rate": batch, "batch_api": False}


def fill(params: Params) -> dict[str, Any]:
    bench = Bench(params)
    rate = timed_rate(params["n"], lambda i: bench.send())
    return {"n": params["n"], "rate": rate}


def drain(params: Params) -> dict[str, Any]:
    bench = Bench(params)
    wall_start = time.time()
    start = time.perf_counter()

    def measure() -> dict[str, Any]:
        bench.done.wait_or_stall(params["stall_s"])
        end = bench.done.last_at or time.perf_counter()
        return {"n": bench.done.count, "seconds": end - start,
                "rate": bench.done.count / (end - start),
                "first_ack_s": (bench.done.first_at or end) - start, "wall_start": wall_start}

    return bench.run_worker(measure)


def latency(params: Params) -> dict[str, Any]:
    bench = Bench(params)
    # Publishing declares (creates) the topic; a worker subscribed before it
    # exists waits for librdkafka's next metadata refresh.
    bench.send()

    def measure() -> dict[str, Any]:
        bench.wait_ready()
        bench.latencies.clear()
        child_result(spawn("send", params), params["count"] / params["rate"] + 60)
        deadline = time.monotonic() + STRAGGLER_S
        while len(bench.latencies) < params["count"] and time.monotonic() < deadline:
            time.sleep(0.05)
        return latency_summary(list(bench.latencies), params["count"])

    return bench.run_worker(measure)


def send(params: Params) -> dict[str, Any]:
    bench = Bench(params)
    bench.send()
    wait_until(params.get("start_at"))
    sent = pace(params["rate"], params["count"], lambda i: bench.send(time.time()),
                params["count"] / params["rate"] + 30)
    return {"sent": sent}


if __name__ == "__main__":
    main({"enqueue": enqueue, "fill": fill, "drain": drain, "latency": latency, "send": send})
