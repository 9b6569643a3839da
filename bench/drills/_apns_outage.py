"""The APNs-outage drill: APNs answers 503 for OUTAGE_S while notifications
keep coming, the worker is restarted halfway through, and some notifications'
deadlines pass before APNs is back.

What must hold (issue #15, "Riding out provider outages"):

* no notification is dead-lettered: the circuit breaker defers iOS devices
  without spending retries;
* every notification still alive when APNs recovers is pushed exactly once
  to each device (Android at once, iOS after recovery);
* the short-lived ones are dropped as expired (the worker says so) and
  never pushed to iOS;
* Android's p99 send-to-push latency during the outage is at most
  ANDROID_P99_FACTOR times its baseline, taken just before.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from kafka import KafkaConsumer

from bench.drills._common import Context, Result, tally, wait_until
from bench.drills._push_rig import UNTIL_RECOVERED, PushRig
from bench.log import say
from bench.runner import terminate_all
from willowe_tasks.testing import ReceivedRequest

#: How long APNs answers 503, in seconds (the issue's five minutes).
OUTAGE_S = 300.0

#: Provider latency when nothing is wrong, in seconds.
LATENCY_S = 0.05

#: Waves of notifications sent before the outage and during it, each WAVE
#: notifications, WAVE_GAP_S apart: the latencies compared come from them.
WAVES = 8
WAVE = 20
WAVE_GAP_S = 1.0

#: Short-lived notifications sent as the outage begins, and how long they
#: live, in seconds: their deadlines pass long before APNs is back.
SHORT = 20
SHORT_TTL_S = 60

#: Android's p99 during the outage may be at most this many times its baseline.
ANDROID_P99_FACTOR = 2.0

#: Longest wait for a (re)started worker to push, in seconds.
RESUME_TIMEOUT_S = 90.0

#: Longest wait for every live pair to be pushed once APNs is back: a
#: deferred notification comes back within DEFER_MAX_S (30 s by default)
#: plus a probe interval.
FINISH_TIMEOUT_S = 180.0

#: Wait after settling, so a late duplicate would still be counted.
LATE_S = 3.0

#: The worker's log line for a notification dropped past its deadline.
_EXPIRED_LINE = re.compile(r"Dropping expired \S+ notification (\S+)\.")

#: The topics a notification of this drill could be dead-lettered to.
DEAD_LETTER_TOPICS = ("high-priority-notifications.XQ", "medium-priority-notifications.XQ")


def apns_outage(ctx: Context) -> Result:
    with PushRig(ctx, "apns-outage", latency_s=LATENCY_S, settings={}) as rig:
        worker = rig.start_worker()
        restarts = 0
        try:
            warm = rig.send(WAVE)
            if wait_until(lambda: all_pushed(rig, warm), RESUME_TIMEOUT_S) is None:
                raise RuntimeError(f"the worker never pushed: {rig.progress()}")
            baseline = waves(rig)
            if wait_until(lambda: all_pushed(rig, baseline), RESUME_TIMEOUT_S,
                          progress=rig.progress) is None:
                raise RuntimeError(f"the baseline was never all pushed: {rig.progress()}")
            accepted_before = sum(r.ok for r in rig.apns.received)
            rig.apns.fail(503, "ServiceUnavailable", times=UNTIL_RECOVERED)
            outage_began = time.monotonic()
            say(f"  APNs answers 503 from {rig.progress()}")
            short = rig.send(SHORT, kinds=(f"short:{SHORT_TTL_S}",))
            during = waves(rig)
            _sleep_until(outage_began + OUTAGE_S / 2, rig)
            worker = _restart(worker, rig)
            restarts += 1
            _sleep_until(outage_began + OUTAGE_S, rig)
            apns_ok_in_outage = sum(r.ok for r in rig.apns.received) - accepted_before
            rig.apns.heal()
            say(f"  APNs answers again at {rig.progress()}")
            alive = rig.expected() - _ios_pairs(rig, short)
            settled = wait_until(lambda: alive <= set(rig.pushes()), FINISH_TIMEOUT_S,
                                 progress=rig.progress)
            time.sleep(LATE_S)
        finally:
            codes = terminate_all([worker])
        expired = _expired_ids(rig.home / "worker.log")
        dead = dead_lettered(rig, set(rig.sent))
        counts = tally(alive, rig.pushes())
        base_p99 = p99(_android_latencies(rig, baseline))
        outage_p99 = p99(_android_latencies(rig, during))
    deferred_log = (rig.home / "worker.log").read_text(errors="replace").count("Deferred ")
    ok = (counts["lost"] == counts["duplicated"] == counts["unexpected"] == 0
          and settled is not None and not dead and set(short) <= expired
          and apns_ok_in_outage == 0 and outage_p99 <= ANDROID_P99_FACTOR * base_p99)
    return {**counts, "notifications": len(rig.sent), "dead_lettered": len(dead),
            "expired": len(expired & set(short)), "short_lived": len(short),
            "deferrals_logged": deferred_log, "worker_restarts": restarts,
            "apns_accepted_in_outage": apns_ok_in_outage,
            "worker_exit": codes[0],
            "settled_after_recovery_s": None if settled is None else round(settled, 1),
            "android_p99_baseline_s": round(base_p99, 3),
            "android_p99_outage_s": round(outage_p99, 3), "ok": ok,
            "notes": f"APNs 503 for {OUTAGE_S:.0f} s, worker restarted once: "
                     f"{len(dead)} dead-lettered, {len(expired & set(short))}/{len(short)} "
                     f"short-lived expired, all live pairs pushed {settled or 0:.1f} s after "
                     f"recovery; Android p99 {outage_p99 * 1000:.0f} ms during vs "
                     f"{base_p99 * 1000:.0f} ms before"}


def waves(rig: PushRig, *, extra: int = 0, extra_user: str | None = None) -> list[str]:
    """WAVES waves of WAVE notifications round the users (and ``extra`` more
    for ``extra_user`` in each), WAVE_GAP_S apart; their ids."""
    ids: list[str] = []
    for _ in range(WAVES):
        ids += rig.send(WAVE)
        if extra and extra_user is not None:
            ids += rig.send(extra, users=[extra_user])
        time.sleep(WAVE_GAP_S)
    return ids


def _restart(worker: subprocess.Popen[bytes], rig: PushRig) -> subprocess.Popen[bytes]:
    """Stop ``worker`` gracefully (a deploy) and start another."""
    say(f"  restarting the worker at {rig.progress()}")
    terminate_all([worker])
    return rig.start_worker()


def _sleep_until(at: float, rig: PushRig) -> None:
    wait_until(lambda: time.monotonic() >= at, at - time.monotonic() + 1, progress=rig.progress)


def all_pushed(rig: PushRig, ids: list[str]) -> bool:
    pushed = {n for n, _ in rig.pushes()}
    return set(ids) <= pushed


def _ios_pairs(rig: PushRig, ids: list[str]) -> set[tuple[str, str]]:
    """The (notification, iPhone) pairs of ``ids``."""
    return {(n, key) for n in ids for key in rig.phones[rig.sent[n]] if key in rig.iphones}


def _android_latencies(rig: PushRig, ids: list[str]) -> list[float]:
    """Seconds from send to FCM's acceptance, for each Android push of ``ids``."""
    return latencies(rig, rig.fcm.received, ids)


def latencies(rig: PushRig, received: list[ReceivedRequest], ids: list[str]) -> list[float]:
    """Seconds from send to the provider's acceptance, for each push of
    ``ids`` among ``received``."""
    wanted = set(ids)
    return [r.received_at - rig.sent_at[n] for r in received
            if r.ok and (n := str(r.data.get("notification_id"))) in wanted]


def p99(values: list[float]) -> float:
    if not values:
        return float("inf")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _expired_ids(log: Path) -> set[str]:
    return set(_EXPIRED_LINE.findall(log.read_text(errors="replace")))


def dead_lettered(rig: PushRig, ids: set[str]) -> set[str]:
    """Which of ``ids`` are on a dead-letter topic."""
    consumer = KafkaConsumer(*DEAD_LETTER_TOPICS, bootstrap_servers=rig.ctx.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000,
                             group_id=None)
    found = set()
    try:
        for record in consumer:
            try:
                message_id = json.loads(record.value).get("message_id")
            except ValueError:
                continue
            if message_id in ids:
                found.add(message_id)
    finally:
        consumer.close()
    return found
