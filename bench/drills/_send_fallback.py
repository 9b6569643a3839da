"""Send drills: what a web server's ``send()`` does while Kafka is away.

- ``spool-outage``: Kafka is killed, a sender in spool mode sends 1,000
  notifications at 50/s, Kafka comes back after 30 s. Each send must return
  within 50 ms at p99, and every notification be pushed exactly once.
- ``spool-sender-kill``: the same, with the sender SIGKILLed halfway and
  started again on the same spool (which its successor flushes).
- ``raise-circuit``: Kafka is killed and a sender in raise mode sends at
  50/s: past the first failure, each send must fail within 50 ms at p99.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from bench.drills._common import Context, Result, wait_until
from bench.drills._push_rig import PushRig
from bench.drills._steady_sender import read_log
from bench.log import say
from bench.runner import kill, start

#: Notifications the spool drills send, and how fast.
COUNT = 1_000
RATE = 50.0

#: How long Kafka stays away in the spool drills, in seconds.
OUTAGE_S = 30.0

#: Sends in the raise drill.
RAISE_COUNT = 500

#: The goal for a send while Kafka is away, at p99, in seconds.
FAST_S = 0.05

#: Longest wait for every notification to be pushed once Kafka is back.
FINISH_TIMEOUT_S = 240.0

#: Provider latency, in seconds.
LATENCY_S = 0.02


def spool_outage(ctx: Context) -> Result:
    return _spool(ctx, "spool-outage", kill_sender=False)


def spool_sender_kill(ctx: Context) -> Result:
    return _spool(ctx, "spool-sender-kill", kill_sender=True)


def _spool(ctx: Context, name: str, *, kill_sender: bool) -> Result:
    kafka = ctx.need_kafka()
    with PushRig(ctx, name, latency_s=LATENCY_S, settings={}) as rig:
        log, users = rig.home / "sender.jsonl", rig.home / "users.json"
        users.write_text(json.dumps(list(rig.phones)))
        env = {**rig.env, "SEND_FALLBACK": "spool", "SPOOL_PATH": str(rig.home / "spool.db")}
        worker = rig.start_worker()
        kafka.kill()
        down_at = time.monotonic()
        say(f"  Kafka killed; sending {COUNT} at {RATE:.0f}/s in spool mode")
        command = [sys.executable, "-m", "bench.drills._steady_sender", str(log), str(users),
                   str(COUNT), str(RATE)]
        sender = start(command, rig.home / "sender.log", env=env)
        try:
            if kill_sender:
                if wait_until(lambda: _done(log) >= COUNT // 2, OUTAGE_S) is None:
                    raise RuntimeError(f"the sender sent {_done(log)} in {OUTAGE_S:.0f}s")
                kill(sender)
                say(f"  sender SIGKILLed after {_done(log)} sends; started again")
                sender = start(command, rig.home / "sender.log", env=env)
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
            kafka.start()
            say(f"  Kafka back after {time.monotonic() - down_at:.0f}s")
            sent = _sent(log)
            rig.sent.update(sent)
            if wait_until(lambda: len(_sent(log)) == COUNT and rig.settled(), FINISH_TIMEOUT_S,
                          progress=rig.progress) is None:
                raise RuntimeError(f"not all pushed: {rig.progress()}")
            rig.sent.update(_sent(log))
            time.sleep(3)  # a late duplicate would still be counted
        finally:
            kill(sender)
            kill(worker)
        verdict = rig.verdict()
        seconds = [e["seconds"] for e in read_log(log) if e["event"] == "done"]
        p99 = _p99(seconds)
        outcomes = Counter(e["outcome"] for e in read_log(log) if e["event"] == "done")
        ok = verdict["ok"] and p99 <= FAST_S and verdict["notifications"] == COUNT
        return {**verdict, "ok": ok, "send_p99_ms": round(p99 * 1000, 1),
                "outcomes": dict(outcomes),
                "notes": f"send p99 {p99 * 1000:.1f} ms while Kafka was away (goal"
                         f" {FAST_S * 1000:.0f}); {verdict['notifications']} notifications"}


def raise_circuit(ctx: Context) -> Result:
    kafka = ctx.need_kafka()
    with PushRig(ctx, "raise-circuit", latency_s=LATENCY_S, settings={}) as rig:
        log, users = rig.home / "sender.jsonl", rig.home / "users.json"
        users.write_text(json.dumps(list(rig.phones)))
        kafka.kill()
        try:
            sender = start([sys.executable, "-m", "bench.drills._steady_sender", str(log),
                            str(users), str(RAISE_COUNT), str(RATE)],
                           rig.home / "sender.log", env={**rig.env, "SEND_FALLBACK": "raise"})
            if wait_until(lambda: _done(log) >= RAISE_COUNT, 2 * RAISE_COUNT / RATE) is None:
                raise RuntimeError(f"the sender got through {_done(log)} of {RAISE_COUNT}")
            kill(sender)
        finally:
            kafka.start()
    done = [e for e in read_log(log) if e["event"] == "done"]
    first, rest = done[0], done[1:]
    p99 = _p99([e["seconds"] for e in rest])
    outcomes = Counter(e["outcome"] for e in done)
    ok = "sent" not in outcomes and p99 <= FAST_S and first["seconds"] <= 2.5
    return {"ok": ok, "sent": len(done), "first_failure_s": round(first["seconds"], 2),
            "open_p99_ms": round(p99 * 1000, 1), "outcomes": dict(outcomes),
            "notes": f"first send failed after {first['seconds']:.2f} s ({first['outcome']}),"
                     f" then p99 {p99 * 1000:.1f} ms while the circuit was open"}


def _done(log: Path) -> int:
    return sum(1 for e in read_log(log) if e["event"] == "done")


def _sent(log: Path) -> dict[str, str]:
    """Each notification the sender got into Kafka or its spool, with its user."""
    users = {e["n"]: e["message"] for e in read_log(log) if e["event"] == "begin"}
    found = {}
    for entry in read_log(log):
        if entry["event"] == "done" and entry["outcome"] == "sent":
            message = json.loads(users[entry["n"]])
            found[entry["id"]] = message["args"][0]
    return found


def _p99(values: list[float]) -> float:
    if len(values) < 2:
        return max(values, default=0.0)
    return statistics.quantiles(values, n=100)[98]
