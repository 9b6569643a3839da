"""Housekeeping: the ledger and the registry are trimmed on a schedule."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from support import FakeClock, wait_until

from willowe_tasks.housekeeping import Housekeeping, HousekeepingMiddleware
from willowe_tasks.ledger import SQLiteLedger
from willowe_tasks.registry import SQLiteDeviceRegistry
from willowe_tasks.tokens import token_key

#: Bound on every wait here, in seconds.
WAIT_S = 10.0
DAY_S = 86_400


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stores(tmp_path: Path, clock: FakeClock) -> Iterator[tuple[SQLiteLedger,
                                                          SQLiteDeviceRegistry]]:
    ledger = SQLiteLedger(tmp_path / "ledger.sqlite3", clock=clock)
    registry = SQLiteDeviceRegistry(tmp_path / "devices.sqlite3")
    yield ledger, registry
    ledger.close()
    registry.close()


def test_old_ledger_pairs_and_long_invalid_devices_are_trimmed_on_schedule(
    stores: tuple[SQLiteLedger, SQLiteDeviceRegistry], clock: FakeClock
) -> None:
    ledger, registry = stores
    # Given a pair delivered 40 days ago, one delivered today, and a device
    # marked invalid 100 days ago beside one marked yesterday
    clock.now -= 40 * DAY_S
    old = token_key("old-device")
    assert ledger.claim("n-old", old, lease_s=30)
    ledger.mark_delivered("n-old", old)
    clock.now += 40 * DAY_S
    new = token_key("new-device")
    assert ledger.claim("n-new", new, lease_s=30)
    ledger.mark_delivered("n-new", new)
    registry.register("u1", "ios", "a1" * 32, "app")
    registry.register("u2", "ios", "b2" * 32, "app")
    registry.mark_invalid("a1" * 32, "apns:Unregistered", at=time.time() - 100 * DAY_S)
    registry.mark_invalid("b2" * 32, "apns:Unregistered", at=time.time() - DAY_S)

    # When housekeeping runs every 0.1 s with 31 and 90 days of retention
    keeper = Housekeeping(
        lambda: [("ledger", lambda: ledger.prune(31 * DAY_S)),
                 ("devices", lambda: registry.purge_invalid(90 * DAY_S))],
        interval_s=0.1, first_delay_s=0.0)
    keeper.start()
    try:
        # Then the old ones go and the recent ones stay
        assert wait_until(lambda: ledger.delivered("n-old") == set()
                          and registry.invalid_counts() == {"apns:Unregistered": 1}, WAIT_S)
    finally:
        keeper.stop()
    assert ledger.delivered("n-new") == {new}


def test_a_failing_job_does_not_stop_the_others(
    stores: tuple[SQLiteLedger, SQLiteDeviceRegistry],
) -> None:
    ledger, _ = stores

    def broken() -> int:
        raise RuntimeError("disk on fire")

    keeper = Housekeeping(lambda: [("broken", broken), ("ledger", lambda: ledger.prune(1))],
                          interval_s=60)
    assert keeper.run_once() == {"ledger": 0}


def test_each_worker_runs_housekeeping_while_it_is_up() -> None:
    runs: list[float] = []

    def count() -> int:
        runs.append(time.time())
        return 0

    broker = StubBroker()
    broker.add_middleware(HousekeepingMiddleware(
        lambda: Housekeeping(lambda: [("count", count)], interval_s=0.05, first_delay_s=0.0)))
    worker = dramatiq.Worker(broker, worker_threads=1)
    worker.start()
    try:
        assert wait_until(lambda: len(runs) >= 3, WAIT_S)
    finally:
        worker.stop()
    stopped = len(runs)
    time.sleep(0.3)
    assert len(runs) <= stopped + 1  # at most one run was already under way
