"""The scenarios for any Dramatiq broker. Each Dramatiq-based peer script
supplies a :class:`System` (how to make its broker, batch, place actors) and
calls :func:`run`. Imports dramatiq, so only those peers' venvs load it."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
from _common import (
    READY_SETTLE_S,
    STRAGGLER_S,
    Counter,
    Params,
    Sampler,
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

#: How long a worker may take to join and run its first message, in seconds.
READY_TIMEOUT_S = 60.0

#: Delay between starting the priority sender and opening the measured window:
#: covers the sender's start-up, so both phases see the same CPU load.
SETTLE_S = 2.0


class System:
    """What differs between Dramatiq brokers; override in the peer script."""

    #: Whether the broker has a batch form of send (else the plain loop is used).
    batch_api = False

    def make_broker(self, params: Params) -> dramatiq.Broker:
        raise NotImplementedError

    def batch(self, broker: dramatiq.Broker) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()

    def prepare(self, params: Params, queues: list[str]) -> None:
        """Anything the broker needs before its first send (topics, offsets)."""

    def create_queues(self, broker: dramatiq.Broker, queues: list[str]) -> None:
        """Make the declared ``queues`` exist on the server now, so a worker
        started next finds them (a warm start)."""

    def close(self, broker: dramatiq.Broker) -> None:
        broker.close()

    def placement(self, params: Params, kind: str) -> dict[str, Any]:
        """Actor options that put ``kind`` ("noop", "stamp", "high", "low") on its queue."""
        if kind in ("high", "low"):
            return {"queue_name": params[f"{kind}_queue"], "priority": params[f"{kind}_priority"]}
        return {"queue_name": params["queue"]}


class AckCounter(dramatiq.Middleware):
    """Counts acks per actor: drains are timed to the last ack."""

    def __init__(self) -> None:
        #: By actor name.
        self.counters: dict[str, Counter] = {}

    def after_ack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        counter = self.counters.get(message.actor_name)
        if counter is not None:
            counter.add()


class Bench:
    """One process's broker, actors and counters."""

    def __init__(self, system: System, params: Params, *kinds: str) -> None:
        self.system = system
        self.params = params
        self.broker = system.make_broker(params)
        self.acks = AckCounter()
        self.broker.add_middleware(self.acks)
        dramatiq.set_broker(self.broker)
        self.latencies: list[float] = []
        self.started = Counter(1 << 62)
        self.actors: dict[str, dramatiq.Actor[Any, Any]] = {}
        for kind in kinds:
            self.actors[kind] = self._declare(kind)

    def _declare(self, kind: str) -> dramatiq.Actor[Any, Any]:
        latencies = self.latencies
        started = self.started

        def work(sent: float, body: str) -> None:
            # A stamp is taken at actor start: that is what the user waits for.
            if sent > 0:
                latencies.append(time.time() - sent)
            started.add()

        self.acks.counters[f"bench_{kind}"] = Counter(self.params.get("n") or 1 << 62)
        placement: dict[str, Any] = self.system.placement(self.params, kind)
        return dramatiq.actor(actor_name=f"bench_{kind}", **placement)(work)

    def send(self, kind: str, sent: float = 0.0) -> None:
        self.actors[kind].send(sent, payload(self.params["payload_bytes"]))

    @contextlib.contextmanager
    def worker(self) -> Iterator[dramatiq.Worker]:
        worker = dramatiq.Worker(self.broker, worker_threads=self.params["threads"])
        worker.start()
        try:
            yield worker
        finally:
            worker.stop(timeout=10_000)

    def wait_ready(self, kind: str) -> None:
        """Send throwaway messages until the worker runs one: it has joined."""
        counter = self.acks.counters[f"bench_{kind}"]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while counter.count == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("worker never ran a message")
            self.send(kind, 0.0)
            counter.done.wait(0.5)
        time.sleep(READY_SETTLE_S)
        counter.count = 0


