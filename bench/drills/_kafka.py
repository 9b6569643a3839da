"""Message-level drills: workers and Kafka fail while a queue drains.

Each fills a queue with numbered messages and drains it with bench workers
(see ``_drain``); lost (never processed) must be 0, duplicates are
redeliveries of what was in flight and are reported.
"""

from __future__ import annotations

import subprocess
import time

from bench.drills._common import Context, Result, spread, wait_until
from bench.drills._drain import Drain
from bench.log import say
from bench.runner import kill, run_peer, terminate_all
from bench.systems import OURS

#: Messages in the worker-kill and scale drills: at WORK_MS, 8 s of work.
MESSAGES = 6_000

#: Messages in the kafka-kill drill.
KAFKA_KILL_MESSAGES = 3_000

#: Per-message work in the scale drill, in ms: slower than WORK_MS, so the
#: three-worker stretch outlasts the two new workers' start and join. At 20 ms
#: the first worker (which reads ahead up to 500 records a poll) once had
#: all but a few hundred done before the others got their partitions; at
#: 50 ms the last two thirds take one worker about 25 s.
SCALE_WORK_MS = 50

#: Messages each added worker must have processed before the scale-down.
SHARE = 200

#: SIGKILLs in the worker-kill drill.
KILLS = 10

#: How long Kafka stays down in the kafka-kill drill, in seconds.
OUTAGE_S = 5.0

#: Longest wait for a (re)started worker to make progress, in seconds: a
#: killed member keeps its partitions for the group's 10 s session timeout.
RESUME_TIMEOUT_S = 60.0

#: Longest wait for a queue to drain once the faults are over, in seconds.
FINISH_TIMEOUT_S = 180.0

#: Wait after the drain, so late redeliveries still count as duplicates.
LATE_S = 2.0


#: Each restarted worker must be processing again within this long of its
#: start (issue #15: "resumes within 2 s of the restart"), in seconds.
RESUME_GOAL_S = 2.0


def worker_kill(ctx: Context) -> Result:
    """SIGKILL the worker KILLS times at spread points of the drain, starting
    a new one at once each time. The workers are static members: the new one
    comes back as the dead one's member and takes its partitions at once,
    instead of waiting out the dead member's session."""
    drain = Drain(ctx, "worker-kill", MESSAGES)
    drain.fill()
    worker = drain.start_worker()
    resumed: list[float] = []
    try:
        for i, at in enumerate(spread(MESSAGES, KILLS), start=1):
            if drain.wait(at, RESUME_TIMEOUT_S) is None:
                raise RuntimeError(f"stuck before kill {i}: {drain.progress()}")
            kill(worker)
            done = drain.distinct()
            worker = drain.start_worker()
            took = drain.wait(done + 1, RESUME_TIMEOUT_S)
            if took is None:
                raise RuntimeError(f"no progress after kill {i}: {drain.progress()}")
            resumed.append(round(took, 1))
            say(f"  kill {i}/{KILLS} at {done}/{MESSAGES} processed; "
                f"the new worker resumed after {took:.1f} s")
        finished = drain.wait(MESSAGES, FINISH_TIMEOUT_S)
        time.sleep(LATE_S)
    finally:
        kill(worker)
    verdict = drain.verdict()
    return {**verdict, "kills": len(resumed), "resumed_after_s": resumed,
            "ok": verdict["ok"] and finished is not None and len(resumed) == KILLS
            and max(resumed) <= RESUME_GOAL_S,
            "notes": f"{len(resumed)} SIGKILLs, each restart resumed after "
                     f"{min(resumed)}–{max(resumed)} s"}


