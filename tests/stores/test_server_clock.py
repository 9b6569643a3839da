"""Leases on PostgreSQL run on the database server's clock: a worker whose
own clock runs a minute ahead neither takes over a claim still being pushed
nor pushes the notification a second time."""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import dramatiq
from stores_support import migrated
from support import wait_until

from willowe_tasks.dispatch import Notification, deliver
from willowe_tasks.services import build_services
from willowe_tasks.settings import settings_from
from willowe_tasks.testing import FakeAPNs, FakeFCM, fake_provider_env
from willowe_tasks.tokens import token_key

IOS_TOKEN = "5e" * 32
#: How far ahead the second worker's clock runs: more than the claim's lease.
AHEAD_S = 60.0
#: The push timeout; a claim's lease is three times it (30 s, under AHEAD_S).
PUSH_TIMEOUT_S = "10"
#: The fake answers this late, so the first worker's push is in flight for a while.
PROVIDER_LATENCY_S = 4.0
#: Bound on every wait, in seconds.
WAIT_S = 60.0


def _notification() -> Notification:
    return Notification(id="clock-skew-1", kind="match", user_id="skew-user",
                        title="У вас новый мэтч! 💘", body="Анна, 25", priority="high",
                        expires_at=time.time() + 3600)


def _worker_ahead(env: dict[str, str], go: Event, results: Queue) -> None:
    """A second worker whose clock is AHEAD_S fast: it delivers the same
    notification when told to, twice (a retry, then Kafka's redelivery)."""
    real_time = time.time
    time.time = lambda: real_time() + AHEAD_S  # type: ignore[assignment]
    services = build_services(settings_from(env))
    try:
        results.put("ready")
        for _ in range(2):
            if not go.wait(WAIT_S):
                return
            go.clear()
            try:
                deliver(_notification(), services)
                results.put("done")
            except dramatiq.Retry as retry:
                results.put(f"retry: {retry}")
    finally:
        services.close()


def test_a_worker_with_its_clock_a_minute_ahead_neither_steals_nor_pushes_twice(
    postgres_database_url: str, tmp_path: Path,
) -> None:
    url = migrated(postgres_database_url)
    with FakeAPNs(latency_s=PROVIDER_LATENCY_S) as apns, FakeFCM() as fcm:
        env = {**fake_provider_env(apns, fcm, tmp_path), "DATABASE_URL": url,
               "PUSH_TIMEOUT_S": PUSH_TIMEOUT_S}
        services = build_services(settings_from(env))
        services.registry.register("skew-user", "ios", IOS_TOKEN, apns.bundle_id)
        ctx = multiprocessing.get_context("spawn")
        go, results = ctx.Event(), ctx.Queue()
        ahead = ctx.Process(target=_worker_ahead, args=(env, go, results))
        ahead.start()
        try:
            assert results.get(timeout=WAIT_S) == "ready"
            # Given the first worker pushing (its claim's lease: 30 s of server time)
            first = threading.Thread(target=deliver, args=(_notification(), services))
            first.start()
            assert wait_until(lambda: services.ledger.counts()["in_flight"] == 1, WAIT_S)
            # When the worker whose clock is a minute ahead gets the same notification
            go.set()
            verdict = results.get(timeout=WAIT_S)
            # Then it sees a live claim: it neither treats it as expired (maybe
            # delivered) nor pushes; it will look again after the lease
            assert verdict.startswith("retry: ") and "ClaimedElsewhere" in verdict, verdict
            key = token_key(IOS_TOKEN)
            assert services.ledger.maybe_delivered("clock-skew-1") == set()
            first.join(WAIT_S)
            assert services.ledger.delivered("clock-skew-1") == {key}
            # and once the first push is confirmed, its retry skips the device
            go.set()
            assert results.get(timeout=WAIT_S) == "done"
            time.sleep(PROVIDER_LATENCY_S + 1)  # a second push would have landed by now
            assert [r.ok for r in apns.received] == [True]
        finally:
            go.set()
            ahead.join(WAIT_S)
            if ahead.is_alive():
                ahead.kill()
            with contextlib.suppress(Exception):
                services.close()
