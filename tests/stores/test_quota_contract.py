"""The shared token buckets, on SQLite files and on PostgreSQL: what a
store hands out, alone and to many takers at once, and one process's share
of it (QuotaGate)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stores_support import BACKENDS, migrated

from willowe_tasks.database import PostgresDatabase
from willowe_tasks.database_url import DatabaseUrl
from willowe_tasks.quota import Bucket, QuotaGate, QuotaStore, SQLiteQuotaStore, fleet_bucket
from willowe_tasks.quota.gate import HOLD_S, TRIP_S, min_burst
from willowe_tasks.quota.postgres import PostgresQuotaStore

#: Takers hammering one bucket at once in the concurrency test.
TAKERS = 4

#: How long they hammer it, in seconds.
HAMMER_S = 1.5


class Opener:
    def __init__(self, backend: str, location: str) -> None:
        self.backend = backend
        self.location = location
        self.opened: list[QuotaStore] = []

    def __call__(self) -> QuotaStore:
        store: QuotaStore
        if self.backend == "sqlite":
            store = SQLiteQuotaStore(Path(self.location) / "quota.sqlite3")
        else:
            store = PostgresQuotaStore(PostgresDatabase(DatabaseUrl.parse(self.location)))
        self.opened.append(store)
        return store


@pytest.fixture(params=BACKENDS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    if request.param == "sqlite":
        opener = Opener("sqlite", str(tmp_path))
    else:
        opener = Opener("postgres", migrated(request.getfixturevalue("postgres_database_url")))
    yield opener
    for store in opener.opened:
        store.close()


def test_a_new_bucket_is_full_then_empty_then_refills(open_store: Opener) -> None:
    store = open_store()
    bucket = Bucket("fcm:test", rate_per_s=100.0, capacity=10)
    assert store.take(bucket, 4).granted == 4
    assert store.take(bucket, 100).granted in (6, 7)  # whatever refilled meanwhile
    empty = store.take(bucket, 1000)
    if empty.granted == 0:
        assert 0 < empty.wait_s <= 1 / bucket.rate_per_s
    time.sleep(0.3)  # time only moves on: at least 30 tokens' worth, up to the capacity
    assert store.take(bucket, 100).granted == 10


def test_buckets_are_kept_apart_by_name(open_store: Opener) -> None:
    store = open_store()
    slow = dict(rate_per_s=0.001, capacity=3)
    assert store.take(Bucket("fcm:a", **slow), 10).granted == 3
    assert store.take(Bucket("fcm:b", **slow), 10).granted == 3
    assert store.take(Bucket("fcm:a", **slow), 10).granted == 0


def test_many_takers_at_once_never_get_more_than_the_bucket_makes(open_store: Opener) -> None:
    bucket = Bucket("fcm:shared", rate_per_s=20.0, capacity=15)
    stores = [open_store() for _ in range(TAKERS)]
    granted = [0] * TAKERS
    errors: list[BaseException] = []
    started = time.monotonic()

    def hammer(n: int) -> None:
        try:
            while time.monotonic() - started < HAMMER_S:
                granted[n] += stores[n].take(bucket, 3).granted
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            errors.append(e)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(TAKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=HAMMER_S + 30)
    elapsed = time.monotonic() - started
    assert not errors
    # Together they got some, and no more than capacity + rate × time. (Not
    # "each got some": the bucket promises no fairness, and on a loaded
    # machine one taker can lose every race for SQLite's lock.)
    assert sum(granted) > 0
    assert sum(granted) <= bucket.capacity + bucket.rate_per_s * elapsed + 1


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_a_gate_takes_growing_batches_and_lets_unspent_tokens_go(tmp_path: Path) -> None:
    clock = Clock()
    store = SQLiteQuotaStore(tmp_path / "quota.sqlite3", clock=clock)
    calls: list[int] = []
    real_take = store.take

    def counting_take(bucket: Bucket, want: int):  # type: ignore[no-untyped-def]
        calls.append(want)
        return real_take(bucket, want)

    store.take = counting_take  # type: ignore[method-assign]
    gate = QuotaGate(store, Bucket("fcm:x", rate_per_s=1000, capacity=1000), max_batch=8,
                     clock=clock, sleep=clock.sleep)
    for _ in range(14):
        assert gate.take() == 0.0
    assert calls == [1, 2, 4, 8]  # 14 pushes, four round trips, one token left
    clock.now += HOLD_S  # the held token expires unspent: the next batch is smaller
    assert gate.take() == 0.0
    assert calls[-1] == 4
    store.close()


def test_a_gate_waits_for_a_token_only_as_long_as_it_may(tmp_path: Path) -> None:
    clock = Clock()
    store = SQLiteQuotaStore(tmp_path / "quota.sqlite3", clock=clock)
    gate = QuotaGate(store, Bucket("fcm:y", rate_per_s=2.0, capacity=1), clock=clock,
                     sleep=clock.sleep)
    assert gate.take() == 0.0
    assert gate.take() == pytest.approx(0.5)  # empty: how long until the next
    assert gate.take(max_wait_s=1.0) == 0.0  # waited for it
    gate.hold_off(10.0)  # the provider said the quota is spent
    assert gate.take() == pytest.approx(10.0)
    store.close()


def test_the_fleet_bucket_keeps_held_tokens_inside_the_burst() -> None:
    bucket = fleet_bucket("fcm:p", per_minute=600, burst=50)
    assert bucket.rate_per_s == 10.0
    # capacity + what is held or on its way + a minute's refill = per_minute + burst
    assert bucket.capacity + bucket.rate_per_s * (HOLD_S + TRIP_S + 60) <= 650
    assert min_burst(600) == 11
    with pytest.raises(ValueError, match="burst must be at least 11"):
        fleet_bucket("fcm:p", per_minute=600, burst=10)


def test_a_quota_store_needs_a_file_everyone_can_share() -> None:
    with pytest.raises(ValueError, match="path"):
        SQLiteQuotaStore(":memory:")
