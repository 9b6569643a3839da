"""Fault drills: ``python -m bench.drills``.

They run against a private Kafka (the project's ``LocalKafka`` on free
ports, sharing the jars in ``.cache/kafka/libs``), never the shared one,
since one drill kills the broker. Each drill fills a queue with numbered
messages and drains it with our worker, which writes every number it
processes to a file before the message is acked; the drill then counts:

* lost: numbers never processed (must be 0: delivery is at least once);
* duplicates: numbers processed more than once (redeliveries; expected a
  few, bounded by what was in flight).

Drills:

* ``worker-kill``: SIGKILL the worker a third of the way through, start another
  (``finished_after_s`` counts from its start: the dead member keeps its
  partitions until the group's session timeout expires);
* ``kafka-kill``: SIGKILL Kafka a third of the way through, start it again
  after a pause; the same worker must carry on (``finished_after_s`` counts
  from Kafka answering again);
* ``send-down``: with Kafka down, how long ``actor.send()`` takes to fail
  and with what error.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.cli import RESULTS
from bench.envs import CACHE, ROOT
from bench.log import say
from bench.redis_server import free_port
from bench.runner import kill_all, run_peer
from bench.systems import OURS
from broker.localkafka import LocalKafka

#: The private Kafka's home (wiped before and after).
HOME = CACHE / "drill-kafka"

DRILLS = ("worker-kill", "kafka-kill", "send-down")

#: Messages per drill: enough for the kill to land mid-drain.
MESSAGES = 3_000

#: How long Kafka stays down in the kafka-kill drill, in seconds.
OUTAGE_S = 5.0

#: How long a drill may wait for every number to be processed, in seconds.
FINISH_TIMEOUT_S = 180.0


def _count(ids_file: Path) -> collections.Counter[str]:
    try:
        return collections.Counter(ids_file.read_text().split())
    except FileNotFoundError:
        return collections.Counter()


def _start_worker(params: dict[str, Any], log: Path) -> subprocess.Popen[bytes]:
    cmd = [str(OURS.python()), str(OURS.script_path), "work", json.dumps(params)]
    with log.open("a") as err:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT,
                                start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _wait_for(ids_file: Path, distinct: int, timeout_s: float) -> float | None:
    """Seconds until ``distinct`` different numbers were processed (None: timed out)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if len(_count(ids_file)) >= distinct:
            return time.monotonic() - start
        time.sleep(0.1)
    return None


def _verdict(ids_file: Path, n: int) -> dict[str, Any]:
    seen = _count(ids_file)
    lost = [i for i in range(n) if str(i) not in seen]
    return {"messages": n, "processed": sum(seen.values()), "lost": len(lost),
            "duplicates": sum(seen.values()) - len(seen), "ok": not lost}


def drill(kafka: LocalKafka, name: str, workdir: Path) -> dict[str, Any]:
    queue = f"drill-{secrets.token_hex(3)}-{name}"
    ids_file = workdir / f"{queue}.ids"
    log = workdir / "drills.log"
    params = {"bootstrap": kafka.bootstrap_servers, "queue": queue, "group": queue,
              "partitions": 3, "payload_bytes": 8, "threads": 8, "n": MESSAGES,
              "ids_file": str(ids_file), "limit_s": FINISH_TIMEOUT_S + 60}
    if name == "send-down":
        kafka.kill()
        try:
            result, _ = run_peer(OURS, "send-once", params, timeout_s=120, log_file=log)
        finally:
            kafka.start()
        return {"outcome": result["outcome"], "seconds_to_fail": round(result["seconds"], 2),
                "ok": result["outcome"] != "sent"}
    run_peer(OURS, "fill-numbered", params, timeout_s=120, log_file=log)
    worker = _start_worker(params, log)
    extra: dict[str, Any] = {}
    try:
        if _wait_for(ids_file, MESSAGES // 3, 60) is None:
            raise RuntimeError(f"{name}: the worker never got a third through")
        if name == "worker-kill":
            _stop(worker)
            extra["killed_after"] = sum(_count(ids_file).values())
            worker = _start_worker(params, log)
        elif name == "kafka-kill":
            kafka.kill()
            down = time.monotonic()
            extra["killed_after"] = sum(_count(ids_file).values())
            time.sleep(OUTAGE_S)
            kafka.start()
            extra["kafka_down_s"] = round(time.monotonic() - down, 1)
        took = _wait_for(ids_file, MESSAGES, FINISH_TIMEOUT_S)
        extra["finished_after_s"] = None if took is None else round(took, 1)
        time.sleep(2)  # late redeliveries still count as duplicates
    finally:
        _stop(worker)
    return {**_verdict(ids_file, MESSAGES), **extra}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.drills", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("drills", nargs="*", metavar="DRILL",
                   help=f"which to run (default: all): {', '.join(DRILLS)}")
    args = p.parse_args(argv)
    unknown = set(args.drills) - set(DRILLS)
    if unknown:
        p.error(f"unknown drill(s): {', '.join(sorted(unknown))}")
    shutil.rmtree(HOME, ignore_errors=True)
    kafka = LocalKafka(HOME, port=free_port(), controller_port=free_port(),
                       jars=ROOT / ".cache" / "kafka" / "libs")
    workdir = HOME / "work"
    results: dict[str, Any] = {}
    try:
        kafka.start()
        workdir.mkdir(parents=True, exist_ok=True)
        for name in args.drills or DRILLS:
            say(f"drill {name} …")
            try:
                results[name] = drill(kafka, name, workdir)
            except Exception as e:  # one failed drill must not hide the others
                results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            say(f"drill {name}: {json.dumps(results[name])}")
    finally:
        kill_all()
        kafka.stop()
        shutil.rmtree(HOME, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"drills-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    say(f"results in {out.relative_to(ROOT)}")
    print("| drill | ok | details |\n|---|---|---|")
    for name, r in results.items():
        details = ", ".join(f"{k}={v}" for k, v in r.items() if k != "ok")
        print(f"| {name} | {'pass' if r.get('ok') else 'FAIL'} | {details} |")
    return 0 if all(r.get("ok") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
