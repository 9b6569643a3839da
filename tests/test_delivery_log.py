"""The SQLite delivery ledger's own concerns: what its file holds and how it
behaves when another process holds the write lock. The ledger's contract
(claims, leases, maybe-delivered, pruning, races) is in
tests/stores/test_ledger_contract.py, run on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

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