def enqueue(system: System, params: Params) -> dict[str, Any]:
    system.prepare(params, [params["queue"]])
    bench = Bench(system, params, "noop")
    bench.send("noop")  # topic creation and connections are not what we time
    single = timed_rate(params["n_single"], lambda i: bench.send("noop"))
    log(f"single {single:.0f}/s")
    start = time.perf_counter()
    with system.batch(bench.broker):
        for _ in range(params["n_batch"]):
            bench.send("noop")
    batch = params["n_batch"] / (time.perf_counter() - start)
    log(f"batch {batch:.0f}/s")
    return {"single_rate": single, "batch_rate": batch, "batch_api": system.batch_api}


def fill(system: System, params: Params) -> dict[str, Any]:
    kind = params.get("kind", "noop")
    queue = params["low_queue"] if kind == "low" else params["queue"]
    system.prepare(params, [queue])
    bench = Bench(system, params, kind)
    start = time.perf_counter()
    with system.batch(bench.broker):
        for _ in range(params["n"]):
            bench.send(kind)
    return {"n": params["n"], "rate": params["n"] / (time.perf_counter() - start)}


def drain(system: System, params: Params) -> dict[str, Any]:
    system.prepare(params, [params["queue"]])
    bench = Bench(system, params, "noop")
    acks = bench.acks.counters["bench_noop"]
    wall_start = time.time()
    start = time.perf_counter()
    cpu_start = time.process_time()
    with bench.worker():
        acks.wait_or_stall(params["stall_s"])
        end = acks.last_at or time.perf_counter()
        # CPU of every thread of this process: on a machine shared with other
        # work it moves far less than the rate does.
        cpu_s = time.process_time() - cpu_start
    seconds = end - start
    # A stalled drain still reports what it acked; the harness flags it.
    return {"n": acks.count, "seconds": seconds, "rate": acks.count / seconds,
            "first_ack_s": (acks.first_at or end) - start, "wall_start": wall_start,
            "cpu_us_per_msg": cpu_s / max(1, acks.count) * 1e6}


def latency(system: System, params: Params) -> dict[str, Any]:
    system.prepare(params, [params["queue"]])
    bench = Bench(system, params, "stamp")
    with bench.worker():
        bench.wait_ready("stamp")
        bench.latencies.clear()
        sender = spawn("send", {**params, "kind": "stamp"})
        child_result(sender, params["count"] / params["rate"] + 60)
        deadline = time.monotonic() + STRAGGLER_S
        while len(bench.latencies) < params["count"] and time.monotonic() < deadline:
            time.sleep(0.05)
        return latency_summary(list(bench.latencies), params["count"])


def send(system: System, params: Params) -> dict[str, Any]:
    """Child of latency/priority: sends ``count`` stamped messages at ``rate``."""
    bench = Bench(system, params, params["kind"])
    bench.send(params["kind"], 0.0)  # connect before the clock starts
    wait_until(params.get("start_at"))
    sent = pace(params["rate"], params["count"], lambda i: bench.send(params["kind"], time.time()),
                params["count"] / params["rate"] + 30)
    return {"sent": sent}


