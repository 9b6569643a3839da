"""The local PostgreSQL runner: a real server, reached with a real password,
run by an unprivileged account even when the tests run as root."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from willowe_tasks.testing.localpostgres import (
    LocalPostgres,
    PortTaken,
    PostgresNotInstalled,
    PostgresNotReady,
    Status,
    find_server_bindir,
)

ROOT = Path(__file__).resolve().parents[1]
AS_ROOT = os.geteuid() == 0


@pytest.fixture
def private_postgres(unused_tcp_port: int) -> Iterator[LocalPostgres]:
    """A second server with a home of its own, on a free port; not started.
    Its home is in the temp folder, which the server's account can reach
    (pytest's tmp_path is private to root)."""
    home = Path(tempfile.mkdtemp(prefix="willowe-localpostgres-test-"))
    home.chmod(0o755)
    server = LocalPostgres(home, port=unused_tcp_port)
    yield server
    server.stop()
    shutil.rmtree(home, ignore_errors=True)


def server_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def test_the_server_runs_as_an_unprivileged_account(local_postgres: LocalPostgres) -> None:
    pid = local_postgres.pid()
    assert pid is not None
    expected = pwd.getpwnam("postgres").pw_uid if AS_ROOT else os.getuid()
    assert server_uid(pid) == expected != 0
    # It listens on loopback only, and its unix socket is in a folder of its own.
    with psycopg.connect(local_postgres.url) as conn:
        listen, socket_dir = conn.execute(
            "SELECT current_setting('listen_addresses'), "
            "current_setting('unix_socket_directories')").fetchone() or ("", "")
    assert listen == "127.0.0.1"
    folder = os.stat(socket_dir)
    assert stat.S_IMODE(folder.st_mode) == 0o700
    assert folder.st_uid == expected


def test_the_password_lets_in_a_superuser_and_a_wrong_one_is_refused(
    local_postgres: LocalPostgres,
) -> None:
    password_file = local_postgres.password_file
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    password = password_file.read_text().strip()
    assert len(password) >= 24
    assert password in local_postgres.url

    with psycopg.connect(local_postgres.url) as conn:
        role, superuser = conn.execute(
            "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone() or ("", False)
        stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = current_user"
                              ).fetchone()
        methods = {row[0] for row in conn.execute("SELECT auth_method FROM pg_hba_file_rules")}
    assert (role, superuser) == ("willowe", True)
    assert stored is not None and stored[0].startswith("SCRAM-SHA-256$")
    assert methods == {"scram-sha-256"}

    wrong = local_postgres.url.replace(password, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=5)
    # The password never shows in the server's repr.
    assert password not in repr(local_postgres)


def test_a_fresh_database_is_empty_and_apart_from_the_others(
    local_postgres: LocalPostgres, postgres_database_url: str,
) -> None:
    # Given a table in the test's own database
    with psycopg.connect(postgres_database_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                              ).fetchone()
        conn.execute("CREATE TABLE devices (token text PRIMARY KEY)")
    assert tables == (0,)
    # When another database is created, it does not see that table
    other_url = local_postgres.create_database("test_fresh_database_other")
    other = psycopg.connect(other_url, autocommit=True)
    try:
        assert other.execute("SELECT to_regclass('devices')").fetchone() == (None,)
        # Then dropping it ends even the sessions still connected to it
        local_postgres.drop_database("test_fresh_database_other")
        with pytest.raises(psycopg.OperationalError):
            other.execute("SELECT 1")
        with psycopg.connect(local_postgres.url) as conn:
            left = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                                ("test_fresh_database_other",)).fetchone()
        assert left == (0,)
    finally:
        other.close()
        local_postgres.drop_database("test_fresh_database_other")


@pytest.mark.parametrize("name", ["", "Upper", "1st", "semi;colon", "x" * 64])
def test_a_bad_database_name_is_refused_before_reaching_the_server(name: str) -> None:
    server = LocalPostgres(Path("/nonexistent"), port=1)
    with pytest.raises(ValueError, match="database name"):
        server.create_database(name)


