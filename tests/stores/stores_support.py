"""Where a contract test's registry and ledger live: SQLite files or a
PostgreSQL database, opened the same way in this process and in others."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from support import FakeClock

from willowe_tasks.database import PostgresDatabase
from willowe_tasks.database_url import DatabaseUrl
from willowe_tasks.ledger import DeliveryLedger, SQLiteLedger
from willowe_tasks.ledger.postgres import PostgresLedger
from willowe_tasks.migrations import SCHEMA, migrate
from willowe_tasks.registry import DeviceRegistry, SQLiteDeviceRegistry
from willowe_tasks.registry.postgres import PostgresDeviceRegistry

BACKENDS = ("sqlite", "postgres")


def migrated(url: str) -> str:
    """``url`` after its database got the schema."""
    database = PostgresDatabase(DatabaseUrl.parse(url), pool_size=1)
    try:
        migrate(database)
    finally:
        database.close()
    return url


def open_registry(backend: str, location: str) -> DeviceRegistry:
    """A registry on ``location``: a folder (sqlite) or a database URL (postgres)."""
    if backend == "sqlite":
        return SQLiteDeviceRegistry(Path(location) / "devices.sqlite3")
    return PostgresDeviceRegistry(PostgresDatabase(DatabaseUrl.parse(location)))


def open_ledger(backend: str, location: str, clock: FakeClock | None = None) -> DeliveryLedger:
    """A ledger on ``location``; on SQLite it tells time by ``clock`` (default: the
    host's), on PostgreSQL always by the server's."""
    if backend == "sqlite":
        path = Path(location) / "ledger" / "deliveries.sqlite3"
        return SQLiteLedger(path, clock=clock) if clock is not None else SQLiteLedger(path)
    return PostgresLedger(PostgresDatabase(DatabaseUrl.parse(location)))


@dataclass
class Store:
    """One test's registry and ledger, on one backend."""

    backend: str
    location: str
    #: SQLite's ledgers opened by :meth:`ledger` tell time by it; it starts now.
    clock: FakeClock = field(default_factory=FakeClock)
    _opened: list[DeviceRegistry | DeliveryLedger] = field(default_factory=list)

    def registry(self) -> DeviceRegistry:
        opened = open_registry(self.backend, self.location)
        self._opened.append(opened)
        return opened

    def ledger(self) -> DeliveryLedger:
        opened = open_ledger(self.backend, self.location, self.clock)
        self._opened.append(opened)
        return opened

    def elapse(self, seconds: float) -> None:
        """Let ``seconds`` pass for the ledger: SQLite's clock moves on, and on
        PostgreSQL (whose clock is the server's) every stored time moves back."""
        if self.backend == "sqlite":
            self.clock.advance(seconds)
            return
        with psycopg.connect(self.location, autocommit=True) as conn:
            conn.execute(
                f"UPDATE {SCHEMA}.deliveries SET"
                " claimed_at = claimed_at - make_interval(secs => %(s)s),"
                " lease_expires_at = lease_expires_at - make_interval(secs => %(s)s),"
                " delivered_at = delivered_at - make_interval(secs => %(s)s),"
                " touched_at = touched_at - make_interval(secs => %(s)s)", {"s": seconds})

    def close(self) -> None:
        for opened in self._opened:
            opened.close()