def priority(system: System, params: Params) -> dict[str, Any]:
    """One phase of the priority scenario (the harness fills the backlog first):

    * ``idle``: no backlog, high messages at ``rate``: their latency;
    * ``baseline``: a low backlog drains alone: its rate over the window;
    * ``busy``: the same backlog while high messages come at ``rate``.
    """
    phase = params["phase"]
    system.prepare(params, [params["high_queue"], params["low_queue"]])
    bench = Bench(system, {**params, "n": params["n_low"]}, "high", "low")
    low = bench.acks.counters["bench_low"]
    window_s = params["count"] / params["rate"]
    with bench.worker():
        if phase == "idle":
            bench.wait_ready("high")
            bench.latencies.clear()
            child_result(spawn("send", {**params, "kind": "high"}), window_s + 60)
            _wait_for(lambda: len(bench.latencies) >= params["count"], STRAGGLER_S)
            return latency_summary(list(bench.latencies), params["count"])
        sampler = Sampler(lambda: low.count)
        try:
            if not _wait_for(lambda: low.count > 0, READY_TIMEOUT_S):
                raise RuntimeError("low backlog never started draining")
            # Both consumers must have joined, or the window measures a rebalance.
            bench.wait_ready("high")
            # The sender starts on the wall clock, so the window is exactly its run.
            start_at = time.time() + SETTLE_S
            sender = (spawn("send", {**params, "kind": "high", "start_at": start_at})
                      if phase == "busy" else None)
            opens = time.perf_counter() + SETTLE_S
            time.sleep(SETTLE_S + window_s)
            closes = time.perf_counter()
            result: dict[str, Any] = {"low_rate": sampler.rate(opens, closes),
                                      "backlog_left": params["n_low"] - low.count}
            if sender is not None:
                child_result(sender, 60)
                _wait_for(lambda: len(bench.latencies) >= params["count"], STRAGGLER_S)
                result.update(latency_summary(list(bench.latencies), params["count"]))
            return result
        finally:
            sampler.stop()


def _wait_for(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def work(system: System, params: Params) -> dict[str, Any]:
    """Fault drills: a worker that appends each message's body (its number)
    to ``ids_file`` before the actor returns, so what was processed is on disk
    before its ack, and runs until the harness kills it, ``limit_s`` passes or
    SIGTERM asks it to stop (then it stops the way ``dramatiq`` does: finishes
    what it runs, commits and leaves the group). ``work_ms`` (default 0) is
    spent on each message first, so a drain lasts long enough for a fault to
    land in the middle of it. With ``log_file``, the process logs at INFO
    there (kafka-python's group coordinator included), so a drill that fails
    can show what each worker's consumers did."""
    if params.get("log_file"):
        logging.basicConfig(
            filename=params["log_file"], level=logging.INFO,
            format="%(asctime)s.%(msecs)03d %(threadName)s %(name)s %(levelname)s %(message)s",
            datefmt="%H:%M:%S")
    fd = os.open(params["ids_file"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    bench = Bench(system, params, "noop")
    work_s = params.get("work_ms", 0) / 1000
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())

    def record(sent: float, body: str) -> None:
        if work_s:
            time.sleep(work_s)
        # One write(2) on an O_APPEND file: whole lines, even from several threads.
        os.write(fd, f"{body.strip()}\n".encode())

    bench.actors["noop"].fn = record
    with bench.worker():
        stopped = stop.wait(params["limit_s"])
    return {"stopped": stopped}


def fill_numbered(system: System, params: Params) -> dict[str, Any]:
    """Fault drills: ``n`` messages whose bodies are their numbers."""
    system.prepare(params, [params["queue"]])
    bench = Bench(system, params, "noop")
    with system.batch(bench.broker):
        for i in range(params["n"]):
            bench.actors["noop"].send(0.0, f"{i}")
    return {"n": params["n"]}


def send_once(system: System, params: Params) -> dict[str, Any]:
    """Fault drills: how long one send takes to fail while Kafka is away."""
    start = time.perf_counter()
    try:
        bench = Bench(system, params, "noop")
        bench.send("noop")
        outcome = "sent"
    except Exception as e:  # the drill reports whatever surfaced
        outcome = f"{type(e).__module__}.{type(e).__name__}: {str(e)[:200]}"
    return {"outcome": outcome, "seconds": time.perf_counter() - start}


def run(system: System) -> None:
    # (Imported here: the start-up scenario builds on this module's Bench.)
    from _startup import startup

    main({
        "startup": lambda p: startup(system, p),
        "work": lambda p: work(system, p),
        "fill-numbered": lambda p: fill_numbered(system, p),
        "send-once": lambda p: send_once(system, p),
        "enqueue": lambda p: enqueue(system, p),
        "fill": lambda p: fill(system, p),
        "drain": lambda p: drain(system, p),
        "latency": lambda p: latency(system, p),
        "send": lambda p: send(system, p),
        "priority": lambda p: priority(system, p),
    })
