"""The delivery ledger on PostgreSQL, shared by workers on every host.

The same two phases, states and guarantee as the SQLite ledger (see
:mod:`willowe_tasks.ledger.sqlite` for what is promised and where it stops),
with two differences that come from many hosts sharing it:

* **Leases run on the database server's clock.** Every time a claim is
  given, checked or expired is the server's ``statement_timestamp()``, never
  a worker's: a worker whose clock runs a minute ahead neither takes over a
  claim still being pushed nor expires it early.
* **Exactly one claimer wins across hosts**, not only across one host's
  processes: a new pair is claimed by one ``INSERT … ON CONFLICT DO
  NOTHING``; an existing one is looked at under ``SELECT … FOR UPDATE``, so
  claimers of the same pair queue on its row lock.

:meth:`PostgresLedger.prune` deletes in the database, in batches that skip
rows another worker holds locked.
"""

from __future__ import annotations

import logging

from willowe_tasks.database import Conn, PostgresDatabase
from willowe_tasks.ledger.base import (
    CLAIMED,
    DELIVERED,
    UNCERTAIN,
    check_lease,
    check_pair,
    default_owner,
    prune_in_batches,
    short_key,
)
from willowe_tasks.migrations import SCHEMA

__all__ = ["PostgresLedger"]

logger = logging.getLogger(__name__)

#: Rows deleted per statement by prune(), so no transaction holds many locks.
PRUNE_BATCH_ROWS = 1000

#: Rounds of claim()/mark_delivered() when the pair's row vanishes or appears
#: between two statements (a release or prune racing us); each round sees
#: the other side's commit, so two settle it.
RACE_ROUNDS = 5

_TABLE = f"{SCHEMA}.deliveries"
_NOW = "statement_timestamp()"
_LEASE = f"{_NOW} + make_interval(secs => %s)"
_WHERE_PAIR = "notification_id = %s AND token_key = %s"
_INSERT_CLAIM = (
    f"INSERT INTO {_TABLE} (notification_id, token_key, state, owner, attempts, claimed_at,"
    f" lease_expires_at, touched_at) VALUES (%s, %s, '{CLAIMED}', %s, 1, {_NOW}, {_LEASE},"
    f" {_NOW}) ON CONFLICT (notification_id, token_key) DO NOTHING")
_EXPIRED = f"(state = '{CLAIMED}' AND lease_expires_at <= {_NOW})"
_LIVE = f"(state = '{CLAIMED}' AND lease_expires_at > {_NOW})"