def test_stop_then_start_keeps_the_data(private_postgres: LocalPostgres) -> None:
    assert private_postgres.status is Status.STOPPED
    assert private_postgres.start() is True
    # Starting again while it runs does nothing.
    assert private_postgres.start() is False
    with psycopg.connect(private_postgres.url) as conn:
        conn.execute("CREATE TABLE kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('still here')")
    socket_dir = Path(private_postgres.data_dir.joinpath("postmaster.pid").read_text()
                      .splitlines()[4])
    password = private_postgres.password_file.read_text()

    assert private_postgres.stop() is True
    assert private_postgres.status is Status.STOPPED
    assert private_postgres.pid() is None
    assert not private_postgres.answers()
    assert not socket_dir.exists()
    assert private_postgres.stop() is False

    assert private_postgres.start() is True
    assert private_postgres.password_file.read_text() == password
    with psycopg.connect(private_postgres.url) as conn:
        assert conn.execute("SELECT note FROM kept").fetchall() == [("still here",)]


def test_a_port_held_by_another_program_is_a_clear_error(
    private_postgres: LocalPostgres,
) -> None:
    with socket.create_server(("127.0.0.1", private_postgres.port)):
        assert private_postgres.status is Status.PORT_TAKEN
        with pytest.raises(PortTaken, match=f"port {private_postgres.port} on 127.0.0.1"):
            private_postgres.start()
    # Nothing was made before the check.
    assert not private_postgres.data_dir.exists()


def test_another_homes_server_on_the_port_is_a_clear_error(
    local_postgres: LocalPostgres, private_postgres: LocalPostgres,
) -> None:
    intruder = LocalPostgres(private_postgres.home, port=local_postgres.port)
    with pytest.raises(PortTaken, match="not the PostgreSQL of"):
        intruder.start()


def test_a_server_of_this_home_on_another_port_is_named(
    local_postgres: LocalPostgres, unused_tcp_port: int,
) -> None:
    elsewhere = LocalPostgres(local_postgres.home, port=unused_tcp_port)
    assert elsewhere.status is Status.RUNNING_ON_OTHER_PORT
    with pytest.raises(PostgresNotReady, match=f"already runs on port {local_postgres.port}"):
        elsewhere.start()


@pytest.mark.skipif(not AS_ROOT, reason="only root hands the server to another account")
def test_a_home_the_server_account_cannot_reach_is_a_clear_error(unused_tcp_port: int) -> None:
    closed = Path(tempfile.mkdtemp(prefix="willowe-closed-"))  # mode 0700, root's
    try:
        server = LocalPostgres(closed / "home", port=unused_tcp_port)
        assert not server.server_can_reach_home()
        with pytest.raises(PostgresNotReady, match="cannot get into"):
            server.start()
    finally:
        shutil.rmtree(closed)


def test_missing_server_binaries_say_how_to_install_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given no Debian folder of binaries, and neither pg_config nor initdb on PATH
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PostgresNotInstalled, match="apt-get install postgresql"):
        find_server_bindir(debian_glob=str(tmp_path / "*" / "bin"))


def test_a_cluster_gets_the_binaries_of_its_own_version(local_postgres: LocalPostgres) -> None:
    version = (local_postgres.data_dir / "PG_VERSION").read_text().strip()
    bindir = find_server_bindir(version)
    said = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True,
                          text=True, check=True).stdout
    assert f"(PostgreSQL) {version}." in said
    with pytest.raises(PostgresNotInstalled, match="PostgreSQL 7,.*postgresql-7"):
        find_server_bindir("7")


def test_the_command_line_starts_reports_and_stops(private_postgres: LocalPostgres) -> None:
    def cli(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "willowe_tasks.testing.localpostgres",
             "--home", str(private_postgres.home), "--port", str(private_postgres.port),
             *command],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )

    started = cli("start")
    assert started.returncode == 0, started.stderr
    status = cli("status")
    assert status.returncode == 0
    assert f"answers on 127.0.0.1:{private_postgres.port}" in status.stdout
    url = cli("url").stdout.strip()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("willowe",)
    password = private_postgres.password_file.read_text().strip()
    assert password not in started.stdout + started.stderr + status.stdout + status.stderr

    assert cli("stop").returncode == 0
    stopped = cli("status")
    assert stopped.returncode == 1
    assert "does not answer" in stopped.stdout


def test_the_testing_package_does_not_load_the_database_driver() -> None:
    # willowe_tasks.testing is imported by every test of the fakes; the
    # PostgreSQL runner is imported by its own path only.
    loaded = subprocess.run(
        [sys.executable, "-c",
         "import sys, willowe_tasks.testing; print(sorted(m for m in sys.modules "
         "if m.startswith(('psycopg', 'willowe_tasks.testing.localpostgres'))))"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=True,
    )
    assert loaded.stdout.strip() == "[]"
