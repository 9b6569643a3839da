"""The command line: pick drills, run them on a private Kafka, print the
table, write the JSON, exit 1 if any failed."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import bench.drills
from bench.cli import RESULTS
from bench.drills import (
    _apns_outage,
    _cluster,
    _device_throttle,
    _fcm_quota,
    _kafka,
    _push,
    _send_fallback,
    _two_hosts,
    _undecodable,
)
from bench.drills._cluster_rig import PrivateCluster
from bench.drills._common import Context, Result
from bench.envs import CACHE, ROOT
from bench.log import say
from bench.redis_server import free_port
from bench.runner import kill_all
from broker.localkafka import LocalKafka

#: The private Kafka's home (wiped before and after).
HOME = CACHE / "drill-kafka"

#: Every drill, in the order a full run takes them.
DRILLS: dict[str, Callable[[Context], Result]] = {
    "worker-kill": _kafka.worker_kill,
    "kafka-kill": _kafka.kafka_kill,
    "send-down": _kafka.send_down,
    "scale": _kafka.scale,
    "undecodable": _undecodable.undecodable,
    "provider-outage": _push.provider_outage,
    "apns-outage": _apns_outage.apns_outage,
    "device-throttle": _device_throttle.device_throttle,
    "fcm-quota": _fcm_quota.fcm_quota,
    "slow-provider": _push.slow_provider,
    "push-kill": _push.push_kill,
    "two-hosts": _two_hosts.two_hosts,
    "raise-circuit": _send_fallback.raise_circuit,
    "spool-outage": _send_fallback.spool_outage,
    "spool-sender-kill": _send_fallback.spool_sender_kill,
    "cluster-broker-kill": _cluster.broker_kill,
    "cluster-rolling-restart": _cluster.rolling_restart,
    "cluster-two-down": _cluster.two_down,
}

#: The table's count columns.
COUNTS = ("sent", "processed", "lost", "duplicated")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.drills", description=bench.drills.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("drills", nargs="*", metavar="DRILL",
                   help=f"which to run (default: all): {', '.join(DRILLS)}")
    args = p.parse_args(argv)
    unknown = set(args.drills) - set(DRILLS)
    if unknown:
        p.error(f"unknown drill(s): {', '.join(sorted(unknown))}; known: {', '.join(DRILLS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    began = time.monotonic()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    shutil.rmtree(HOME, ignore_errors=True)
    jars = ROOT / ".cache" / "kafka" / "libs"
    kafka = LocalKafka(HOME, port=free_port(), controller_port=free_port(), jars=jars)
    cluster = PrivateCluster(HOME / "cluster", jars)
    ctx = Context(kafka.bootstrap_servers, HOME / "work", kafka, cluster)
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    # Library warnings (a killed worker's connections closing on the fakes,
    # kafka-python while Kafka is down) go to a file, not between the progress lines.
    logging.basicConfig(filename=ctx.workdir / "harness.log", level=logging.INFO, force=True)
    results: dict[str, Result] = {}
    try:
        names = args.drills or list(DRILLS)
        if any(DRILLS[name].__module__ != _cluster.__name__ for name in names):
            kafka.start()  # the cluster drills have a Kafka of their own
        for name in names:
            results[name] = run_one(name, DRILLS[name], ctx)
    finally:
        kill_all()
        kafka.stop()
        cluster.close()
        passed = bool(results) and all(r.get("ok") for r in results.values())
        if not passed:
            _keep_logs(ctx, RESULTS / f"drills-{stamp}-logs")
        shutil.rmtree(HOME, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"drills-{stamp}.json"
    total_s = round(time.monotonic() - began, 1)
    out.write_text(json.dumps({"commit": _commit(), "drills": results, "total_seconds": total_s},
                              indent=2) + "\n")
    say(f"results in {out.relative_to(ROOT)}")
    print(table(results))
    print(f"\n{len(results)} drill(s), {sum(bool(r.get('ok')) for r in results.values())} passed,"
          f" in {total_s:.0f} s ({total_s / 60:.1f} min) in all")
    return 0 if passed else 1


def _keep_logs(ctx: Context, to: Path) -> None:
    """Copy every log of the run (workers, fakes' workers, harness, Kafka) and
    the workers' ids files out of the private home, which is wiped, so a
    failure can be looked into."""
    logs = [*ctx.workdir.rglob("*.log"), *ctx.workdir.rglob("*.ids"), HOME / "server.log",
            *HOME.glob("cluster/node-*/server.log")]
    for log in logs:
        if log.is_file():
            target = to / log.relative_to(HOME)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(log, target)
    say(f"logs kept in {to.relative_to(ROOT)}")


def run_one(name: str, drill: Callable[[Context], Result], ctx: Context) -> Result:
    say(f"drill {name} …")
    started = time.monotonic()
    try:
        result = drill(ctx)
    except Exception as e:  # one failed drill must not hide the others
        result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    finally:
        # A drill that failed half-way may leave workers behind: not into the next one.
        kill_all()
    result["seconds"] = round(time.monotonic() - started, 1)
    counts = " ".join(f"{k}={result[k]}" for k in COUNTS if k in result)
    say(f"drill {name}: {'pass' if result.get('ok') else 'FAIL'} {counts} "
        f"({result['seconds']} s) {result.get('notes') or result.get('error', '')}")
    return result


def table(results: dict[str, Result]) -> str:
    lines = ["| drill | result | sent | processed | lost | duplicated | seconds | notes |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for name, r in results.items():
        counts = " | ".join(f"{r[k]:,}" if k in r else "–" for k in COUNTS)
        notes = r.get("notes") or r.get("error", "")
        lines.append(f"| {name} | {'pass' if r.get('ok') else 'FAIL'} | {counts} "
                     f"| {r['seconds']} | {notes} |")
    return "\n".join(lines)


def _commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()
