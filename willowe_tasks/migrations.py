"""The PostgreSQL schema, one numbered step per version, and what applies it.

``python -m willowe_tasks db migrate`` (``make db``, compose's ``db`` job)
runs :func:`migrate`: it applies the steps a database lacks, in order, in
one transaction (all of them or none), recording each number in
``willowe_tasks.schema_versions``. Concurrent runs wait on one advisory lock,
so two hosts deploying at once apply each step once. Workers never change the
schema: at start-up they check it with :func:`require_current` and stop with
the command to run when it is behind.

Everything lives in the ``willowe_tasks`` schema, so the tables can share a
database with an application's own. Steps are only ever appended; a step
already released is never edited (a database that ran it would not run it
again). The SQLite files (one host) create and upgrade their own schema when
opened: see :mod:`willowe_tasks.registry.sqlite`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from willowe_tasks.database import PostgresDatabase
from willowe_tasks.database_url import DatabaseNotReady

__all__ = ["MIGRATIONS", "SCHEMA", "SCHEMA_VERSION", "Migration", "SchemaOutdated", "migrate",
           "require_current", "schema_version"]

logger = logging.getLogger(__name__)

#: The PostgreSQL schema (namespace) holding every table of ours.
SCHEMA = "willowe_tasks"

#: pg_advisory_xact_lock key that serialises migrate() runs (any constant
#: bigint; "willowe" in ASCII).
MIGRATION_LOCK_KEY = 0x77696C6C6F7765


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "device registry and delivery ledger", (
        # The registry: the rules are those of registry/base.py. Platforms are
        # the registered providers', so no CHECK names them. A token is found
        # by its token_key (sha256), since a token may be longer than a btree
        # entry can hold (about 2.7 kB; FCM allows 4096 characters).
        # registration_order only grows: devices_for() sorts by it, and a
        # token that moves takes a new number, so it sorts as its new
        # owner's newest device.
        f"CREATE SEQUENCE {SCHEMA}.device_registration_order AS bigint",
        f"""
        CREATE TABLE {SCHEMA}.devices (
            token_key          text PRIMARY KEY,
            token              text NOT NULL,
            registration_order bigint NOT NULL,
            user_id            text NOT NULL,
            platform           text NOT NULL,
            app_id             text NOT NULL,
            registered_at      timestamptz NOT NULL,
            last_seen_at       timestamptz NOT NULL,
            invalid_at         timestamptz,
            invalid_reason     text
        )
        """,
        f"CREATE INDEX devices_by_user ON {SCHEMA}.devices (user_id, registration_order)",
        f"CREATE INDEX devices_by_invalid_at ON {SCHEMA}.devices (invalid_at)"
        " WHERE invalid_at IS NOT NULL",
        # The ledger (ledger/sqlite.py's states); times are the server's clock.
        f"""
        CREATE TABLE {SCHEMA}.deliveries (
            notification_id  text NOT NULL,
            token_key        text NOT NULL,
            state            text NOT NULL
                             CHECK (state IN ('claimed', 'delivered', 'uncertain')),
            owner            text NOT NULL,
            attempts         integer NOT NULL,
            claimed_at       timestamptz NOT NULL,
            lease_expires_at timestamptz NOT NULL,
            delivered_at     timestamptz,
            touched_at       timestamptz NOT NULL,
            PRIMARY KEY (notification_id, token_key)
        )
        """,
        f"CREATE INDEX deliveries_by_touched ON {SCHEMA}.deliveries (touched_at)",
    )),
    Migration(2, "provider quota buckets", (
        # One row per shared token bucket (willowe_tasks/quota/postgres.py):
        # its tokens as of refilled_at, on the server's clock; granted is
        # what the last take handed out (read back by RETURNING).
        f"""
        CREATE TABLE {SCHEMA}.quota_buckets (
            name        text PRIMARY KEY,
            tokens      float8 NOT NULL,
            refilled_at timestamptz NOT NULL,
            granted     integer NOT NULL
        )
        """,
    )),
)

#: The version this code needs: the last step's.
SCHEMA_VERSION = MIGRATIONS[-1].version


class SchemaOutdated(DatabaseNotReady):
    """The database's schema is older than this code needs; the message says
    what to run."""


def schema_version(database: PostgresDatabase) -> int:
    """The newest step applied to ``database`` (0: none, or not ours yet)."""
    with database.connection() as conn:
        exists = conn.execute("SELECT to_regclass(%s)",
                              (f"{SCHEMA}.schema_versions",)).fetchone()
        if exists is None or exists[0] is None:
            return 0
        row = conn.execute(
            f"SELECT coalesce(max(version), 0) FROM {SCHEMA}.schema_versions").fetchone()
    return int(row[0]) if row else 0


def migrate(database: PostgresDatabase) -> list[Migration]:
    """Apply every step ``database`` lacks; return those applied (none when current)."""
    applied = []
    with database.transaction() as conn:
        # Held to the end of this transaction: a second migrate waits here and
        # then finds the steps applied.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        conn.execute(f"""
            CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_versions (
                version     integer PRIMARY KEY,
                description text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            )""")
        row = conn.execute(
            f"SELECT coalesce(max(version), 0) FROM {SCHEMA}.schema_versions").fetchone()
        current = int(row[0]) if row else 0
        for step in MIGRATIONS:
            if step.version <= current:
                continue
            with conn.transaction():  # a savepoint per step
                for statement in step.statements:
                    conn.execute(statement)
                conn.execute(
                    f"INSERT INTO {SCHEMA}.schema_versions (version, description)"
                    " VALUES (%s, %s)", (step.version, step.description))
            logger.info("Applied schema step %d (%s) to %s.", step.version, step.description,
                        database.target)
            applied.append(step)
    return applied


def require_current(database: PostgresDatabase) -> int:
    """The database's version; :class:`SchemaOutdated` when it is behind this code's."""
    version = schema_version(database)
    if version < SCHEMA_VERSION:
        raise SchemaOutdated(
            f"DATABASE_URL: the database at {database.target} has schema version {version},"
            f" this code needs {SCHEMA_VERSION}; run `python -m willowe_tasks db migrate`"
            " (make db) first")
    if version > SCHEMA_VERSION:
        # A newer release migrated first (a rolling deploy): its steps only add,
        # so this code keeps working.
        logger.info("The database at %s has schema version %d, newer than this code's %d.",
                    database.target, version, SCHEMA_VERSION)
    return version
