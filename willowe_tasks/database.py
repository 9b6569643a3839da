"""A PostgreSQL database shared by the registry and the ledger of one process.

:class:`PostgresDatabase` holds a ``psycopg_pool`` pool of autocommit
connections: a single statement is its own transaction (one round trip, as a
claim should be), and :meth:`PostgresDatabase.transaction` wraps the few
read-then-write steps. The pool is made on first use in each process and
made again after a fork: Dramatiq forks worker processes after importing the
app, and a connection must never be shared across processes (psycopg only
closes a connection in the process that opened it, so dropping an inherited
one is safe).

:meth:`PostgresDatabase.open` connects at once and raises
:class:`DatabaseUnavailable` naming ``DATABASE_URL`` and the host, so a
worker with a wrong URL, password or firewall stops at start-up instead of
at its first push.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import Connection
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from willowe_tasks.database_url import DatabaseNotReady, DatabaseUrl

__all__ = ["DEFAULT_CONNECT_TIMEOUT_S", "DEFAULT_POOL_SIZE", "DatabaseUnavailable",
           "PostgresDatabase"]

logger = logging.getLogger(__name__)

#: Most connections one process holds (Dramatiq's 8 worker threads and housekeeping).
DEFAULT_POOL_SIZE = 10

#: libpq's connect_timeout is whole seconds, at least 2 (libpq-connect.html,
#: connect_timeout); also the longest wait for a free pooled connection.
DEFAULT_CONNECT_TIMEOUT_S = 5.0

#: Shown in pg_stat_activity, so an operator can tell our sessions apart.
APPLICATION_NAME = "willowe-tasks"

Conn = Connection[TupleRow]


class DatabaseUnavailable(DatabaseNotReady):
    """The database can't be reached or refuses us. The message names
    ``DATABASE_URL`` and the host, never the password."""


class PostgresDatabase:
    """A pool of connections to ``url``, one pool per process."""

    def __init__(self, url: DatabaseUrl, *, pool_size: int = DEFAULT_POOL_SIZE,
                 connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
        self.url = url
        self._pool_size = pool_size
        self._connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._pool: ConnectionPool[Conn] | None = None
        self._pid = 0
        self._closed = False

    @property
    def target(self) -> str:
        return self.url.target

    def open(self) -> None:
        """Connect now (once per process); raise :class:`DatabaseUnavailable`
        if the server can't be reached or refuses the login."""
        self._get_pool()

    def __repr__(self) -> str:
        return f"PostgresDatabase({self.url})"

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        """A pooled connection in autocommit mode: each statement commits alone."""
        pool = self._get_pool()
        try:
            with pool.connection(timeout=self._connect_timeout_s) as conn:
                yield conn
        except PoolTimeout as e:
            raise DatabaseUnavailable(
                f"DATABASE_URL: no connection to PostgreSQL at {self.target} within "
                f"{self._connect_timeout_s:g}s ({e})") from None

    @contextmanager
    def transaction(self) -> Iterator[Conn]:
        """A pooled connection inside one transaction: committed when the
        block ends, rolled back if it raises."""
        with self.connection() as conn, conn.transaction():
            yield conn

    def close(self) -> None:
        """Close this process's pool; later use raises RuntimeError. Idempotent."""
        with self._lock:
            self._closed = True
            pool, self._pool = (self._pool if self._pid == os.getpid() else None), None
        if pool is not None:
            pool.close()

    # -- internals -------------------------------------------------------------

    def _get_pool(self) -> ConnectionPool[Conn]:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"database {self.target} is closed")
            if self._pool is not None and self._pid == os.getpid():
                return self._pool
            # None yet, or inherited through fork: the parent's pool (its
            # threads are gone here, its sockets are the parent's) is left alone.
            self._check_login()
            pool: ConnectionPool[Conn] = ConnectionPool(
                self.url.secret, min_size=1, max_size=self._pool_size,
                kwargs=self._connect_options(), open=False,
                # A connection the server dropped (restart, failover, idle
                # timeout) is replaced before use instead of failing a claim.
                check=ConnectionPool.check_connection,
                timeout=self._connect_timeout_s, name=f"willowe {self.target}")
            try:
                pool.open(wait=True, timeout=self._connect_timeout_s)
            except PoolTimeout as e:
                pool.close()
                raise DatabaseUnavailable(
                    f"DATABASE_URL: PostgreSQL at {self.target} did not accept connections "
                    f"within {self._connect_timeout_s:g}s ({e})") from None
            self._pool, self._pid = pool, os.getpid()
            logger.info("Connected to PostgreSQL at %s (pool of up to %d).", self.target,
                        self._pool_size)
            return pool

    def _connect_options(self) -> dict[str, Any]:
        return {"autocommit": True, "application_name": APPLICATION_NAME,
                "connect_timeout": max(2, int(self._connect_timeout_s))}

    def _check_login(self) -> None:
        """One plain connection first: the pool would only report a timeout,
        libpq says what went wrong (refused, unknown host, bad password)."""
        try:
            with psycopg.connect(self.url.secret, **self._connect_options()) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as e:
            raise DatabaseUnavailable(
                f"DATABASE_URL: cannot connect to PostgreSQL at {self.target}: "
                f"{_without(str(e).strip(), self.url.secret)}") from None


def _without(message: str, url: str) -> str:
    """libpq's message with anything of the URL's password taken out."""
    from psycopg import conninfo

    password = str(conninfo.conninfo_to_dict(url).get("password") or "")
    return message.replace(password, "***") if password else message
