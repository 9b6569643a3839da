"""Push-level drills: the real notification worker (``dramatiq
willowe_tasks``) delivers to the fakes of APNs and FCM while they fail or
while it is killed. Duplicated pushes must be 0 (the ledger's promise:
at most one push per notification and device), and so must truly lost ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.drills._common import Context, Result, spread, wait_until
from bench.drills._push_rig import PushRig
from bench.log import say
from bench.runner import kill, terminate_all

#: Provider latency when nothing is wrong, in seconds.
LATENCY_S = 0.05

#: Notifications per drill (about 2.25 phones each).
NOTIFICATIONS = 300

#: How long the providers fail in the provider-outage drill, in seconds.
OUTAGE_S = 8.0

#: The Retry-After FCM answers with during the outage, in seconds.
RETRY_AFTER_S = 2

#: Retry settings for the provider-outage drill. With the defaults (100 ms,
#: 8 retries) a notification outlives 12.75 s of failures at the least (the
#: backoff's jitter halves it at worst); 50 ms and 12 retries outlive 100 s,
#: while the wait after the providers recover stays under the outage's length.
OUTAGE_RETRY = {"KAFKA_RETRY_INITIAL": "50", "KAFKA_RETRY_RETRIES": "12"}

#: The slow-provider drill: for SLOW_S the providers answer after
#: SLOW_LATENCY_S, past the worker's push timeout. The push client bounds a
#: stall (no byte moving) by the push timeout in whole seconds (libcurl's
#: LOW_SPEED_TIME) and a whole request by 3× it: an answer 3 s away is past
#: both at a 1 s timeout (at 0.5 s and 1 s away, it came within the 1.5 s
#: overall bound and nothing timed out).
SLOW_S = 5.0
SLOW_LATENCY_S = 3.0
SLOW_PUSH_TIMEOUT_S = "1"

#: SIGKILLs in the push-kill drill.
PUSH_KILLS = 6

#: Provider latency in the push-kill drill, in seconds: each push takes this
#: long, so a kill finds pushes in flight.
KILL_LATENCY_S = 0.2

#: Push timeout in the push-kill drill: the ledger's lease is 3× that, so a
#: claim left by a killed worker expires within seconds.
KILL_PUSH_TIMEOUT_S = "2"

#: Longest wait for a (re)started worker to push again, in seconds: dramatiq
#: starts in a few seconds, and a killed member holds its partitions for the
#: group's 10 s session timeout.
RESUME_TIMEOUT_S = 90.0

#: Longest wait for every pair to be settled once the faults are over, in seconds.
FINISH_TIMEOUT_S = 180.0

#: Wait after settling, so a late duplicate would still be counted.
LATE_S = 3.0


def provider_outage(ctx: Context) -> Result:
    """APNs answers 500 and FCM 429 (with Retry-After) for OUTAGE_S once a
    fifth of the pushes are done, then both recover."""
    with PushRig(ctx, "provider-outage", latency_s=LATENCY_S, settings=OUTAGE_RETRY) as rig:
        settled, code = _through_a_fault(
            rig, f"APNs 500, FCM 429 (Retry-After {RETRY_AFTER_S} s)", OUTAGE_S,
            begin=lambda: rig.break_providers(RETRY_AFTER_S), end=rig.recover)
        verdict = rig.verdict()
    refused = verdict["refused"]
    return {**verdict, "settled_after_recovery_s": None if settled is None else round(settled, 1),
            "worker_exit": code,
            "ok": (verdict["ok"] and settled is not None and refused.get(500, 0) > 0
                   and refused.get(429, 0) > 0),
            "notes": f"{verdict['notifications']} notifications; {refused.get(500, 0)} APNs 500s "
                     f"and {refused.get(429, 0)} FCM 429s over {OUTAGE_S:.0f} s; all settled "
                     f"{settled or 0:.1f} s after recovery; "
                     f"{verdict['maybe_delivered_skipped']} maybe-delivered"}


def slow_provider(ctx: Context) -> Result:
    """Both providers answer after SLOW_LATENCY_S, past the push timeout, for
    SLOW_S once a fifth of the pushes are done: every push then times out at
    the worker, yet the provider accepts it. None may be pushed again."""
    settings = {"PUSH_TIMEOUT_S": SLOW_PUSH_TIMEOUT_S}
    with PushRig(ctx, "slow-provider", latency_s=LATENCY_S, settings=settings) as rig:

        def set_latency(seconds: float) -> None:
            rig.apns.latency_s = rig.fcm.latency_s = seconds

        settled, code = _through_a_fault(
            rig, f"answers after {SLOW_LATENCY_S} s (push timeout {SLOW_PUSH_TIMEOUT_S} s)",
            SLOW_S, begin=lambda: set_latency(SLOW_LATENCY_S), end=lambda: set_latency(LATENCY_S))
        verdict = rig.verdict()
    maybe = verdict["maybe_delivered_skipped"] + verdict["maybe_delivered_but_pushed"]
    return {**verdict, "worker_exit": code,
            "ok": verdict["ok"] and settled is not None and maybe > 0,
            "notes": f"{maybe} pushes timed out at the worker ({SLOW_S:.0f} s at "
                     f"{SLOW_LATENCY_S} s latency), {verdict['maybe_delivered_but_pushed']} of "
                     f"them accepted by the provider; {verdict['duplicated']} pushed again"}


def _through_a_fault(rig: PushRig, fault: str, stretch_s: float, *,
                     begin: Callable[[], None], end: Callable[[], None]) -> tuple[float | None,
                                                                                 int | None]:
    """Send the notifications and start the worker; once a fifth of the pushes
    are done, ``begin()`` the fault, ``end()`` it ``stretch_s`` later. Returns
    the seconds until every pair was settled after that (None: timed out) and
    the worker's exit code."""
    rig.send(NOTIFICATIONS)
    expected = len(rig.expected())
    worker = rig.start_worker()
    try:
        if rig.wait_pushed(expected // 5, RESUME_TIMEOUT_S) is None:
            raise RuntimeError(f"the worker never pushed a fifth: {rig.progress()}")
        begin()
        say(f"  providers: {fault}, from {rig.progress()}")
        wait_until(lambda: False, stretch_s, progress=rig.progress)  # the fault's stretch
        end()
        say(f"  providers recovered at {rig.progress()}")
        settled = wait_until(rig.settled, FINISH_TIMEOUT_S, progress=rig.progress)
        time.sleep(LATE_S)
    finally:
        codes = terminate_all([worker])
    return settled, codes[0]


def push_kill(ctx: Context) -> Result:
    """SIGKILL the notification worker PUSH_KILLS times at spread points of
    the deliveries, while pushes are in flight, restarting it at once."""
    settings = {"PUSH_TIMEOUT_S": KILL_PUSH_TIMEOUT_S}
    with PushRig(ctx, "push-kill", latency_s=KILL_LATENCY_S, settings=settings) as rig:
        rig.send(NOTIFICATIONS)
        expected = len(rig.expected())
        worker = rig.start_worker()
        left_claims: list[int] = []
        try:
            for i, at in enumerate(spread(expected, PUSH_KILLS), start=1):
                if rig.wait_pushed(at, RESUME_TIMEOUT_S) is None:
                    raise RuntimeError(f"stuck before kill {i}: {rig.progress()}")
                kill(worker)
                left_claims.append(rig.in_flight())
                say(f"  kill {i}/{PUSH_KILLS} at {rig.progress()}; "
                    f"{left_claims[-1]} claims left in flight")
                worker = rig.start_worker()
            settled = wait_until(rig.settled, FINISH_TIMEOUT_S, progress=rig.progress)
            time.sleep(LATE_S)
        finally:
            codes = terminate_all([worker])
        verdict = rig.verdict()
    return {**verdict, "kills": len(left_claims), "claims_left_per_kill": left_claims,
            "worker_exit": codes[0],
            "ok": verdict["ok"] and settled is not None and len(left_claims) == PUSH_KILLS,
            "notes": f"{len(left_claims)} SIGKILLs with {sum(left_claims)} claims in flight; "
                     f"{verdict['maybe_delivered_skipped']} maybe-delivered pairs skipped by "
                     f"design, {verdict['maybe_delivered_but_pushed']} of the claims had "
                     f"been pushed"}