def kafka_kill(ctx: Context) -> Result:
    """SIGKILL Kafka a third of the way through, start it again after
    OUTAGE_S; the same worker must carry on."""
    kafka = ctx.need_kafka()
    drain = Drain(ctx, "kafka-kill", KAFKA_KILL_MESSAGES)
    drain.fill()
    worker = drain.start_worker()
    try:
        if drain.wait(KAFKA_KILL_MESSAGES // 3, RESUME_TIMEOUT_S) is None:
            raise RuntimeError(f"the worker never got a third through: {drain.progress()}")
        kafka.kill()
        down = time.monotonic()
        killed_at = drain.distinct()
        say(f"  Kafka killed at {killed_at}/{KAFKA_KILL_MESSAGES} processed")
        time.sleep(OUTAGE_S)
        kafka.start()
        down_s = time.monotonic() - down
        say(f"  Kafka back after {down_s:.1f} s, at {drain.progress()}")
        finished = drain.wait(KAFKA_KILL_MESSAGES, FINISH_TIMEOUT_S)
        time.sleep(LATE_S)
    finally:
        kill(worker)
    verdict = drain.verdict()
    return {**verdict, "killed_at": killed_at, "kafka_down_s": round(down_s, 1),
            "finished_after_s": None if finished is None else round(finished, 1),
            "ok": verdict["ok"] and finished is not None,
            "notes": f"Kafka down {down_s:.1f} s from {killed_at} processed; "
                     f"drained {finished or 0:.1f} s after it answered"}


def send_down(ctx: Context) -> Result:
    """With Kafka down, how long ``actor.send()`` takes to fail, and with what."""
    kafka = ctx.need_kafka()
    drain = Drain(ctx, "send-down", 1)
    kafka.kill()
    try:
        result, _ = run_peer(OURS, "send-once", drain.params, timeout_s=120, log_file=ctx.log)
    finally:
        kafka.start()
    outcome = result["outcome"]
    return {"outcome": outcome, "seconds_to_fail": round(result["seconds"], 2),
            "ok": outcome != "sent",
            "notes": f"send failed after {result['seconds']:.1f} s: {outcome.split(':')[0]}"}


def scale(ctx: Context) -> Result:
    """One worker, three from a third of the way, one again (the two added
    ones stopped with SIGTERM, gracefully) from two thirds, once the added
    ones have taken a share of the work.

    Every partition must still hold work when the two are added: the group
    moves partitions, not work, so an added worker finds some only if the
    first one has been working through its partitions side by side. (When it
    drained them one after another, an added worker was at times given only
    drained ones and never took a share.)"""
    drain = Drain(ctx, "scale", MESSAGES, partitions=6, work_ms=SCALE_WORK_MS)
    drain.fill()
    first = drain.start_worker()
    added: list[subprocess.Popen[bytes]] = []

    def shares() -> list[int]:
        return [sum(drain.seen(p).values()) for p in (first, *added)]

    try:
        if drain.wait(MESSAGES // 3, RESUME_TIMEOUT_S) is None:
            raise RuntimeError(f"one worker never got a third through: {drain.progress()}")
        added = [drain.start_worker(), drain.start_worker()]
        left = drain.left_by_partition()
        say(f"  1 → 3 workers at {drain.progress()}; left by partition: {left}")

        def three_did_their_part() -> bool:
            return (drain.distinct() >= 2 * MESSAGES // 3
                    and all(len(drain.seen(p)) >= SHARE for p in added))

        if wait_until(three_did_their_part, RESUME_TIMEOUT_S, progress=drain.progress) is None:
            raise RuntimeError(f"the added workers never took a share: {drain.progress()}, "
                               f"by worker {'/'.join(map(str, shares()))}; left by partition "
                               f"at 1 → 3: {left}")
        say(f"  3 → 1 workers (SIGTERM to the two added) at {drain.progress()}")
        codes = terminate_all(added)
        say(f"  they exited with {codes}")
        finished = drain.wait(MESSAGES, FINISH_TIMEOUT_S)
        time.sleep(LATE_S)
        first_alive = first.poll() is None
    finally:
        for proc in (first, *added):
            kill(proc)
    verdict = drain.verdict()
    processed = shares()
    side_by_side = min(left) > 0
    return {**verdict, "processed_per_worker": processed, "stopped_exit_codes": codes,
            "first_alive": first_alive, "left_by_partition_at_scale_out": left,
            "ok": (verdict["ok"] and finished is not None and codes == [0, 0] and first_alive
                   and side_by_side),
            "notes": f"1→3→1 workers processed {'/'.join(map(str, processed))}; "
                     f"the two stopped exited {codes}"
                     + ("" if side_by_side else
                        f"; partitions drained one after another (left at 1→3: {left})")}
