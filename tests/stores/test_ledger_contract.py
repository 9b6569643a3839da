"""The delivery ledger's contract, on SQLite and on PostgreSQL alike:
two-phase claims, leases, maybe-delivered pairs, pruning, cross-process races.

Time: SQLite's ledger tells it by a clock the test moves; PostgreSQL's by the
server, so there the test moves every stored time back instead
(:meth:`Store.elapse`). Margins are seconds wide, so a slow machine can't
turn a live lease into an expired one between two lines.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import threading
import time
from collections import Counter
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier as BarrierType

import pytest
from stores_support import Store, open_ledger

from willowe_tasks.ledger import DeliveryLedger
from willowe_tasks.ledger import postgres as ledger_postgres
from willowe_tasks.ledger import sqlite as ledger_sqlite
from willowe_tasks.tokens import token_key

LEASE_S = 30.0
#: Bound on every wait in this module, in seconds.
WAIT_S = 60.0
KEY_A = token_key("a1" * 32)
KEY_B = token_key("fcm:APA91b-device-b")


def test_token_key_is_a_prefixed_sha256() -> None:
    key = token_key("a1" * 32)
    assert key.startswith("sha256:") and len(key) == len("sha256:") + 64
    assert key == token_key("a1" * 32) != token_key("a1" * 31 + "a2")


def test_claim_then_deliver_blocks_every_later_claim(ledger: DeliveryLedger) -> None:
    assert ledger.claim("n1", KEY_A, lease_s=LEASE_S) is True
    assert ledger.claim("n1", KEY_A, lease_s=LEASE_S) is False  # live lease
    assert ledger.claim("n1", KEY_B, lease_s=LEASE_S) is True  # other device
    assert ledger.claim("n2", KEY_A, lease_s=LEASE_S) is True  # other notification

    ledger.mark_delivered("n1", KEY_A)

    assert ledger.delivered("n1") == {KEY_A}
    assert ledger.claim("n1", KEY_A, lease_s=LEASE_S) is False
    assert ledger.claim("n1", KEY_A, lease_s=LEASE_S, reclaim_expired=True) is False
    assert ledger.counts() == {"in_flight": 2, "maybe_delivered": 0, "delivered": 1}


def test_release_lets_a_retry_claim_again(ledger: DeliveryLedger) -> None:
    assert ledger.claim("n1", KEY_A, lease_s=LEASE_S)
    assert ledger.release("n1", KEY_A) is True
    assert ledger.delivered("n1") == set()
    assert ledger.claim("n1", KEY_A, lease_s=LEASE_S) is True


def test_release_after_delivery_is_ignored(ledger: DeliveryLedger) -> None:
    ledger.claim("n1", KEY_A, lease_s=LEASE_S)
    ledger.mark_delivered("n1", KEY_A)
    assert ledger.release("n1", KEY_A) is False
    assert ledger.delivered("n1") == {KEY_A}


def test_only_the_claimant_may_release(ledger: DeliveryLedger) -> None:
    assert ledger.claim("n1", KEY_A, lease_s=LEASE_S, owner="host-a:1:1")
    assert ledger.release("n1", KEY_A, owner="host-b:1:1") is False
    assert ledger.claim("n1", KEY_A, lease_s=LEASE_S) is False  # still held
    assert ledger.release("n1", KEY_A, owner="host-a:1:1") is True


def test_expired_claim_is_maybe_delivered_and_not_pushed_again(
    store: Store, ledger: DeliveryLedger, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="willowe_tasks.ledger")
    assert ledger.claim("n1", KEY_A, lease_s=20)  # the worker then "crashes"
    store.elapse(10)
    assert ledger.claim("n1", KEY_A, lease_s=20) is False  # still in flight
    assert ledger.maybe_delivered("n1") == set()
    assert ledger.counts() == {"in_flight": 1, "maybe_delivered": 0, "delivered": 0}

    store.elapse(15)
    assert ledger.counts() == {"in_flight": 0, "maybe_delivered": 1, "delivered": 0}
    assert ledger.maybe_delivered("n1") == {KEY_A}
    assert ledger.claim("n1", KEY_A, lease_s=20) is False  # redelivery skips it
    assert ledger.claim("n1", KEY_A, lease_s=20) is False

    warnings = [r for r in caplog.records if "maybe delivered" in r.getMessage()]
    assert len(warnings) == 1  # reported once, not on every redelivery
    assert ledger.delivered("n1") == set()
    assert ledger.counts()["maybe_delivered"] == 1


def test_late_mark_delivered_resolves_a_maybe_delivered_pair(
    store: Store, ledger: DeliveryLedger
) -> None:
    ledger.claim("n1", KEY_A, lease_s=5)
    store.elapse(20)  # the worker stalled past its lease...
    assert ledger.claim("n1", KEY_A, lease_s=5) is False
    ledger.mark_delivered("n1", KEY_A)  # ...then finished the push
    assert ledger.delivered("n1") == {KEY_A}
    assert ledger.maybe_delivered("n1") == set()


def test_late_release_of_own_expired_claim_allows_retry(
    store: Store, ledger: DeliveryLedger
) -> None:
    ledger.claim("n1", KEY_A, lease_s=5)
    store.elapse(20)
    assert ledger.claim("n1", KEY_A, lease_s=5) is False
    # The slow worker learns its push was rejected: nothing reached the phone.
    assert ledger.release("n1", KEY_A) is True
    assert ledger.claim("n1", KEY_A, lease_s=5) is True


def test_caller_may_reclaim_expired_claims(store: Store, ledger: DeliveryLedger) -> None:
    ledger.claim("n1", KEY_A, lease_s=5, owner="worker-a")
    ledger.claim("n1", KEY_B, lease_s=5, owner="worker-a")
    store.elapse(20)
    assert ledger.claim("n1", KEY_B, lease_s=5) is False  # KEY_B becomes uncertain

    assert ledger.claim("n1", KEY_A, lease_s=30, reclaim_expired=True, owner="worker-b")
    assert ledger.claim("n1", KEY_B, lease_s=30, reclaim_expired=True, owner="worker-b")
    # The original worker's late release must not cancel worker-b's claim.
    assert ledger.release("n1", KEY_A, owner="worker-a") is False
    assert ledger.claim("n1", KEY_A, lease_s=5) is False
    assert ledger.release("n1", KEY_A, owner="worker-b") is True


def test_mark_delivered_without_claim_is_recorded(ledger: DeliveryLedger) -> None:
    ledger.mark_delivered("n1", KEY_A)
    ledger.mark_delivered("n1", KEY_A)
    assert ledger.delivered("n1") == {KEY_A}
    assert ledger.claim("n1", KEY_A, lease_s=LEASE_S) is False


def test_raw_tokens_are_rejected(ledger: DeliveryLedger) -> None:
    raw_ios = "a1" * 32  # hex like a digest: the prefix is what tells them apart
    for bad in (raw_ios, "fcm:APA91b-raw", KEY_A.upper(), KEY_A[:-1], ""):
        with pytest.raises(ValueError, match="^token_key:") as excinfo:
            ledger.claim("n1", bad, lease_s=LEASE_S)
        if bad:
            assert bad not in str(excinfo.value)
    assert ledger.counts() == {"in_flight": 0, "maybe_delivered": 0, "delivered": 0}


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
    ledger: DeliveryLedger, kwargs: dict[str, object], field: str
) -> None:
    args: dict[str, object] = {"notification_id": "n1", "token_key": KEY_A, "lease_s": LEASE_S}
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"^{field}:"):
        ledger.claim(**args)  # type: ignore[arg-type]


def test_prune_forgets_old_pairs_but_keeps_live_claims(
    store: Store, ledger: DeliveryLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small batches exercise the batching loop.
    monkeypatch.setattr(ledger_sqlite, "PRUNE_BATCH_ROWS", 3)
    monkeypatch.setattr(ledger_postgres, "PRUNE_BATCH_ROWS", 3)
    old_keys = [token_key(f"old-{i}") for i in range(7)]
    for key in old_keys:
        ledger.claim("old", key, lease_s=LEASE_S)
        ledger.mark_delivered("old", key)
    ledger.claim("old", KEY_A, lease_s=10)  # expires: maybe delivered
    ledger.claim("long", KEY_A, lease_s=10_000)  # a very long live lease
    store.elapse(1_000)
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


def test_a_closed_ledger_refuses_use(store: Store) -> None:
    ledger = store.ledger()
    ledger.close()
    ledger.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        ledger.claim("n1", KEY_A, lease_s=LEASE_S)


# -- across processes ---------------------------------------------------------

PAIRS = [(f"n{n}", token_key(f"device-{d}")) for n in range(10) for d in range(10)]


def _claim_all(ledger: DeliveryLedger, seed: int) -> list[tuple[str, str]]:
    """Claim every pair in a random order; deliver the ones won."""
    order = list(PAIRS)
    random.Random(seed).shuffle(order)
    won = []
    for notification_id, key in order:
        if ledger.claim(notification_id, key, lease_s=LEASE_S):
            won.append((notification_id, key))
            ledger.mark_delivered(notification_id, key)
    return won


def _claimer_process(backend: str, location: str, seed: int, start: BarrierType,
                     results: Queue) -> None:
    try:
        ledger = open_ledger(backend, location)
        try:
            ledger.delivered("warm-up")  # connect before the race starts
            start.wait()
            results.put(_claim_all(ledger, seed))
        finally:
            ledger.close()
    except BaseException as exc:
        results.put(exc)  # fail the test at once instead of at the queue timeout
        raise


def test_exactly_one_claimer_wins_each_pair_across_threads_and_processes(store: Store) -> None:
    ctx = multiprocessing.get_context("spawn")
    thread_seeds = range(4)
    process_seeds = (101, 102)
    # Everyone waits for everyone: spawned processes take a while to import.
    start = ctx.Barrier(len(thread_seeds) + len(process_seeds), timeout=WAIT_S)
    results: Queue = ctx.Queue()
    processes = [
        ctx.Process(target=_claimer_process,
                    args=(store.backend, store.location, seed, start, results))
        for seed in process_seeds
    ]
    for process in processes:
        process.start()
    # Real time here: the other processes tell time by the host's clock.
    shared = open_ledger(store.backend, store.location)
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

    try:
        assert not errors
        assert [p.exitcode for p in processes] == [0, 0]
        wins = Counter(pair for won in thread_wins + process_wins for pair in won)
        assert set(wins) == set(PAIRS)
        assert set(wins.values()) == {1}  # every pair pushed exactly once
        assert any(process_wins)  # the other processes really took part
        assert shared.counts() == {"in_flight": 0, "maybe_delivered": 0,
                                   "delivered": len(PAIRS)}
    finally:
        shared.close()


def _claim_and_crash(backend: str, location: str, lease_s: float) -> None:
    ledger = open_ledger(backend, location)
    assert ledger.claim("n-crash", KEY_A, lease_s=lease_s)
    # "Push succeeded", then the process dies before mark_delivered.
    os._exit(3)


def test_worker_crash_between_push_and_mark_is_not_pushed_again(store: Store) -> None:
    lease_s = 1.0
    ctx = multiprocessing.get_context("spawn")
    crasher = ctx.Process(target=_claim_and_crash, args=(store.backend, store.location, lease_s))
    crasher.start()
    crasher.join(WAIT_S)
    assert crasher.exitcode == 3

    ledger = open_ledger(store.backend, store.location)
    try:
        time.sleep(lease_s + 0.5)  # the crashed worker's lease runs out (real time)
        assert ledger.claim("n-crash", KEY_A, lease_s=LEASE_S) is False  # redelivery: skipped
        assert ledger.maybe_delivered("n-crash") == {KEY_A}
        assert ledger.claim("n-crash", KEY_A, lease_s=LEASE_S, reclaim_expired=True) is True
    finally:
        ledger.close()
