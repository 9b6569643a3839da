"""The contract suite's stores: every test here runs once on SQLite files and
once on a fresh PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from stores_support import BACKENDS, Store, migrated

from willowe_tasks.ledger import DeliveryLedger
from willowe_tasks.registry import DeviceRegistry


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        opened = Store("sqlite", str(tmp_path))
    else:
        opened = Store("postgres", migrated(request.getfixturevalue("postgres_database_url")))
    yield opened
    opened.close()


@pytest.fixture
def registry(store: Store) -> DeviceRegistry:
    return store.registry()


@pytest.fixture
def ledger(store: Store) -> DeliveryLedger:
    return store.ledger()
