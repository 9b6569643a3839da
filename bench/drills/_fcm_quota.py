"""The FCM-quota drill: two worker hosts of two processes each share one FCM
project's token bucket in PostgreSQL (QUOTA a minute, BURST on top), and
get more Android notifications than a minute of it allows.

The fake FCM is in quota mode at QUOTA + BURST a minute, so a breach shows
as its 429 ``QUOTA_EXCEEDED``. What must hold (issue #15, "Quotas that hold
across the fleet"): FCM sees at most QUOTA + BURST messages in any 60 s, it
never answers QUOTA_EXCEEDED, no notification reaches a dead-letter topic,
and every pair is pushed exactly once in the end.
"""

from __future__ import annotations

import time

from bench.drills._apns_outage import LATE_S, LATENCY_S, dead_lettered
from bench.drills._common import Context, Result, wait_until
from bench.drills._push_rig import PushRig
from bench.drills._two_hosts import private_postgres
from bench.log import say
from bench.runner import terminate_all

#: The bucket: messages a minute, and what may go beyond in any 60 s.
QUOTA = 600
BURST = 60

#: The window FCM's quota counts over, in seconds.
MINUTE_S = 60.0

#: Notifications sent (one Android phone each): half a minute's more than
#: the quota, so the bucket is empty for over a minute.
NOTIFICATIONS = 900

#: Worker hosts, and processes on each.
HOSTS = ("host-a", "host-b")
PROCESSES = 2

#: Longest wait for every pair to be pushed, in seconds: NOTIFICATIONS at
#: QUOTA a minute take 90 s, deferrals up to DEFER_MAX_S (30 s) on top.
FINISH_TIMEOUT_S = 400.0


def fcm_quota(ctx: Context) -> Result:
    with private_postgres(ctx.workdir / "postgres") as url:
        settings = {"DATABASE_URL": url, "FCM_QUOTA_PER_MINUTE": str(QUOTA),
                    "FCM_QUOTA_BURST": str(BURST)}
        with PushRig(ctx, "fcm-quota", latency_s=LATENCY_S, settings=settings) as rig:
            rig.fcm.enforce_quota(QUOTA + BURST, MINUTE_S)
            rig.send(NOTIFICATIONS)
            workers = [rig.start_worker(rig.host(name), processes=PROCESSES) for name in HOSTS]
            try:
                settled = wait_until(rig.settled, FINISH_TIMEOUT_S, progress=rig.progress)
                time.sleep(LATE_S)
            finally:
                codes = terminate_all(workers)
            verdict = rig.verdict()
            accepted = sorted(r.received_at for r in rig.fcm.received if r.ok)
            over_quota = sum(1 for r in rig.fcm.received if r.reason == "QUOTA_EXCEEDED")
            dead = dead_lettered(rig, set(rig.sent))
    busiest = busiest_window(accepted, MINUTE_S)
    span_s = accepted[-1] - accepted[0] if accepted else 0.0
    say(f"  FCM took {len(accepted)} messages over {span_s:.0f} s, {busiest} in its busiest"
        f" minute")
    ok = (verdict["ok"] and settled is not None and busiest <= QUOTA + BURST
          and over_quota == 0 and not dead)
    return {**verdict, "worker_exits": codes, "fcm_accepted": len(accepted),
            "busiest_minute": busiest, "quota_exceeded_answers": over_quota,
            "dead_lettered": len(dead), "fcm_span_s": round(span_s, 1), "ok": ok,
            "notes": f"{len(HOSTS)} hosts × {PROCESSES} processes on a bucket of {QUOTA}/min "
                     f"+ {BURST}: busiest 60 s {busiest} (≤ {QUOTA + BURST}), "
                     f"{over_quota} QUOTA_EXCEEDED, {len(dead)} dead-lettered, "
                     f"{len(accepted)} FCM pushes over {span_s:.0f} s"}


def busiest_window(times: list[float], window_s: float) -> int:
    """The most of the sorted ``times`` inside any ``window_s``-long window."""
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= window_s:
            first += 1
        most = max(most, last - first + 1)
    return most
