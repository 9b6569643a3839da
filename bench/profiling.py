"""Profiles of our broker where it misses a goal: ``python -m bench.profiling``.

Runs one of our peer modes (drain, enqueue, priority phases), or the push
scenario's worker (``push``: py-spy attached to ``dramatiq willowe_tasks`` and
its worker processes while notifications go through it), under py-spy
(installed into ``.cache/bench/tools``), samples the worker for a few
seconds in its steady state, and sums the stacks two ways: by thread role
(which thread is busy) and by function, inclusive and self (where the time
goes). The raw stacks stay in ``.cache/bench/profiles`` for a flame graph.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

from bench import push
from bench.cleanup import delete_run
from bench.config import FULL
from bench.envs import CACHE, TOOLS, EnvUnavailable
from bench.log import say
from bench.runner import kill_all, run_peer
from bench.scenarios import Context
from bench.systems import OURS

PROFILES = CACHE / "profiles"

#: Sampling rate, samples per second per thread.
RATE_HZ = 250

#: Most notifications one push profile sends (-n is sized for the drain).
PUSH_MAX_N = 4_000

_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def summarize(raw: Path, top: int = 25) -> str:
    """Text summary of a py-spy ``raw`` file (collapsed stacks + counts)."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    roles: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        total += count
        roles[_role(frames)] += count
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
    if not total:
        return "no samples"
    out = [f"{total} samples", "", "by thread role:"]
    out += [f"  {100 * c / total:5.1f}%  {r}" for r, c in roles.most_common()]
    out += ["", f"top {top} inclusive:"]
    out += [f"  {100 * c / total:5.1f}%  {n}" for n, c in inclusive.most_common(top)]
    out += ["", f"top {top} self:"]
    out += [f"  {100 * c / total:5.1f}%  {n}" for n, c in own.most_common(top)]
    return "\n".join(out) + "\n"


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path}:{match['line'] or '?'})"


def _role(frames: list[str]) -> str:
    text = ";".join(frames)
    for needle, role in (("WorkerThread", "dramatiq worker thread"),
                         ("ConsumerThread", "dramatiq consumer thread"),
                         ("NetworkSelector", "kafka-python IO thread"),
                         ("Sender.run", "kafka-python producer sender"),
                         ("BaseEventLoop.run_forever", "push clients' loop thread (libcurl)"),
                         ("_dramatiq_peer.py", "main thread (benchmark)")):
        if needle in text:
            return role
    return "other"


def profile(mode: str, phase: str | None, seconds: float, n: int, gil: bool = False) -> Path:
    """Run our peer in ``mode`` and sample it with py-spy; return the raw file."""
    try:
        py_spy = TOOLS.ensure().parent / "py-spy"
    except EnvUnavailable as e:
        raise SystemExit(f"can't profile: {e}") from None
    run_id = time.strftime("%d%H%M") + secrets.token_hex(2)
    ctx = Context(FULL, os.environ.get("KAFKA_BROKER", "127.0.0.1:9092"), run_id,
                  CACHE / "logs", 230)
    ctx.logdir.mkdir(parents=True, exist_ok=True)
    name = ctx.name(OURS, f"prof{mode}", 0)
    # Single sends wait on Kafka (idle time): a few suffice; the batch is what is profiled.
    params = ctx.params(OURS, name, n=n, n_low=n, n_single=50, n_batch=n, phase=phase,
                        high_queue=f"{name}-high", low_queue=f"{name}-low", kind="low"
                        if phase else "noop", high_priority=0, low_priority=100, rate=10.0,
                        count=int(seconds * 10) + 20)
    PROFILES.mkdir(parents=True, exist_ok=True)
    label = f"{mode}{'-' + phase if phase else ''}{'-gil' if gil else ''}"
    raw = PROFILES / f"{time.strftime('%Y%m%d-%H%M%S')}-{label}.raw"
    if mode in ("drain", "priority"):
        run_peer(OURS, "fill", params, timeout_s=300, log_file=ctx.logdir / "profile.log")
    # py-spy starts the peer itself, so sampling covers its whole life; the
    # summary is dominated by the steady state as long as ``n`` is large.
    cmd = [str(py_spy), "record", "--rate", str(RATE_HZ), "--format", "raw", "--output",
           str(raw), "--nonblocking", *(["--gil"] if gil else []), "--",
           str(OURS.python()), str(OURS.script_path), mode, json.dumps(params)]
    say(f"profiling ours {mode} {phase or ''} ({n} messages) → {raw}")
    try:
        subprocess.run(cmd, timeout=600, check=False, capture_output=True)
    finally:
        kill_all()
        delete_run(ctx.bootstrap, f"bench-{run_id}")
    return raw


