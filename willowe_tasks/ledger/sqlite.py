"""Delivery ledger: at most one push per (notification, device).

Kafka delivers at least once: a worker that crashes after pushing but before
its offset commit, or a consumer-group rebalance, hands the same notification
to a worker again. The ledger makes the second run skip devices that were
already served. A worker does, per device::

    key = token_key(device.token)
    if not ledger.claim(notification_id, key, lease_s=LEASE_S):
        continue                               # done, in flight, or maybe done
    try:
        push(device)                           # APNs / FCM
    except TransientError:
        ledger.release(notification_id, key)   # not delivered: a retry may push
        raise
    ledger.mark_delivered(notification_id, key)

The guarantee, and where it stops
---------------------------------
``claim`` runs in a ``BEGIN IMMEDIATE`` transaction, so across all threads and
processes sharing the database file exactly one caller wins a pair. The loser
gets False while the pair is delivered or while the winner's lease
(``lease_s``, which must exceed the longest possible push including HTTP
timeouts) is running. After ``mark_delivered`` the pair is never claimed
again, until :meth:`SQLiteLedger.prune` forgets it. "All" means the
processes of one host (or a local disk they share): SQLite locking is not
reliable over NFS, and workers on other hosts with their own file are not
covered -- partitioning Kafka by user keeps a user's notifications on one
consumer, but a rebalance can still move them.

The gap is a worker that dies (or stalls past its lease) after the provider
accepted the push and before ``mark_delivered`` committed: the ledger cannot
know whether that push happened. Such a claim, once its lease has expired, is
treated as *maybe delivered*. By default the next ``claim`` of the pair returns
False and moves the row to the ``uncertain`` state, logging a warning once, so
the phone is not pushed again; the cost is that a worker which died *before*
pushing leaves that device without this notification. That is the chosen side
for a dating app: a duplicate "new match" or message alert is worse than a
rare missed one. A push that
timed out belongs here too: the caller must not ``release`` it, since the
provider may have accepted it. A failed ``mark_delivered`` (database locked
past ``busy_timeout``) leaves the claim, so it also ends up here. These pairs
are reported by :meth:`SQLiteLedger.maybe_delivered` and counted in
:meth:`SQLiteLedger.counts`. A caller that prefers at-least-once for some
notification passes ``reclaim_expired=True`` and may then push twice.

Duplicates that do get through (``reclaim_expired=True``, a ``prune`` window
shorter than Kafka's redelivery horizon, a lost database file) are invisible on
the phone when the push carries a collapse id derived from the notification
id (``apns-collapse-id``, at most 64 bytes; the Android notification ``tag``):
the second copy replaces the first instead of showing twice.

The ledger never stores tokens: callers pass
:func:`~willowe_tasks.tokens.token_key` (a sha256
digest; push tokens carry far too much entropy to be recovered from it), and
anything else is rejected.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from broker.per_process import PerProcess
from willowe_tasks._sqlite import ThreadLocalSQLite, immediate_transaction
from willowe_tasks.ledger.base import CLAIMED as _CLAIMED
from willowe_tasks.ledger.base import DELIVERED as _DELIVERED
from willowe_tasks.ledger.base import UNCERTAIN as _UNCERTAIN
from willowe_tasks.ledger.base import check_lease, default_owner, prune_in_batches, short_key
from willowe_tasks.ledger.base import check_pair as _check_pair

logger = logging.getLogger(__name__)

#: How long a writer waits for another process's write lock, in seconds.
DEFAULT_BUSY_TIMEOUT_S = 5.0
#: Rows deleted per transaction by prune(), so claims are not blocked for long.
PRUNE_BATCH_ROWS = 1000

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS deliveries (
        notification_id  TEXT NOT NULL,
        token_key        TEXT NOT NULL,
        state            TEXT NOT NULL CHECK (state IN ('claimed', 'delivered', 'uncertain')),
        owner            TEXT NOT NULL,
        attempts         INTEGER NOT NULL,
        claimed_at       REAL NOT NULL,
        lease_expires_at REAL NOT NULL,
        delivered_at     REAL,
        touched_at       REAL NOT NULL,
        PRIMARY KEY (notification_id, token_key)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS deliveries_by_touched ON deliveries (touched_at)",
)


class SQLiteLedger:
    """The delivery ledger on a SQLite file shared by threads and processes.

    Create one instance per process (after forking); each thread gets its own
    connection. ``clock`` returns Unix time in seconds and must agree across
    the processes sharing the file (wall clock: leases outlive one process).
    A clock jumping forward expires leases early, which under the default
    policy only turns pushes into "maybe delivered", never into duplicates.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if str(path) == ":memory:" or not str(path):
            # Connections are per thread; an in-memory database would not be
            # shared between them, and the ledger would guarantee nothing.
            raise ValueError("path: a file path is required (':memory:' is not shared)")
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._db = ThreadLocalSQLite(
            self._path,
            busy_timeout_s=busy_timeout_s,
            # FULL: fsync the WAL on every commit. A claim lost to a power
            # failure would let a redelivery push again, which is what the
            # ledger exists to prevent. Claims waiting together share one
            # commit (_ClaimBatch); a delivery mark is not synced by itself
            # (see mark_delivered).
            synchronous="FULL",
            name="delivery log",
            logger=logger,
        )
        with self._db.write() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)
        self._claims = _ClaimBatch(self._db, self._clock)

    @property
    def path(self) -> Path:
        return self._path

    def claim(
        self,
        notification_id: str,
        token_key: str,
        *,
        lease_s: float,
        reclaim_expired: bool = False,
        owner: str | None = None,
    ) -> bool:
        """Atomically reserve (notification, device) for one push attempt.

        Returns True if the caller must push now and then call
        :meth:`mark_delivered` or :meth:`release`. Returns False if the pair is
        delivered, claimed under a live lease, or maybe delivered (an expired
        claim; see the module docstring) -- unless ``reclaim_expired`` is set,
        in which case an expired or uncertain pair is claimed again and may be
        pushed twice. ``owner`` identifies the claimant for :meth:`release`;
        it defaults to this host, process and thread.
        """
        _check_pair(notification_id, token_key)
        check_lease(lease_s)
        owner = owner or default_owner()
        # The common case, a pair never seen, in one INSERT that does nothing
        # when the row exists: it is won by exactly one claimer, like the
        # check-then-insert below. Claims of this process's threads that wait
        # for the write turn together are committed together (see
        # _ClaimBatch): one synced commit makes all of them durable before any
        # of their pushes leaves.
        inserted = self._claims.insert(
            _FreshClaim(notification_id, token_key, owner, lease_s))
        if inserted:
            return True
        # write() is BEGIN IMMEDIATE: it takes the write lock before the
        # SELECT, so check-then-write is atomic across processes; a DEFERRED
        # transaction could let two claimers both read "no row".
        with self._db.write() as conn:
            now = self._clock()
            row = conn.execute(
                "SELECT state, lease_expires_at FROM deliveries"
                " WHERE notification_id = ? AND token_key = ?",
                (notification_id, token_key),
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO deliveries (notification_id, token_key, state, owner, attempts,"
                    " claimed_at, lease_expires_at, touched_at) VALUES (?, ?, ?, ?, 1, ?, ?, ?)",
                    (notification_id, token_key, _CLAIMED, owner, now, now + lease_s, now),
                )
                return True
            state, lease_expires_at = row
            if state == _DELIVERED or (state == _CLAIMED and now < lease_expires_at):
                return False
            # An expired claim or an uncertain pair: the push may have happened.
            if reclaim_expired:
                conn.execute(
                    "UPDATE deliveries SET state = ?, owner = ?, attempts = attempts + 1,"
                    " claimed_at = ?, lease_expires_at = ?, touched_at = ?"
                    " WHERE notification_id = ? AND token_key = ?",
                    (_CLAIMED, owner, now, now + lease_s, now, notification_id, token_key),
                )
                logger.warning(
                    "notification %s device %s: reclaiming an expired claim on request;"
                    " the device may get this notification twice",
                    notification_id,
                    short_key(token_key),
                )
                return True
            if state == _CLAIMED:
                conn.execute(
                    "UPDATE deliveries SET state = ?, touched_at = ?"
                    " WHERE notification_id = ? AND token_key = ?",
                    (_UNCERTAIN, now, notification_id, token_key),
                )
                logger.warning(
                    "notification %s device %s: claim expired without mark_delivered"
                    " (worker died or stalled mid-push); treating as maybe delivered,"
                    " not pushing again",
                    notification_id,
                    short_key(token_key),
                )
            return False

    def mark_delivered(self, notification_id: str, token_key: str) -> None:
        """Record that the provider accepted the push for this pair.

        Always records the delivery, even without a matching live claim
        (expired, reclaimed by another worker, or pruned): the push happened,
        and recording it is what stops further pushes.
        """
        _check_pair(notification_id, token_key)
        # The common case, our own claim, in one statement (atomic by itself,
        # as in claim()); anything else is looked at below. Not synced: if a
        # power failure loses it, the claim it settles stays and expires into
        # "maybe delivered", which is never pushed again either (see the
        # module docstring); it is written to disk with the next synced commit.
        with self._db.writing(durable=False) as conn:
            now = self._clock()
            updated = conn.execute(
                "UPDATE deliveries SET state = ?, delivered_at = ?, touched_at = ?"
                " WHERE notification_id = ? AND token_key = ? AND state = ?",
                (_DELIVERED, now, now, notification_id, token_key, _CLAIMED),
            ).rowcount
        if updated:
            return
        owner = default_owner()
        with self._db.write() as conn:
            now = self._clock()
            row = conn.execute(
                "SELECT state FROM deliveries WHERE notification_id = ? AND token_key = ?",
                (notification_id, token_key),
            ).fetchone()
            if row is None:
                logger.warning(
                    "notification %s device %s: delivered without a claim on record",
                    notification_id,
                    short_key(token_key),
                )
                conn.execute(
                    "INSERT INTO deliveries (notification_id, token_key, state, owner, attempts,"
                    " claimed_at, lease_expires_at, delivered_at, touched_at)"
                    " VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?)",
                    (notification_id, token_key, _DELIVERED, owner, now, now, now, now),
                )
                return
            if row[0] == _DELIVERED:
                # A duplicate push slipped through (reclaim_expired); keep the
                # first delivery time.
                logger.warning(
                    "notification %s device %s: marked delivered twice",
                    notification_id,
                    short_key(token_key),
                )
                return
            if row[0] == _UNCERTAIN:
                logger.info(
                    "notification %s device %s: late mark_delivered resolves a maybe-delivered"
                    " pair",
                    notification_id,
                    short_key(token_key),
                )
            conn.execute(
                "UPDATE deliveries SET state = ?, delivered_at = ?, touched_at = ?"
                " WHERE notification_id = ? AND token_key = ?",
                (_DELIVERED, now, now, notification_id, token_key),
            )

    def release(self, notification_id: str, token_key: str, *, owner: str | None = None) -> bool:
        """Drop the caller's claim after a push that certainly did not happen.

        Use only when the provider rejected the request or it never left this
        process; after a timeout the push may have happened -- leave the claim
        to expire instead. Releases only a claim held by ``owner`` (default:
        this host, process and thread) so a worker whose lease expired cannot
        cancel another worker's reclaim. Returns whether a claim was dropped.
        """
        _check_pair(notification_id, token_key)
        owner = owner or default_owner()
        with self._db.write() as conn:
            cursor = conn.execute(
                "DELETE FROM deliveries WHERE notification_id = ? AND token_key = ?"
                " AND state IN (?, ?) AND owner = ?",
                (notification_id, token_key, _CLAIMED, _UNCERTAIN, owner),
            )
            released = cursor.rowcount > 0
        if not released:
            logger.warning(
                "notification %s device %s: release ignored (delivered, not claimed,"
                " or claimed by another worker)",
                notification_id,
                short_key(token_key),
            )
        return released

    def delivered(self, notification_id: str) -> set[str]:
        """Keys confirmed delivered for ``notification_id``."""
        return self._keys(notification_id, "state = ?", (_DELIVERED,))

    def maybe_delivered(self, notification_id: str) -> set[str]:
        """Keys whose claim expired without ``mark_delivered``: not pushed again."""
        return self._keys(
            notification_id,
            "(state = ? OR (state = ? AND lease_expires_at <= ?))",
            (_UNCERTAIN, _CLAIMED, self._clock()),
        )

    def counts(self) -> dict[str, int]:
        """Pairs per state: ``in_flight``, ``maybe_delivered``, ``delivered``."""
        now = self._clock()
        query = (
            "SELECT"
            " coalesce(sum(state = ? AND lease_expires_at > ?), 0),"
            " coalesce(sum(state = ? OR (state = ? AND lease_expires_at <= ?)), 0),"
            " coalesce(sum(state = ?), 0)"
            " FROM deliveries"
        )
        args = (_CLAIMED, now, _UNCERTAIN, _CLAIMED, now, _DELIVERED)
        row = self._db.connection().execute(query, args).fetchone()
        return {"in_flight": row[0], "maybe_delivered": row[1], "delivered": row[2]}

    def prune(self, older_than_s: float) -> int:
        """Forget pairs last touched more than ``older_than_s`` seconds ago.

        Live claims are kept whatever their age. A pruned pair can be pushed
        again, so ``older_than_s`` must exceed the longest time Kafka may
        redeliver a notification (retention plus retry backoff). Returns the
        number of rows deleted.
        """

        def delete_batch(rows: int) -> int:
            with self._db.write() as conn:
                now = self._clock()
                deleted: int = conn.execute(
                    "DELETE FROM deliveries WHERE (notification_id, token_key) IN ("
                    " SELECT notification_id, token_key FROM deliveries"
                    " WHERE touched_at < ? AND NOT (state = ? AND lease_expires_at > ?)"
                    " LIMIT ?)",
                    (now - older_than_s, _CLAIMED, now, rows),
                ).rowcount
            return deleted

        return prune_in_batches(delete_batch, PRUNE_BATCH_ROWS, older_than_s)

    def close(self) -> None:
        """Close every thread's connection; only once no thread uses the ledger."""
        self._db.close()

    def __enter__(self) -> SQLiteLedger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------

    def _keys(self, notification_id: str, condition: str, args: tuple[object, ...]) -> set[str]:
        rows = self._db.connection().execute(
            f"SELECT token_key FROM deliveries WHERE notification_id = ? AND {condition}",
            (notification_id, *args),
        )
        return {row[0] for row in rows}


@dataclass(eq=False)  # compared by identity: a queue holds each once
class _FreshClaim:
    """One thread's claim waiting for a group commit; ``inserted`` and
    ``error`` are set by whichever thread commits it."""

    notification_id: str
    token_key: str
    owner: str
    lease_s: float
    committed: bool = False
    inserted: bool = False
    error: BaseException | None = None


class _ClaimBatch:
    """Group commit of the claims of one process's threads.

    A claimer queues its claim, then takes the write turn; the thread that
    gets the turn commits every claim queued so far in one transaction (one
    fsync at ``synchronous=FULL``) and the claimers it served find theirs
    done once they get the turn. With eight worker threads pushing, a claim
    then waits for one synced commit rather than for each one queued ahead
    of it, and the disk syncs once per batch rather than once per push.
    """

    def __init__(self, db: ThreadLocalSQLite, clock: Callable[[], float]) -> None:
        self._db = db
        self._clock = clock
        # A process that inherits the ledger through fork starts with no queue.
        self._queue: PerProcess[_ClaimQueue] = PerProcess(_ClaimQueue)

    def insert(self, claim: _FreshClaim) -> bool:
        """Whether ``claim`` inserted its pair (False: the pair had a row);
        returns once that is committed and synced."""
        queue = self._queue.get()
        with queue.lock:
            queue.waiting.append(claim)
        while True:
            try:
                with self._db.writing() as conn:
                    if not claim.committed:
                        with queue.lock:
                            batch, queue.waiting = queue.waiting, []
                        self._commit(conn, batch)
                break
            except sqlite3.OperationalError:
                # No write turn within busy_timeout. A claim nobody took is
                # withdrawn, so that it can't be written after the caller was
                # told it failed; one a committer took is that commit's to
                # settle, and the committer ends within busy_timeout.
                with queue.lock:
                    if claim in queue.waiting:
                        queue.waiting.remove(claim)
                        raise
                if claim.committed:
                    break
        if claim.error is not None:
            raise claim.error
        return claim.inserted

    def _commit(self, conn: sqlite3.Connection, batch: list[_FreshClaim]) -> None:
        try:
            with immediate_transaction(conn):
                now = self._clock()
                for claim in batch:
                    claim.inserted = conn.execute(
                        "INSERT INTO deliveries (notification_id, token_key, state, owner,"
                        " attempts, claimed_at, lease_expires_at, touched_at)"
                        " VALUES (?, ?, ?, ?, 1, ?, ?, ?)"
                        " ON CONFLICT (notification_id, token_key) DO NOTHING",
                        (claim.notification_id, claim.token_key, _CLAIMED, claim.owner, now,
                         now + claim.lease_s, now),
                    ).rowcount > 0
        except Exception as e:
            # Nothing of the batch was written: each of its claimers fails.
            for claim in batch:
                claim.inserted, claim.error = False, e
        finally:
            for claim in batch:
                claim.committed = True


class _ClaimQueue:
    """Claims of one process queued for the next group commit."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting: list[_FreshClaim] = []
