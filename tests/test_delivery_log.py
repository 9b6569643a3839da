"""Delivery ledger: two-phase claims, crash handling, and cross-process races."""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier as BarrierType
from pathlib import Path

import pytest
from support import FakeClock

from willowe_tasks.ledger import DeliveryLedger, SQLiteLedger
from willowe_tasks.ledger import sqlite as ledger_sqlite
from willowe_tasks.tokens import token_key

LEASE_S = 30.0
#: Bound on every wait in this module, in seconds.
WAIT_S = 30.0
KEY_A = token_key("a1" * 32)
KEY_B = token_key("fcm:APA91b-device-b")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def ledger(tmp_path: Path, clock: FakeClock) -> Iterator[SQLiteLedger]:
    log = SQLiteLedger(tmp_path / "ledger" / "deliveries.sqlite3", clock=clock)
    yield log
    log.close()


def test_conforms_to_protocol(ledger: SQLiteLedger) -> None:
    typed: DeliveryLedger = ledger
    assert typed.delivered("n1") == set()


def test_token_key_is_a_prefixed_sha256() -> None:
    key = token_key("a1" * 32)
    assert key.startswith("sha256:") and len(key) == len("sha256:") + 64
    assert key == token_key("a1" * 32) != token_key("a1" * 31 + "a2")


def test_claim_then_deliver_blocks_every_later_claim(ledger: SQLiteLedger) -> None:
    assert ledger.claim("n1", KEY_A, lease_s=LEASE_S) is True
    assert ledger.claim("n1", KEY_A, lease_s=LEASE_S) is False  # live lease
    assert ledger.claim("n1", KEY_B, lease_s=LEASE_S) is True  # other device
    assert ledger.claim("n2", KEY_A, lease_s=LEASE_S) is True  # other notification

    ledger.mark_delivered("n1", KEY_A)

    assert ledger.delivered("n1") == {KEY_A}
    assert ledger.claim("n1", KEY_A, lease_s=LEASE_S) is False
    assert ledger.claim("n1", KEY_A, lease_s=LEASE_S, reclaim_expired=True) is False
    assert ledger.counts() == {"in_flight": 2, "maybe_delivered": 0, "delivered": 1}


def test_release_lets_a_retry_claim_again(ledger: SQLiteLedger) -> None:
    assert ledger.claim("n1", KEY_A, lease_s=LEASE_S)
    assert ledger.release("n1", KEY_A) is True
    assert ledger.delivered("n1") == set()
    assert ledger.claim("n1", KEY_A, lease_s=LEASE_S) is True


def test_release_after_delivery_is_ignored(ledger: SQLiteLedger) -> None:
    ledger.claim("n1", KEY_A, lease_s=LEASE_S)
    ledger.mark_delivered("n1", KEY_A)
    assert ledger.release("n1", KEY_A) is False
    assert ledger.delivered("n1") == {KEY_A}


def test_expired_claim_is_maybe_delivered_and_not_pushed_again(
    ledger: SQLiteLedger, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="willowe_tasks.ledger")
    assert ledger.claim("n1", KEY_A, lease_s=10)  # the worker then "crashes"
    clock.now += 9.9
    assert ledger.claim("n1", KEY_A, lease_s=10) is False  # still in flight
    assert ledger.maybe_delivered("n1") == set()

    clock.now += 0.2
    assert ledger.counts() == {"in_flight": 0, "maybe_delivered": 1, "delivered": 0}
    assert ledger.maybe_delivered("n1") == {KEY_A}
    assert ledger.claim("n1", KEY_A, lease_s=10) is False  # redelivery skips it
    assert ledger.claim("n1", KEY_A, lease_s=10) is False

    warnings = [r for r in caplog.records if "maybe delivered" in r.getMessage()]
    assert len(warnings) == 1  # reported once, not on every redelivery
    assert ledger.delivered("n1") == set()
    assert ledger.counts()["maybe_delivered"] == 1


def test_late_mark_delivered_resolves_a_maybe_delivered_pair(
    ledger: SQLiteLedger, clock: FakeClock
) -> None:
    ledger.claim("n1", KEY_A, lease_s=1)
    clock.now += 5  # the worker stalled past its lease...
    assert ledger.claim("n1", KEY_A, lease_s=1) is False
    ledger.mark_delivered("n1", KEY_A)  # ...then finished the push
    assert ledger.delivered("n1") == {KEY_A}
    assert ledger.maybe_delivered("n1") == set()


