"""The PostgreSQL database itself: connecting (or refusing to, clearly and at
start-up), the versioned schema, and connections that never cross a fork."""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import threading
from pathlib import Path

import psycopg
import pytest

from willowe_tasks.database import DatabaseUnavailable, PostgresDatabase
from willowe_tasks.database_url import DatabaseUrl
from willowe_tasks.migrations import (
    MIGRATIONS,
    SCHEMA,
    SCHEMA_VERSION,
    SchemaOutdated,
    migrate,
    schema_version,
)
from willowe_tasks.services import build_stores, open_database
from willowe_tasks.settings import settings_from
from willowe_tasks.testing import worker_command
from willowe_tasks.testing.localpostgres import LocalPostgres

ROOT = Path(__file__).resolve().parents[2]

#: Bound on a worker that must stop at start-up, in seconds.
STARTUP_TIMEOUT_S = 60.0


def _database(url: str) -> PostgresDatabase:
    return PostgresDatabase(DatabaseUrl.parse(url), pool_size=2)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _password(url: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(url)["password"])


# -- the schema -----------------------------------------------------------------


def test_migrate_applies_every_step_once_and_records_it(postgres_database_url: str) -> None:
    database = _database(postgres_database_url)
    try:
        assert schema_version(database) == 0
        assert [step.version for step in migrate(database)] == [m.version for m in MIGRATIONS]
        assert schema_version(database) == SCHEMA_VERSION
        assert migrate(database) == []  # a second run changes nothing
        with database.connection() as conn:
            tables = {row[0] for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (SCHEMA,))}
        assert {"devices", "deliveries", "schema_versions"} <= tables
    finally:
        database.close()


def test_hosts_migrating_at_once_apply_each_step_once(postgres_database_url: str) -> None:
    databases = [_database(postgres_database_url) for _ in range(4)]
    applied: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(databases), timeout=30)

    def run(database: PostgresDatabase) -> None:
        try:
            database.open()
            start.wait()
            applied.extend(step.version for step in migrate(database))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(db,)) for db in databases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for database in databases:
        database.close()
    assert not errors
    assert sorted(applied) == [m.version for m in MIGRATIONS]


def test_an_unmigrated_database_stops_start_up_with_the_command_to_run(
    postgres_database_url: str,
) -> None:
    settings = settings_from({"DATABASE_URL": postgres_database_url})
    with pytest.raises(SchemaOutdated) as raised:
        build_stores(settings)
    message = str(raised.value)
    assert message.startswith("DATABASE_URL: ")
    assert "schema version 0" in message and "db migrate" in message
    assert _password(postgres_database_url) not in message


# -- connecting -----------------------------------------------------------------


def test_a_refused_connection_names_the_variable_and_the_host(local_postgres: LocalPostgres
                                                             ) -> None:
    port = _closed_port()
    url = f"postgresql://willowe:never-shown-pw@127.0.0.1:{port}/willowe"
    with pytest.raises(DatabaseUnavailable) as raised:
        open_database(settings_from({"DATABASE_URL": url}))
    message = str(raised.value)
    assert message.startswith("DATABASE_URL: cannot connect to PostgreSQL at ")
    assert f"127.0.0.1:{port}/willowe" in message
    assert "never-shown-pw" not in message


def test_a_wrong_password_is_refused_at_start_up_without_showing_it(
    local_postgres: LocalPostgres,
) -> None:
    url = (f"postgresql://willowe:wrong-pw-never-shown@{local_postgres.host}:"
           f"{local_postgres.port}/willowe")
    with pytest.raises(DatabaseUnavailable) as raised:
        open_database(settings_from({"DATABASE_URL": url}))
    message = str(raised.value)
    assert f"{local_postgres.host}:{local_postgres.port}/willowe" in message
    assert "password authentication failed" in message
    assert "wrong-pw-never-shown" not in message


def test_reprs_never_show_the_password(postgres_database_url: str) -> None:
    database = _database(postgres_database_url)
    assert _password(postgres_database_url) not in repr(database)
    assert database.target in repr(database)


def test_a_connection_never_crosses_a_fork(postgres_database_url: str) -> None:
    database = _database(postgres_database_url)
    try:
        with database.connection() as conn:
            parent_backend = conn.execute("SELECT pg_backend_pid()").fetchone()
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            status = 1
            try:
                os.close(read)
                gc.collect()  # drops nothing of the parent's that would close its socket
                with database.connection() as conn:
                    row = conn.execute("SELECT pg_backend_pid()").fetchone()
                os.write(write, str(row[0] if row else 0).encode())
                status = 0
            finally:
                os._exit(status)
        os.close(write)
        with os.fdopen(read) as pipe:
            child_backend = int(pipe.read() or 0)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The child used a connection of its own...
        assert child_backend and (child_backend,) != parent_backend
        # ...and the parent's is still the same, unharmed session.
        with database.connection() as conn:
            assert conn.execute("SELECT pg_backend_pid()").fetchone() == parent_backend
    finally:
        database.close()


# -- the worker -----------------------------------------------------------------


def _start_worker(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(worker_command(processes=1, threads=1), cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S)


@pytest.mark.parametrize("problem", ["refused", "malformed", "unmigrated"])
def test_a_worker_with_an_unusable_database_stops_at_start_up(
    problem: str, postgres_database_url: str, tmp_path: Path,
) -> None:
    password = _password(postgres_database_url)
    url = {
        "refused": f"postgresql://willowe:{password}@127.0.0.1:{_closed_port()}/willowe",
        "malformed": f"postgresql://willowe:{password}@127.0.0.1:port/willowe",
        "unmigrated": postgres_database_url,
    }[problem]
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(ROOT),
           # Nothing listens here: the worker must stop before it needs Kafka.
           "KAFKA_BROKER": f"127.0.0.1:{_closed_port()}"}
    done = _start_worker(env, tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-2000:]
    assert "DATABASE_URL" in output, output[-2000:]
    assert "127.0.0.1" in output
    assert password not in output
