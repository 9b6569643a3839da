"""Per-thread, fork-aware SQLite connections shared by the SQLite-backed stores.

Every thread gets its own connection to one database file in WAL mode, so
readers proceed while one writer commits; ``busy_timeout`` makes writers queue
instead of failing; :meth:`ThreadLocalSQLite.write` runs a ``BEGIN IMMEDIATE``
transaction. A process that inherits an instance through fork opens fresh
connections instead of using its parent's.

Writers of one process take turns on a lock of their own before asking SQLite
for its write lock. SQLite makes a writer that finds the database locked poll
with sleeps that grow to 100 ms, so with eight worker threads committing in
turn a writer could sleep tens of milliseconds after the lock came free; a
thread lock hands over as soon as it is released. SQLite's lock still orders
writers of different processes.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from broker.per_process import PerProcess


class ThreadLocalSQLite:
    """One SQLite connection per thread (and per process) to ``path``.

    ``synchronous`` is the ``PRAGMA synchronous`` level; the caller chooses it
    and says why. ``name`` starts the error raised once closed, and ``logger``
    receives the warning when WAL is unavailable. :meth:`close` closes every
    thread's connection and must only be called once no other thread is still
    using the database.
    """

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_s: float,
        synchronous: Literal["NORMAL", "FULL"],
        name: str,
        logger: logging.Logger,
    ) -> None:
        self._path = path
        self._busy_timeout_s = busy_timeout_s
        self._synchronous = synchronous
        self._name = name
        self._logger = logger
        # A process that inherits this through fork gets state of its own:
        # the parent's connections (and possibly its held lock) must not be
        # used in this process.
        self._state: PerProcess[_ProcessState] = PerProcess(_ProcessState)
        self._closed = False

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        state = self._state.get()
        conn: sqlite3.Connection | None = getattr(state.local, "conn", None)
        if conn is not None and not self._closed:
            return conn
        with state.lock:
            if self._closed:
                raise RuntimeError(f"{self._name} {self._path} is closed")
            conn = self._open()
            state.connections.append(conn)
        state.local.conn = conn
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection inside a ``BEGIN IMMEDIATE`` transaction.

        Commits when the block ends, rolls back if it raises.
        """
        with self.writing() as conn, immediate_transaction(conn):
            yield conn

    @contextmanager
    def writing(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """This thread's connection, while no other thread of this process writes.

        Opens no transaction: a single statement run in the block is one by
        itself. Raises ``sqlite3.OperationalError`` ("database is locked")
        when the other writers of this process keep the turn for longer than
        ``busy_timeout``, as SQLite would for another process.

        ``durable=False`` commits what the block writes at ``synchronous=NORMAL``
        whatever the store's level: in WAL mode such a commit survives a crash
        of the process but not of the machine until the next synced commit (or
        checkpoint) writes the WAL to disk, and it waits for no fsync.
        """
        if not durable and self._synchronous != "NORMAL":
            with self.writing() as conn:
                conn.execute("PRAGMA synchronous=NORMAL")
                try:
                    yield conn
                finally:
                    conn.execute(f"PRAGMA synchronous={self._synchronous}")
            return
        conn = self.connection()
        writer = self._state.get().writer
        started = time.monotonic()
        if not writer.acquire(timeout=self._busy_timeout_s):
            raise sqlite3.OperationalError(
                f"database is locked: other threads kept writing to {self._name} for "
                f"{time.monotonic() - started:.1f}s"
            )
        try:
            yield conn
        finally:
            writer.release()

    def close(self) -> None:
        """Close every thread's connection; later use raises RuntimeError."""
        self._closed = True
        self._state.close(_ProcessState.close)

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE in
        # write()) instead of the sqlite3 module's implicit deferred ones.
        # check_same_thread=False only so close() can close every thread's
        # connection; each connection is otherwise used by its own thread alone.
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,
        )
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            self._logger.warning(
                "%s: WAL unavailable (journal_mode=%s); writers will block readers",
                self._path,
                mode,
            )
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        return conn


@contextmanager
def immediate_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``conn`` inside a ``BEGIN IMMEDIATE`` transaction: committed when the
    block ends, rolled back if it raises. The caller holds the write turn
    (:meth:`ThreadLocalSQLite.writing`)."""
    # IMMEDIATE takes the write lock up front, so a read-then-write inside the
    # block cannot be interleaved with another process's write.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    finally:
        # Also after a failed COMMIT: an open transaction would make this
        # thread's next BEGIN fail.
        if conn.in_transaction:
            conn.execute("ROLLBACK")


class _ProcessState:
    """One process's connections (one per thread) and its writers' turn lock."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.lock = threading.Lock()
        self.writer = threading.Lock()
        self.connections: list[sqlite3.Connection] = []

    def close(self) -> None:
        with self.lock:
            connections, self.connections = self.connections, []
        for conn in connections:
            conn.close()