def test_late_release_of_own_expired_claim_allows_retry(
    ledger: SQLiteLedger, clock: FakeClock
) -> None:
    ledger.claim("n1", KEY_A, lease_s=1)
    clock.now += 5
    assert ledger.claim("n1", KEY_A, lease_s=1) is False
    # The slow worker learns its push was rejected: nothing reached the phone.
    assert ledger.release("n1", KEY_A) is True
    assert ledger.claim("n1", KEY_A, lease_s=1) is True


def test_caller_may_reclaim_expired_claims(ledger: SQLiteLedger, clock: FakeClock) -> None:
    ledger.claim("n1", KEY_A, lease_s=1, owner="worker-a")
    ledger.claim("n1", KEY_B, lease_s=1, owner="worker-a")
    clock.now += 5
    assert ledger.claim("n1", KEY_B, lease_s=1) is False  # KEY_B becomes uncertain

    assert ledger.claim("n1", KEY_A, lease_s=1, reclaim_expired=True, owner="worker-b")
    assert ledger.claim("n1", KEY_B, lease_s=1, reclaim_expired=True, owner="worker-b")
    # The original worker's late release must not cancel worker-b's claim.
    assert ledger.release("n1", KEY_A, owner="worker-a") is False
    assert ledger.claim("n1", KEY_A, lease_s=1) is False
    assert ledger.release("n1", KEY_A, owner="worker-b") is True


def test_mark_delivered_without_claim_is_recorded(ledger: SQLiteLedger) -> None:
    ledger.mark_delivered("n1", KEY_A)
    ledger.mark_delivered("n1", KEY_A)
    assert ledger.delivered("n1") == {KEY_A}
    assert ledger.claim("n1", KEY_A, lease_s=LEASE_S) is False


def test_raw_tokens_are_rejected_and_never_stored(ledger: SQLiteLedger) -> None:
    raw_ios = "a1" * 32  # hex like a digest: the prefix is what tells them apart
    for bad in (raw_ios, "fcm:APA91b-raw", KEY_A.upper(), KEY_A[:-1], ""):
        with pytest.raises(ValueError, match="^token_key:") as excinfo:
            ledger.claim("n1", bad, lease_s=LEASE_S)
        if bad:
            assert bad not in str(excinfo.value)

    ledger.claim("n1", token_key(raw_ios), lease_s=LEASE_S)
    ledger.mark_delivered("n1", token_key(raw_ios))
    stored = b"".join(p.read_bytes() for p in ledger.path.parent.iterdir())
    assert raw_ios.encode() not in stored


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"notification_id": ""}, "notification_id"),
        ({"notification_id": "x" * 201}, "notification_id"),
        ({"lease_s": 0}, "lease_s"),
        ({"lease_s": -1}, "lease_s"),
        ({"lease_s": float("nan")}, "lease_s"),
        ({"lease_s": float("inf")}, "lease_s"),
    ],
)
def test_claim_validation_names_the_field(
    ledger: SQLiteLedger, kwargs: dict[str, object], field: str
) -> None:
    args: dict[str, object] = {"notification_id": "n1", "token_key": KEY_A, "lease_s": LEASE_S}
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"^{field}:"):
        ledger.claim(**args)  # type: ignore[arg-type]


def test_prune_forgets_old_pairs_but_keeps_live_claims(
    ledger: SQLiteLedger, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_sqlite, "PRUNE_BATCH_ROWS", 3)  # exercise the batching loop
    old_keys = [token_key(f"old-{i}") for i in range(7)]
    for key in old_keys:
        ledger.claim("old", key, lease_s=LEASE_S)
        ledger.mark_delivered("old", key)
    ledger.claim("old", KEY_A, lease_s=10)  # expires: maybe delivered
    ledger.claim("long", KEY_A, lease_s=10_000)  # a very long live lease
    clock.now += 1_000
    ledger.claim("new", KEY_A, lease_s=LEASE_S)
    ledger.mark_delivered("new", KEY_A)

    assert ledger.prune(older_than_s=500) == 8
    assert ledger.delivered("old") == set()
    assert ledger.maybe_delivered("old") == set()
    assert ledger.delivered("new") == {KEY_A}
    assert ledger.claim("long", KEY_A, lease_s=LEASE_S) is False
    assert ledger.prune(older_than_s=500) == 0
    with pytest.raises(ValueError, match="^older_than_s:"):
        ledger.prune(older_than_s=-1)


