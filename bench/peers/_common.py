"""Shared by every peer script; standard library only, since each peer runs
in its own virtualenv. Run as scripts (``python bench/peers/x.py``), the
peers find this module on ``sys.path`` beside them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

#: Marks the result line on stdout, which libraries may also print to.
RESULT_PREFIX = "BENCH-RESULT "

#: Longest a drain may take in all, in seconds.
DRAIN_LIMIT_S = 360.0

#: After a worker ran its first message, how long to wait before measuring:
#: consumers that join a moment later (delay queues) trigger one more
#: rebalance, and the figures are about the steady state.
READY_SETTLE_S = 3.0

#: How long a latency run waits, once the sender is done, for messages still
#: on their way; what has not arrived by then is reported as missing.
STRAGGLER_S = 10.0

#: Threads a steady-rate sender spreads its sends over.
SENDER_THREADS = 4

Params = dict[str, Any]
Handler = Callable[[Params], dict[str, Any]]


def log(text: str) -> None:
    print(f"  [{os.path.basename(sys.argv[0])} {os.getpid()}] {text}", file=sys.stderr,
          flush=True)


def main(handlers: dict[str, Handler]) -> None:
    """``script MODE JSON_PARAMS``: run one handler, print its result."""
    if len(sys.argv) != 3 or sys.argv[1] not in handlers:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(handlers)}}} JSON_PARAMS")
    params = json.loads(sys.argv[2])
    try:
        result = handlers[sys.argv[1]](params)
    except Exception as e:  # reported to the harness, which shows it as a skip
        traceback.print_exc()
        print(RESULT_PREFIX + json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        sys.stdout.flush()
        os._exit(1)
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # Some clients leave non-daemon threads behind; the result is out, so go.
    os._exit(0)


def payload(size: int) -> str:
    return "x" * size


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def latency_summary(latencies_s: list[float], expected: int) -> dict[str, Any]:
    if not latencies_s:
        raise RuntimeError("no message arrived")
    ms = [x * 1000 for x in latencies_s]
    return {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "max_ms": max(ms),
            "received": len(ms), "expected": expected}


def timed_rate(n: int, fn: Callable[[int], None]) -> float:
    """Messages per second of ``fn(i)`` called for i in range(n)."""
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - start)


def wait_until(wall_time: float | None) -> None:
    """Sleep until ``time.time()`` reaches ``wall_time`` (if given)."""
    if wall_time is not None:
        time.sleep(max(0.0, wall_time - time.time()))


def pace(rate: float, count: int, send: Callable[[int], None], limit_s: float,
         threads: int = SENDER_THREADS) -> int:
    """Call ``send(i)`` ``count`` times at a steady ``rate`` per second (not in
    bursts: each call waits for its slot). Calls are spread over ``threads``
    threads, as a web server's would be, since a send that waits for Kafka's
    acknowledgement caps one thread below the rate. Returns how many were
    sent before ``limit_s`` ran out."""
    start = time.monotonic()
    sent = [0] * threads

    def loop(k: int) -> None:
        for i in range(k, count, threads):
            slot = start + i / rate
            now = time.monotonic()
            if now - start > limit_s:
                return
            if slot > now:
                time.sleep(slot - now)
            send(i)
            sent[k] += 1

    workers = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(limit_s + 30)
    return sum(sent)


class Counter:
    """Thread-safe count that sets ``done`` when it reaches ``target``, and
    remembers when each tenth of the target was passed (for rates over a
    window)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.done = threading.Event()
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._lock = threading.Lock()

    def add(self, k: int = 1) -> None:
        with self._lock:
            now = time.perf_counter()
            if self.first_at is None:
                self.first_at = now
            self.count += k
            self.last_at = now
            if self.count >= self.target:
                self.done.set()

    def wait(self, timeout_s: float) -> bool:
        return self.done.wait(timeout_s)

    def wait_or_stall(self, stall_s: float, limit_s: float = DRAIN_LIMIT_S) -> bool:
        """Wait for the target; give up once no count came for ``stall_s``
        (or after ``limit_s`` in all). True if the target was reached."""
        deadline = time.monotonic() + limit_s
        seen, since = -1, time.monotonic()
        while not self.done.wait(0.5):
            now = time.monotonic()
            if self.count != seen:
                seen, since = self.count, now
            elif now - since > stall_s or now > deadline:
                return False
        return True


class Sampler:
    """Samples ``read()`` every ``interval_s`` on a daemon thread, so a rate
    can be taken over any window afterwards."""

    def __init__(self, read: Callable[[], int], interval_s: float = 0.05) -> None:
        self.samples: list[tuple[float, int]] = []
        self._read = read
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self._read()))
            self._stop.wait(self._interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def rate(self, start: float, end: float) -> float:
        """Count added per second between perf_counter times ``start`` and ``end``."""
        inside = [(t, c) for t, c in self.samples if start <= t <= end]
        if len(inside) < 2:
            return 0.0
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0


def spawn(mode: str, params: Params) -> subprocess.Popen[str]:
    """Run this same script in ``mode`` as a child (its own GIL), stdout piped."""
    return subprocess.Popen([sys.executable, sys.argv[0], mode, json.dumps(params)],
                            stdout=subprocess.PIPE, text=True)


def child_result(proc: subprocess.Popen[str], timeout_s: float) -> dict[str, Any]:
    """The result a child printed; it is killed if it overstays ``timeout_s``."""
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"child {_name(proc)} overran {timeout_s:.0f}s") from None
    finally:
        if proc.poll() is None:
            proc.kill()
    for line in out.splitlines():
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX):])
            if "error" in result:
                raise RuntimeError(f"child {_name(proc)}: {result['error']}")
            return result
    raise RuntimeError(f"child {_name(proc)} exited {proc.returncode} without a result")


def _name(proc: subprocess.Popen[str]) -> str:
    """The child's module, for errors (its command is ``python -m <module> …``)."""
    args = proc.args
    return repr(args[2]) if isinstance(args, list | tuple) and len(args) > 2 else repr(args)