def profile_push(n: int, threads: int, latency_s: float, gil: bool = False) -> Path:
    """Push ``n`` notifications through a worker of ``threads`` threads into
    fakes answering after ``latency_s``, sampling the worker's process tree."""
    try:
        py_spy = TOOLS.ensure().parent / "py-spy"
    except EnvUnavailable as e:
        raise SystemExit(f"can't profile: {e}") from None
    run_id = time.strftime("%d%H%M") + secrets.token_hex(2)
    bootstrap = os.environ.get("KAFKA_BROKER", "127.0.0.1:9092")
    PROFILES.mkdir(parents=True, exist_ok=True)
    label = f"push-{threads}t-{latency_s * 1000:g}ms{'-gil' if gil else ''}"
    raw = PROFILES / f"{time.strftime('%Y%m%d-%H%M%S')}-{label}.raw"
    spies: list[subprocess.Popen[bytes]] = []

    def attach(pid: int) -> None:
        spies.append(subprocess.Popen(
            [str(py_spy), "record", "--pid", str(pid), "--subprocesses", "--rate",
             str(RATE_HZ), "--format", "raw", "--output", str(raw), "--nonblocking",
             *(["--gil"] if gil else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    say(f"profiling the push worker ({n} notifications, {threads} threads, "
        f"{latency_s * 1000:g} ms) → {raw}")
    try:
        row = push.run_once(bootstrap=bootstrap, group=f"bench-{run_id}-profpush", n=n,
                            threads=threads, workdir=CACHE / "logs" / f"profpush-{run_id}",
                            latency_s=latency_s, on_worker_start=attach)
        say(f"{row['rate']:.0f}/s of {row['ceiling']:.0f}/s; worker "
            f"{row['worker_cpu_ms_per_push']:.2f} ms CPU per push (sampling adds to it)")
    finally:
        for spy in spies:  # py-spy writes its file once the worker it sampled is gone
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
        delete_run(bootstrap, f"bench-{run_id}")
    return raw


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profiling", description=__doc__)
    p.add_argument("mode", choices=["enqueue", "drain", "priority", "push"])
    p.add_argument("--phase", choices=["baseline", "busy", "idle"])
    p.add_argument("-n", type=int, default=40_000, help="messages (default 40000)")
    p.add_argument("--gil", action="store_true",
                   help="sample only the thread holding the GIL: where CPU goes, not waits")
    p.add_argument("--threads", type=int, default=8, help="push: worker threads (default 8)")
    p.add_argument("--latency-ms", type=float, default=push.LATENCY_S * 1000,
                   help="push: the fakes' answer delay (default 20)")
    p.add_argument("--summarize", type=Path, help="only summarize an existing raw file")
    args = p.parse_args(argv)
    if args.summarize:
        raw = args.summarize
    elif args.mode == "push":
        raw = profile_push(min(args.n, PUSH_MAX_N), args.threads, args.latency_ms / 1000,
                           args.gil)
    else:
        raw = profile(args.mode, args.phase, 5.0, args.n, args.gil)
    text = summarize(raw)
    raw.with_suffix(".txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
