"""``python -m willowe_tasks db …``: apply and show the PostgreSQL schema.

``db migrate`` is what ``make db`` and compose's one-shot ``db`` job run
before any worker starts; it is safe to run again, and from several hosts at
once. Without ``DATABASE_URL`` the registry and the ledger are SQLite files
that make their own schema, so both commands say so and succeed.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from willowe_tasks.settings import load_settings

if TYPE_CHECKING:
    from willowe_tasks.database import PostgresDatabase

__all__ = ["add_parser"]

#: Exit status of ``db status`` when the schema is behind this code's.
EXIT_BEHIND = 1


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="the PostgreSQL schema of DATABASE_URL: migrate, status")
    actions = db.add_subparsers(dest="action", required=True)
    migrate = actions.add_parser(
        "migrate", help="apply the schema steps the database lacks (idempotent)")
    migrate.set_defaults(run=_migrate)
    status = actions.add_parser(
        "status", help="show the database's schema version; exit 1 if it is behind")
    status.set_defaults(run=_status)


def _migrate(args: argparse.Namespace) -> int:
    from willowe_tasks.migrations import SCHEMA_VERSION, migrate

    database = _database()
    if database is None:
        return 0
    try:
        print(f"Migrating the schema of {database.target} …")
        applied = migrate(database)
    finally:
        database.close()
    for step in applied:
        print(f"  applied {step.version}: {step.description}")
    if not applied:
        print(f"  no change: schema version {SCHEMA_VERSION} is current")
    return 0


def _status(args: argparse.Namespace) -> int:
    from willowe_tasks.migrations import SCHEMA_VERSION, schema_version

    database = _database()
    if database is None:
        return 0
    try:
        version = schema_version(database)
    finally:
        database.close()
    verdict = ("current" if version == SCHEMA_VERSION else
               "behind: run `python -m willowe_tasks db migrate`" if version < SCHEMA_VERSION
               else "newer than this code (a later release migrated it)")
    print(f"{database.target}: schema version {version}, this code's {SCHEMA_VERSION} ({verdict})")
    return EXIT_BEHIND if version < SCHEMA_VERSION else 0


def _database() -> PostgresDatabase | None:
    """DATABASE_URL's database, connected (pool of one), or None for SQLite."""
    from willowe_tasks.database import PostgresDatabase

    settings = load_settings()
    url = settings.database
    if url is None:
        print("DATABASE_URL is not set: the registry and the ledger are SQLite files "
              f"({settings.device_registry_path}, {settings.delivery_log_path}), which make "
              "their own schema when opened. Nothing to do.")
        return None
    database = PostgresDatabase(url, pool_size=1,
                                connect_timeout_s=settings.database_connect_timeout_s)
    database.open()
    return database
