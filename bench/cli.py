"""``python -m bench``: run the scenarios, print the table, write the JSON."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from bench import cleanup, goals, machine, redis_server, report
from bench.config import FULL, QUICK
from bench.driver import run_all
from bench.envs import CACHE, ROOT, EnvUnavailable
from bench.log import say
from bench.runner import kill_all
from bench.scenarios import SCENARIOS, Context, Outcome
from bench.systems import ALL, BY_KEY, System

#: Where results go (ignored by git).
RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="smaller sizes (a couple of minutes)")
    p.add_argument("--only", action="append", choices=list(SCENARIOS), metavar="SCENARIO",
                   help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}")
    p.add_argument("--systems", default=",".join(s.key for s in ALL),
                   help="comma-separated systems to measure (default: all)")
    p.add_argument("--reps", type=int, help="repetitions per figure (default 3, at least 3)")
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BROKER", "127.0.0.1:9092"),
                   help="Kafka to measure against (default: $KAFKA_BROKER or 127.0.0.1:9092)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON and table")
    args = p.parse_args(argv)
    unknown = set(args.systems.split(",")) - set(BY_KEY)
    if unknown:
        p.error(f"unknown system(s): {', '.join(sorted(unknown))}; known: {', '.join(BY_KEY)}")
    if args.reps is not None and args.reps < 3:
        p.error("--reps must be at least 3: every figure is a median with a spread")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sizes = QUICK if args.quick else FULL
    if args.reps:
        sizes = dataclasses.replace(sizes, reps=args.reps)
    chosen = [BY_KEY[k] for k in args.systems.split(",")]
    scenarios = [s for s in SCENARIOS if not args.only or s in args.only]
    from broker.localkafka import broker_answers

    if not broker_answers(args.bootstrap, timeout_s=10):
        print(f"error: no Kafka answers at {args.bootstrap}; start one with `make kafka`",
              file=sys.stderr)
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # Short, since it is in every topic name and so in every message.
    run_id = time.strftime("%d%H%M") + secrets.token_hex(2)
    logdir = CACHE / "logs" / stamp
    logdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    say(f"run {run_id}: {', '.join(scenarios)} × {', '.join(s.key for s in chosen)}; "
        f"{sizes.reps} reps{' (quick)' if args.quick else ''}; peer logs in {logdir}")
    prefix = f"bench-{run_id}"
    results: dict[str, dict[str, Outcome]] = {}
    skipped: dict[str, str] = {}
    try:
        with contextlib.ExitStack() as stack:
            redis_url, redis_version = _start_redis(stack, chosen, scenarios, skipped)
            ready = _ready_systems(chosen, scenarios, skipped, redis_url)
            ctx = Context(sizes, args.bootstrap, run_id, logdir, _record_bytes(sizes.payload_bytes),
                          redis_url)
            results = run_all(ctx, scenarios, ready)
            facts = machine.facts(args.bootstrap, ready, redis_version)
    finally:
        kill_all()
        cleanup.delete_run(args.bootstrap, prefix)
    evaluated = goals.evaluate(results)
    text = report.table(results, evaluated, sizes.reps) + "\n" + report.system_notes(
        [s.key for s in chosen])
    if skipped:
        text += "".join(f"- skipped {BY_KEY[k].label}: {why}\n" for k, why in skipped.items())
    duration = time.time() - started
    document: dict[str, Any] = {
        "run_id": run_id, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z",
                                                   time.localtime(started)),
        "duration_s": round(duration, 1), "argv": sys.argv[1:], "quick": args.quick,
        "sizes": dataclasses.asdict(sizes), "machine": facts,
        "results": {sc: {k: o.to_json() for k, o in by.items()} for sc, by in results.items()},
        "goals": evaluated, "skipped_systems": skipped, "table": text,
    }
    path = args.out / f"{stamp}.json"
    report.write(path, document)
    print(text)
    say(f"done in {duration / 60:.1f} min; results in {path.relative_to(ROOT)}"
        if path.is_relative_to(ROOT) else f"done; results in {path}")
    return 0


def _start_redis(stack: contextlib.ExitStack, chosen: list[System], scenarios: list[str],
                 skipped: dict[str, str]) -> tuple[str | None, str | None]:
    """Start redis-server (stopped when ``stack`` closes) if a chosen peer needs it."""
    wanted = [s for s in chosen if s.needs_redis and s.scenarios & set(scenarios)]
    if not wanted:
        return None, None
    try:
        url = stack.enter_context(redis_server.running())
        return url, redis_server.version(redis_server.ensure_installed())
    except redis_server.RedisUnavailable as e:
        say(f"skipping {', '.join(s.label for s in wanted)}: {e}")
        for s in wanted:
            skipped[s.key] = str(e)
        return None, None


def _ready_systems(chosen: list[System], scenarios: list[str], skipped: dict[str, str],
                   redis_url: str | None) -> list[System]:
    """The chosen systems whose venv (and server) could be had."""
    ready = []
    for system in chosen:
        if system.key in skipped or not system.scenarios & set(scenarios):
            continue
        if system.needs_redis and redis_url is None:
            skipped.setdefault(system.key, "no redis-server")
            continue
        if system.env is not None:
            try:
                system.env.ensure()
            except EnvUnavailable as e:
                say(f"skipping {system.label}: {e}")
                skipped[system.key] = str(e)
                continue
        ready.append(system)
    return ready


def _record_bytes(payload_bytes: int) -> int:
    """How big one of our messages is on the wire, so the raw loops match it."""
    import dramatiq

    message: dramatiq.Message[object] = dramatiq.Message(
        queue_name="bench-00000000abcd-ours-drain0", actor_name="bench_noop",
        args=(0.0, "x" * payload_bytes), kwargs={}, options={})
    return len(message.encode())
