"""The SQLite delivery ledger's own concerns: what its file holds and how it
behaves when another process holds the write lock. The ledger's contract
(claims, leases, maybe-delivered, pruning, races) is in
tests/stores/test_ledger_contract.py, run on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import FakeClock

from willowe_tasks.ledger import DeliveryLedger, SQLiteLedger
from willowe_tasks.tokens import token_key

LEASE_S = 30.0
KEY_A = token_key("a1" * 32)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SQLiteLedger]:
    log = SQLiteLedger(tmp_path / "ledger" / "deliveries.sqlite3", clock=FakeClock())
    yield log
    log.close()


def test_conforms_to_protocol(ledger: SQLiteLedger) -> None:
    typed: DeliveryLedger = ledger
    assert typed.delivered("n1") == set()


def test_raw_tokens_are_never_stored(ledger: SQLiteLedger) -> None:
    raw_ios = "a1" * 32  # hex like a digest: the prefix is what tells them apart
    with pytest.raises(ValueError, match="^token_key:"):
        ledger.claim("n1", raw_ios, lease_s=LEASE_S)
    ledger.claim("n1", token_key(raw_ios), lease_s=LEASE_S)
    ledger.mark_delivered("n1", token_key(raw_ios))
    stored = b"".join(p.read_bytes() for p in ledger.path.parent.iterdir())
    assert raw_ios.encode() not in stored


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


#: Bound on each wait for another thread in the tests below, in seconds.
THREAD_WAIT_S = 10.0
#: Pause between looks at another thread's progress, in seconds.
POLL_S = 0.01


class _Statements:
    """Every statement the ledger's connections run, with the thread that ran it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        connect = sqlite3.connect

        def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            conn = connect(*args, **kwargs)
            conn.set_trace_callback(self._record)
            return conn

        monkeypatch.setattr(sqlite3, "connect", traced)

    def _record(self, statement: str) -> None:
        with self._lock:
            self.seen.append((threading.get_ident(), " ".join(statement.split())))

    def of(self, thread: int) -> list[str]:
        with self._lock:
            return [s for t, s in self.seen if t == thread]

    def count(self, statement: str) -> int:
        with self._lock:
            return sum(s == statement for _, s in self.seen)

    def wait_for(self, statement: str, times: int = 1) -> None:
        deadline = time.monotonic() + THREAD_WAIT_S
        while self.count(statement) < times:
            assert time.monotonic() < deadline, f"no {statement!r} within {THREAD_WAIT_S}s"
            time.sleep(POLL_S)


def _queued_claims(log: SQLiteLedger) -> int:
    return len(log._claims._queue.get().waiting)


def _wait_until_queued(log: SQLiteLedger, claims: int) -> None:
    deadline = time.monotonic() + THREAD_WAIT_S
    while _queued_claims(log) < claims:
        assert time.monotonic() < deadline, f"{claims} claims not queued in {THREAD_WAIT_S}s"
        time.sleep(POLL_S)


def test_a_claim_is_synced_before_it_returns_and_a_delivery_mark_is_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    statements = _Statements(monkeypatch)
    with SQLiteLedger(tmp_path / "deliveries.sqlite3") as log:
        me = threading.get_ident()
        opened = len(statements.of(me))
        assert log.claim("n1", KEY_A, lease_s=LEASE_S)
        log.mark_delivered("n1", KEY_A)
        ran = statements.of(me)[opened:]
        synced_level = log._db.connection().execute("PRAGMA synchronous").fetchone()[0]

    claim_end = ran.index("COMMIT")
    # The claim commits at the ledger's level (FULL: the WAL is synced)...
    assert not any("synchronous" in s for s in ran[:claim_end + 1])
    # ...the mark commits unsynced, and the level is FULL again for the next claim.
    mark = ran[claim_end + 1:]
    assert mark[0] == "PRAGMA synchronous=NORMAL"
    assert mark[1].startswith("UPDATE deliveries SET state")
    assert mark[-1] == "PRAGMA synchronous=FULL"
    assert synced_level == 2  # FULL


def test_claims_waiting_for_the_write_turn_are_committed_together(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "deliveries.sqlite3"
    statements = _Statements(monkeypatch)
    with SQLiteLedger(path, busy_timeout_s=THREAD_WAIT_S) as log:
        commits_before = statements.count("COMMIT")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process mid-write
        won: dict[int, bool] = {}

        def claim(i: int) -> None:
            won[i] = log.claim(f"n{i}", KEY_A, lease_s=LEASE_S)

        begun = statements.count("BEGIN IMMEDIATE")
        first = threading.Thread(target=claim, args=(0,))
        first.start()
        statements.wait_for("BEGIN IMMEDIATE", begun + 1)  # it holds the turn, waiting on SQLite
        rest = [threading.Thread(target=claim, args=(i,)) for i in range(1, 5)]
        for thread in rest:
            thread.start()
        _wait_until_queued(log, 4)
        other.execute("COMMIT")
        for thread in [first, *rest]:
            thread.join(THREAD_WAIT_S)
        other.close()

        assert won == {i: True for i in range(5)}
        # One commit for the first claim, one for the four that queued behind
        # it (this thread's COMMIT was the other process's).
        assert statements.count("COMMIT") - commits_before - 1 == 2
        assert all(not log.claim(f"n{i}", KEY_A, lease_s=LEASE_S) for i in range(5))


def test_a_failed_group_commit_fails_every_claim_in_it_and_writes_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "deliveries.sqlite3"
    statements = _Statements(monkeypatch)
    with SQLiteLedger(path, busy_timeout_s=0.5) as log:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # held until every claim has failed
        errors: dict[int, BaseException | None] = {}

        def claim(i: int) -> None:
            try:
                log.claim(f"n{i}", KEY_A, lease_s=LEASE_S)
                errors[i] = None
            except sqlite3.OperationalError as e:
                errors[i] = e

        begun = statements.count("BEGIN IMMEDIATE")
        first = threading.Thread(target=claim, args=(0,))
        first.start()
        statements.wait_for("BEGIN IMMEDIATE", begun + 1)
        rest = [threading.Thread(target=claim, args=(i,)) for i in range(1, 3)]
        for thread in rest:
            thread.start()
        for thread in [first, *rest]:
            thread.join(THREAD_WAIT_S)
        other.execute("COMMIT")
        other.close()

        assert sorted(errors) == [0, 1, 2]
        assert all(isinstance(e, sqlite3.OperationalError) for e in errors.values())
        assert _queued_claims(log) == 0  # none left to be written behind their backs
        # Nothing was written: every pair can be claimed now.
        assert all(log.claim(f"n{i}", KEY_A, lease_s=LEASE_S) for i in range(3))