def test_closed_ledger_refuses_use(tmp_path: Path) -> None:
    log = SQLiteLedger(tmp_path / "d.sqlite3")
    log.close()
    with pytest.raises(RuntimeError, match="closed"):
        log.claim("n1", KEY_A, lease_s=LEASE_S)


# -- across processes ---------------------------------------------------------

PAIRS = [(f"n{n}", token_key(f"device-{d}")) for n in range(10) for d in range(10)]


def _claim_all(log: SQLiteLedger, seed: int) -> list[tuple[str, str]]:
    """Claim every pair in a random order; deliver the ones won."""
    order = list(PAIRS)
    random.Random(seed).shuffle(order)
    won = []
    for notification_id, key in order:
        if log.claim(notification_id, key, lease_s=LEASE_S):
            won.append((notification_id, key))
            log.mark_delivered(notification_id, key)
    return won


def _claimer_process(path: str, seed: int, start: BarrierType, results: Queue) -> None:
    try:
        with SQLiteLedger(path) as log:
            log.delivered("warm-up")  # open the connection before the race starts
            start.wait()
            results.put(_claim_all(log, seed))
    except BaseException as exc:
        results.put(exc)  # fail the test at once instead of at the queue timeout
        raise


def test_exactly_one_claimer_wins_each_pair_across_threads_and_processes(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "deliveries.sqlite3")
    ctx = multiprocessing.get_context("spawn")
    thread_seeds = range(4)
    process_seeds = (101, 102)
    # Everyone waits for everyone: spawned processes take a while to import.
    start = ctx.Barrier(len(thread_seeds) + len(process_seeds), timeout=WAIT_S)
    results: Queue = ctx.Queue()
    processes = [
        ctx.Process(target=_claimer_process, args=(path, seed, start, results))
        for seed in process_seeds
    ]
    for process in processes:
        process.start()
    shared = SQLiteLedger(path)
    thread_wins: list[list[tuple[str, str]]] = []
    errors: list[BaseException] = []

    def run(seed: int) -> None:
        try:
            start.wait()
            thread_wins.append(_claim_all(shared, seed))
        except BaseException as exc:  # surfaced below; a thread can't fail the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in thread_seeds]
    for thread in threads:
        thread.start()
    process_wins = [results.get(timeout=WAIT_S) for _ in processes]
    assert not [r for r in process_wins if isinstance(r, BaseException)]
    for thread in threads:
        thread.join(WAIT_S)
    for process in processes:
        process.join(WAIT_S)

    assert not errors
    assert [p.exitcode for p in processes] == [0, 0]
    wins = Counter(pair for won in thread_wins + process_wins for pair in won)
    assert set(wins) == set(PAIRS)
    assert set(wins.values()) == {1}  # every pair pushed exactly once
    assert any(process_wins)  # the other processes really took part
    assert shared.counts() == {"in_flight": 0, "maybe_delivered": 0, "delivered": len(PAIRS)}
    shared.close()


def _claim_and_crash(path: str, lease_s: float) -> None:
    log = SQLiteLedger(path)
    assert log.claim("n-crash", KEY_A, lease_s=lease_s)
    # "Push succeeded", then the process dies before mark_delivered.
    os._exit(3)


def test_worker_crash_between_push_and_mark_is_not_pushed_again(tmp_path: Path) -> None:
    path = str(tmp_path / "deliveries.sqlite3")
    lease_s = 0.3
    ctx = multiprocessing.get_context("spawn")
    crasher = ctx.Process(target=_claim_and_crash, args=(path, lease_s))
    crasher.start()
    crasher.join(WAIT_S)
    assert crasher.exitcode == 3

    with SQLiteLedger(path) as log:
        assert log.claim("n-crash", KEY_A, lease_s=LEASE_S) is False  # lease still live
        time.sleep(lease_s)
        assert log.claim("n-crash", KEY_A, lease_s=LEASE_S) is False  # redelivery: skipped
        assert log.maybe_delivered("n-crash") == {KEY_A}
        assert log.claim("n-crash", KEY_A, lease_s=LEASE_S, reclaim_expired=True) is True


def test_locked_database_raises_instead_of_answering(tmp_path: Path) -> None:
    path = tmp_path / "deliveries.sqlite3"
    with SQLiteLedger(path, busy_timeout_s=0.05) as log:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process mid-claim
        # Neither True nor False would be safe here: the caller must retry later.
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            log.claim("n1", KEY_A, lease_s=LEASE_S)
        other.execute("COMMIT")
        other.close()

        assert log.claim("n1", KEY_A, lease_s=LEASE_S) is True
