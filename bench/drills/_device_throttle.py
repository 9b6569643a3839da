"""The device-throttle drill: APNs answers 429 ``TooManyRequests`` to every
push for one iPhone (Apple throttles a device token that gets too many),
while that user keeps getting notifications among everyone else's.

What must hold (issue #15, "Quotas that hold across the fleet"): the
throttled device backs off (far fewer attempts than notifications for it),
the other devices' p99 send-to-push latency stays within P99_FACTOR of the
baseline taken just before (the same waves, the same extra notifications for
that user, no 429), and once APNs lets the device be, every pair is pushed
exactly once.
"""

from __future__ import annotations

import time

from bench.drills._apns_outage import (
    FINISH_TIMEOUT_S,
    LATE_S,
    LATENCY_S,
    RESUME_TIMEOUT_S,
    WAVE,
    all_pushed,
    latencies,
    p99,
    waves,
)
from bench.drills._common import Context, Result, wait_until
from bench.drills._push_rig import UNTIL_RECOVERED, PushRig
from bench.log import say
from bench.runner import terminate_all
from willowe_tasks.tokens import token_key

#: Extra notifications for the throttled device's user in each wave.
HOT_PER_WAVE = 3

#: The other devices' p99 while one is throttled may be at most this many
#: times the baseline's.
P99_FACTOR = 1.2

#: The throttled device's backoff: short, so the drill ends soon after.
SETTINGS = {"DEVICE_BACKOFF_INITIAL_S": "2", "DEVICE_BACKOFF_MAX_S": "8"}


def device_throttle(ctx: Context) -> Result:
    with PushRig(ctx, "device-throttle", latency_s=LATENCY_S, settings=SETTINGS) as rig:
        hot_user = next(iter(rig.phones))
        hot_token = rig.iphone_tokens[hot_user][0]
        hot_key = token_key(hot_token)
        worker = rig.start_worker()
        try:
            warm = rig.send(WAVE)
            if wait_until(lambda: all_pushed(rig, warm), RESUME_TIMEOUT_S) is None:
                raise RuntimeError(f"the worker never pushed: {rig.progress()}")
            baseline = waves(rig, extra=HOT_PER_WAVE, extra_user=hot_user)
            if wait_until(lambda: all_pushed(rig, baseline), RESUME_TIMEOUT_S,
                          progress=rig.progress) is None:
                raise RuntimeError(f"the baseline was never all pushed: {rig.progress()}")
            rig.apns.fail(429, "TooManyRequests", token=hot_token, times=UNTIL_RECOVERED)
            say(f"  APNs throttles one iPhone from {rig.progress()}")
            throttled = waves(rig, extra=HOT_PER_WAVE, extra_user=hot_user)
            others = {pair for pair in rig.expected() if pair[1] != hot_key}
            wait_until(lambda: others <= set(rig.pushes()), FINISH_TIMEOUT_S,
                       progress=rig.progress)
            attempts = sum(1 for r in rig.apns.received if r.token == hot_token and not r.ok)
            rig.apns.heal()
            say(f"  APNs lets the iPhone be at {rig.progress()}")
            settled = wait_until(rig.settled, FINISH_TIMEOUT_S, progress=rig.progress)
            time.sleep(LATE_S)
        finally:
            codes = terminate_all([worker])
        verdict = rig.verdict()
        received = [r for r in rig.apns.received + rig.fcm.received if r.token != hot_token]
        base_p99 = p99(latencies(rig, received, baseline))
        throttled_p99 = p99(latencies(rig, received, throttled))
    hot_notifications = sum(1 for n in throttled if rig.sent[n] == hot_user)
    ok = (verdict["ok"] and settled is not None and 0 < attempts < hot_notifications
          and throttled_p99 <= P99_FACTOR * base_p99)
    return {**verdict, "worker_exit": codes[0], "throttled_attempts": attempts,
            "throttled_notifications": hot_notifications,
            "others_p99_baseline_s": round(base_p99, 3),
            "others_p99_throttled_s": round(throttled_p99, 3), "ok": ok,
            "notes": f"one iPhone answered 429 for {hot_notifications} notifications: "
                     f"{attempts} attempts; the others' p99 {throttled_p99 * 1000:.0f} ms vs "
                     f"{base_p99 * 1000:.0f} ms before (≤ {P99_FACTOR}×)"}