class PostgresLedger:
    """:class:`~willowe_tasks.ledger.base.DeliveryLedger` on PostgreSQL.

    Safe for any number of threads, processes and hosts; one instance per
    process (its pool is made per process anyway). Its schema is applied by
    :func:`willowe_tasks.migrations.migrate`.
    """

    def __init__(self, database: PostgresDatabase) -> None:
        self._db = database

    @property
    def database(self) -> PostgresDatabase:
        return self._db

    def claim(
        self,
        notification_id: str,
        token_key: str,
        *,
        lease_s: float,
        reclaim_expired: bool = False,
        owner: str | None = None,
    ) -> bool:
        """Atomically reserve (notification, device) for one push attempt; see
        :meth:`willowe_tasks.ledger.sqlite.SQLiteLedger.claim`."""
        check_pair(notification_id, token_key)
        check_lease(lease_s)
        owner = owner or default_owner()
        pair = (notification_id, token_key)
        # The common case, a pair never seen: one statement, one round trip.
        with self._db.connection() as conn:
            if conn.execute(_INSERT_CLAIM, (*pair, owner, lease_s)).rowcount:
                return True
        for _ in range(RACE_ROUNDS):
            with self._db.transaction() as conn:
                decided = self._claim_existing(conn, pair, owner, lease_s, reclaim_expired)
            if decided is not None:
                return decided
        raise RuntimeError(f"notification {notification_id} device {short_key(token_key)}: the"
                           f" pair kept changing under {RACE_ROUNDS} claims")

    def mark_delivered(self, notification_id: str, token_key: str) -> None:
        """Record that the provider accepted the push for this pair, even without
        a live claim (the push happened; recording it stops further pushes)."""
        check_pair(notification_id, token_key)
        pair = (notification_id, token_key)
        with self._db.connection() as conn:
            if conn.execute(
                    f"UPDATE {_TABLE} SET state = '{DELIVERED}', delivered_at = {_NOW},"
                    f" touched_at = {_NOW} WHERE {_WHERE_PAIR} AND state = '{CLAIMED}'",
                    pair).rowcount:
                return
        for _ in range(RACE_ROUNDS):
            with self._db.transaction() as conn:
                if self._deliver_existing(conn, pair):
                    return
        raise RuntimeError(f"notification {notification_id} device {short_key(token_key)}: the"
                           f" pair kept changing under {RACE_ROUNDS} attempts to mark it")

    def release(self, notification_id: str, token_key: str, *, owner: str | None = None) -> bool:
        """Drop ``owner``'s claim after a push that certainly did not happen;
        see :meth:`willowe_tasks.ledger.sqlite.SQLiteLedger.release`."""
        check_pair(notification_id, token_key)
        with self._db.connection() as conn:
            released = conn.execute(
                f"DELETE FROM {_TABLE} WHERE {_WHERE_PAIR}"
                f" AND state IN ('{CLAIMED}', '{UNCERTAIN}') AND owner = %s",
                (notification_id, token_key, owner or default_owner())).rowcount > 0
        if not released:
            logger.warning("notification %s device %s: release ignored (delivered, not claimed,"
                           " or claimed by another worker)", notification_id,
                           short_key(token_key))
        return released

    def delivered(self, notification_id: str) -> set[str]:
        """Keys confirmed delivered for ``notification_id``."""
        return self._keys(notification_id, f"state = '{DELIVERED}'")

    def maybe_delivered(self, notification_id: str) -> set[str]:
        """Keys whose claim expired without ``mark_delivered``: not pushed again."""
        return self._keys(notification_id, f"(state = '{UNCERTAIN}' OR {_EXPIRED})")

    def counts(self) -> dict[str, int]:
        """Pairs per state: ``in_flight``, ``maybe_delivered``, ``delivered``."""
        with self._db.connection() as conn:
            row = conn.execute(
                f"SELECT count(*) FILTER (WHERE {_LIVE}),"
                f" count(*) FILTER (WHERE state = '{UNCERTAIN}' OR {_EXPIRED}),"
                f" count(*) FILTER (WHERE state = '{DELIVERED}') FROM {_TABLE}").fetchone()
        assert row is not None
        return {"in_flight": row[0], "maybe_delivered": row[1], "delivered": row[2]}

    def prune(self, older_than_s: float) -> int:
        """Forget pairs last touched more than ``older_than_s`` seconds ago (by
        the server's clock); live claims are kept whatever their age. Returns
        the number of rows deleted."""

        def delete_batch(rows: int) -> int:
            with self._db.connection() as conn:
                # SKIP LOCKED: a row a claimer holds is left for the next run,
                # and workers pruning at once split the work instead of queueing.
                return conn.execute(
                    f"DELETE FROM {_TABLE} d USING (SELECT notification_id, token_key"
                    f" FROM {_TABLE} WHERE touched_at < {_NOW} - make_interval(secs => %s)"
                    f" AND NOT {_LIVE} LIMIT %s FOR UPDATE SKIP LOCKED) old"
                    " WHERE d.notification_id = old.notification_id"
                    " AND d.token_key = old.token_key", (older_than_s, rows)).rowcount

        return prune_in_batches(delete_batch, PRUNE_BATCH_ROWS, older_than_s)

    def close(self) -> None:
        """Close the database's pool (shared with the registry of the same services)."""
        self._db.close()

    def __enter__(self) -> PostgresLedger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------

    def _claim_existing(self, conn: Conn, pair: tuple[str, str], owner: str, lease_s: float,
                        reclaim_expired: bool) -> bool | None:
        """The decision on a pair that had a row; None if the row vanished meanwhile."""
        row = conn.execute(
            f"SELECT state, lease_expires_at > {_NOW} FROM {_TABLE} WHERE {_WHERE_PAIR}"
            " FOR UPDATE", pair).fetchone()
        if row is None:  # released or pruned since the INSERT: claim it afresh
            return True if conn.execute(_INSERT_CLAIM, (*pair, owner, lease_s)).rowcount else None
        state, live = row
        if state == DELIVERED or (state == CLAIMED and live):
            return False
        # An expired claim or an uncertain pair: the push may have happened.
        if reclaim_expired:
            conn.execute(
                f"UPDATE {_TABLE} SET state = '{CLAIMED}', owner = %s, attempts = attempts + 1,"
                f" claimed_at = {_NOW}, lease_expires_at = {_LEASE}, touched_at = {_NOW}"
                f" WHERE {_WHERE_PAIR}", (owner, lease_s, *pair))
            logger.warning("notification %s device %s: reclaiming an expired claim on request;"
                           " the device may get this notification twice", pair[0],
                           short_key(pair[1]))
            return True
        if state == CLAIMED:
            conn.execute(f"UPDATE {_TABLE} SET state = '{UNCERTAIN}', touched_at = {_NOW}"
                         f" WHERE {_WHERE_PAIR}", pair)
            logger.warning("notification %s device %s: claim expired without mark_delivered"
                           " (worker died or stalled mid-push); treating as maybe delivered,"
                           " not pushing again", pair[0], short_key(pair[1]))
        return False

    def _deliver_existing(self, conn: Conn, pair: tuple[str, str]) -> bool:
        """Mark a pair that was not under a claim; False if it changed meanwhile."""
        row = conn.execute(f"SELECT state FROM {_TABLE} WHERE {_WHERE_PAIR} FOR UPDATE",
                           pair).fetchone()
        if row is None:
            logger.warning("notification %s device %s: delivered without a claim on record",
                           pair[0], short_key(pair[1]))
            return bool(conn.execute(
                f"INSERT INTO {_TABLE} (notification_id, token_key, state, owner, attempts,"
                f" claimed_at, lease_expires_at, delivered_at, touched_at) VALUES (%s, %s,"
                f" '{DELIVERED}', %s, 1, {_NOW}, {_NOW}, {_NOW}, {_NOW})"
                " ON CONFLICT (notification_id, token_key) DO NOTHING",
                (*pair, default_owner())).rowcount)
        if row[0] == DELIVERED:
            # A duplicate push slipped through (reclaim_expired); keep the
            # first delivery time.
            logger.warning("notification %s device %s: marked delivered twice", pair[0],
                           short_key(pair[1]))
            return True
        if row[0] == UNCERTAIN:
            logger.info("notification %s device %s: late mark_delivered resolves a"
                        " maybe-delivered pair", pair[0], short_key(pair[1]))
        conn.execute(f"UPDATE {_TABLE} SET state = '{DELIVERED}', delivered_at = {_NOW},"
                     f" touched_at = {_NOW} WHERE {_WHERE_PAIR}", pair)
        return True

    def _keys(self, notification_id: str, condition: str) -> set[str]:
        with self._db.connection() as conn:
            rows = conn.execute(f"SELECT token_key FROM {_TABLE} WHERE notification_id = %s"
                                f" AND {condition}", (notification_id,)).fetchall()
        return {row[0] for row in rows}
