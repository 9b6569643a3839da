"""A local PostgreSQL server for development and tests, run from the machine's
own server binaries (Debian's ``postgresql`` package). No Docker.

Everything it owns lives in one folder (the *home*)::

    home/data/        the cluster, made once by initdb; survives stop/start.
                      data/postmaster.pid holds the running server's pid and port
    home/server.log   what the server printed
    home/password     the superuser's generated password (mode 0600)

The server listens on ``host`` (127.0.0.1) only, its unix socket sits in a
private temporary folder, and every login needs the password (SCRAM-SHA-256),
so :attr:`LocalPostgres.url` looks like a production ``DATABASE_URL``.
PostgreSQL refuses to run as root: as root, the server runs as the
``postgres`` account that Debian's package creates, on a data folder it owns.

From code, as the test fixtures do::

    server = LocalPostgres(Path(".cache/postgres"), port=5433)
    server.start()
    url = server.create_database("scratch")

From the command line: ``python -m willowe_tasks.testing.localpostgres --help``.
Import this module by its path; ``willowe_tasks.testing`` does not load it.
"""

from __future__ import annotations

import enum
import os
import re
import secrets
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from pwd import struct_passwd
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from willowe_tasks.testing.localpostgres._errors import (
    PortTaken,
    PostgresNotInstalled,
    PostgresNotReady,
)
from willowe_tasks.testing.localpostgres._platform import (
    DEBIAN_BINDIR_GLOB,
    ROOT_SERVER_ACCOUNT,
    find_server_bindir,
    hand_over,
    run_as,
    server_account,
)
from willowe_tasks.testing.localpostgres._process import listens, read_pid_file, shut_down

__all__ = [
    "DEFAULT_PORT",
    "DEBIAN_BINDIR_GLOB",
    "LocalPostgres",
    "PortTaken",
    "PostgresNotInstalled",
    "PostgresNotReady",
    "Status",
    "find_server_bindir",
]

#: The development server's port: one above PostgreSQL's own 5432, so a
#: system-wide server can run beside it.
DEFAULT_PORT = 5433

#: The superuser role and the database the URL names.
DEFAULT_ROLE = "willowe"
DEFAULT_DATABASE = "willowe"

#: How long ``start`` waits for the server to accept connections.
DEFAULT_START_TIMEOUT_S = 60.0

#: How long ``stop`` waits for a fast shutdown before an immediate one.
DEFAULT_STOP_TIMEOUT_S = 30.0

#: libpq's connect_timeout is whole seconds, and "the minimum allowed timeout
#: is 2 seconds" (libpq-connect.html, connect_timeout).
CONNECT_TIMEOUT_S = 2

#: Identifiers longer than this are silently truncated: "NAMEDATALEN is 64 so
#: the maximum identifier length is 63 bytes" (sql-syntax-lexical.html).
MAX_IDENTIFIER_BYTES = 63

#: Socket folders made by ``start`` carry this prefix, so ``stop`` removes only its own.
SOCKET_DIR_PREFIX = "willowe-postgres-"

#: Database names this module makes: plain lower-case identifiers, usable unquoted in psql.
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]*")


class Status(enum.Enum):
    STOPPED = "stopped"
    #: This home's server runs on the port asked for.
    RUNNING = "running"
    #: This home's server runs, but on another port (see ``running_port``).
    RUNNING_ON_OTHER_PORT = "running on another port"
    #: This home's server is down and something else listens on the port.
    PORT_TAKEN = "port taken"


@dataclass(frozen=True)
class LocalPostgres:
    """A PostgreSQL cluster living in ``home``, served on ``host:port``."""

    home: Path
    port: int = DEFAULT_PORT
    host: str = "127.0.0.1"
    role: str = DEFAULT_ROLE
    database: str = DEFAULT_DATABASE

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    @property
    def password_file(self) -> Path:
        return self.home / "password"

    @property
    def url(self) -> str:
        """``postgresql://role:password@host:port/database``; it holds the password."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        """The URL of another database on this server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (f"postgresql://{quote(self.role, safe='')}:{quote(self._password(), safe='')}"
                f"@{host}:{self.port}/{quote(database, safe='')}")

    # -- state -------------------------------------------------------------

    def pid(self) -> int | None:
        """The pid of this home's running server, if any."""
        running = read_pid_file(self.data_dir)
        return running.pid if running else None

    @property
    def running_port(self) -> int | None:
        """The port this home's server listens on, if it runs."""
        running = read_pid_file(self.data_dir)
        return running.port if running else None

    @property
    def status(self) -> Status:
        running = read_pid_file(self.data_dir)
        if running is not None:
            return Status.RUNNING if running.port == self.port else Status.RUNNING_ON_OTHER_PORT
        return Status.PORT_TAKEN if listens(self.host, self.port) else Status.STOPPED

    def answers(self) -> bool:
        """Whether the server at our address accepts this home's login."""
        if not self.password_file.exists() or not listens(self.host, self.port):
            return False
        try:
            with self._maintenance_connection() as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def server_can_reach_home(self) -> bool:
        """Whether the account that runs the server can get into ``home``
        (as root, every folder above it must let ``postgres`` through)."""
        account = server_account()
        if account is None:
            return True
        folder = self.home.absolute()
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        return run_as(account, ["test", "-x", str(folder)]).returncode == 0

    # -- lifecycle ---------------------------------------------------------

    def start(self, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> bool:
        """Make the cluster once (initdb), start the server and wait until it
        accepts the login; return whether it started one (False when it runs)."""
        status = self.status
        if status is Status.RUNNING:
            if not self.answers():
                raise PostgresNotReady(
                    f"this home's PostgreSQL runs (pid {self.pid()}) but does not accept its "
                    f"login on {self.host}:{self.port}; see {self.log_file}")
            _say(f"PostgreSQL already answers on {self.host}:{self.port}; nothing to do.")
            return False
        if status is Status.RUNNING_ON_OTHER_PORT:
            raise PostgresNotReady(
                f"this home's PostgreSQL already runs on port {self.running_port}, not "
                f"{self.port}; stop it first")
        if status is Status.PORT_TAKEN:
            raise PortTaken(
                f"port {self.port} on {self.host} is taken by something that is not the "
                f"PostgreSQL of {self.home}; stop it or pick another port")
        account = server_account()
        self.home.mkdir(parents=True, exist_ok=True)
        if not self.server_can_reach_home():
            raise PostgresNotReady(
                f"the {ROOT_SERVER_ACCOUNT!r} account that runs PostgreSQL cannot get into "
                f"{self.home}: a folder above it is closed to other users; use a home it can "
                "reach (for example under /tmp), or open those folders with chmod o+x")
        bindir = find_server_bindir(self._cluster_version())
        socket_dir = Path(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX))
        hand_over(socket_dir, account)
        try:
            self._init_once(bindir, socket_dir, account)
            self._launch(bindir, socket_dir, account, timeout_s)
        except BaseException:
            shutil.rmtree(socket_dir, ignore_errors=True)
            raise
        if not self.answers():
            raise PostgresNotReady(
                f"PostgreSQL started but does not accept this home's login on "
                f"{self.host}:{self.port}; see {self.log_file}")
        self._create_database_once()
        _say(f"PostgreSQL is up on {self.host}:{self.port} (database {self.database}, role "
             f"{self.role}); log: {self.log_file}")
        return True

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> bool:
        """Stop this home's server; return whether one was running."""
        running = read_pid_file(self.data_dir)
        if running is None:
            _say("Local PostgreSQL is not running.")
            return False
        _say(f"Stopping PostgreSQL (pid {running.pid}) …")
        if not shut_down(running.pid, timeout_s):
            _say(f"PostgreSQL did not stop within {timeout_s:.0f}s; it was stopped immediately "
                 "and will recover at its next start.")
        if running.socket_dir.name.startswith(SOCKET_DIR_PREFIX):
            shutil.rmtree(running.socket_dir, ignore_errors=True)
        _say("PostgreSQL stopped.")
        return True

    # -- databases ---------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(_valid_name(name)))
        with self._maintenance_connection() as conn:
            conn.execute(statement)
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending any session still connected to it."""
        # WITH (FORCE), since PostgreSQL 13, ends the sessions a test left open
        # (sql-dropdatabase.html).
        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(_valid_name(name)))
        with self._maintenance_connection() as conn:
            conn.execute(statement)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return _tail(self.log_file.read_text(errors="replace"), lines)
        except FileNotFoundError:
            return "(no log yet)"

    # -- internals -----------------------------------------------------------

    def _maintenance_connection(self) -> psycopg.Connection[TupleRow]:
        # CREATE/DROP DATABASE cannot run inside a transaction block.
        return psycopg.connect(self.url_for("postgres"), autocommit=True,
                               connect_timeout=CONNECT_TIMEOUT_S)

    def _password(self, create: bool = False) -> str:
        if create and not self.password_file.exists():
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(24) + "\n")
        try:
            return self.password_file.read_text().strip()
        except FileNotFoundError:
            raise PostgresNotReady(
                f"{self.password_file} does not exist yet: start the server once to make it"
            ) from None

    def _cluster_version(self) -> str | None:
        try:
            return (self.data_dir / "PG_VERSION").read_text().strip()
        except FileNotFoundError:
            return None

    def _init_once(self, bindir: Path, scratch: Path, account: struct_passwd | None) -> None:
        if self._cluster_version() is not None:
            if not self.password_file.exists():
                raise PostgresNotReady(
                    f"{self.data_dir} was made with a password that {self.password_file} no "
                    f"longer holds; remove {self.data_dir} to start afresh")
            return
        password = self._password(create=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        hand_over(self.data_dir, account)
        # initdb reads the password from a file; this copy lives in the private
        # socket folder, readable by the server's account only, for one command.
        password_copy = scratch / "password"
        fd = os.open(password_copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        hand_over(password_copy, account)
        _say(f"Creating a PostgreSQL cluster in {self.data_dir} …")
        try:
            made = run_as(account, [
                str(bindir / "initdb"), "--pgdata", str(self.data_dir),
                "--username", self.role, "--pwfile", str(password_copy),
                "--auth", "scram-sha-256", "--encoding", "UTF8", "--locale", "C",
                # A crash of the machine right after initdb may leave a broken
                # cluster; for a throwaway one that is worth the seconds saved.
                "--no-sync",
            ], cwd=self.home)
        finally:
            password_copy.unlink(missing_ok=True)
        if made.returncode != 0:
            raise PostgresNotReady(f"initdb failed with status {made.returncode}:\n"
                                   + _tail(made.stdout + made.stderr))

    def _launch(self, bindir: Path, socket_dir: Path, account: struct_passwd | None,
                timeout_s: float) -> None:
        self.log_file.touch()
        hand_over(self.log_file, account)
        options = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(socket_dir),
        }
        # pg_ctl hands -o to a shell, so each value is quoted for one.
        server_options = " ".join(f"-c {name}={shlex.quote(value)}"
                                  for name, value in options.items())
        _say(f"Starting PostgreSQL on {self.host}:{self.port} …")
        launched = run_as(account, [
            str(bindir / "pg_ctl"), "start", "--pgdata", str(self.data_dir),
            "--log", str(self.log_file), "--wait", "--timeout", str(max(1, int(timeout_s))),
            "--options", server_options,
        ], cwd=self.home)
        if launched.returncode != 0:
            # pg_ctl gives up waiting but leaves a slow server running.
            late = read_pid_file(self.data_dir)
            if late is not None:
                shut_down(late.pid, DEFAULT_STOP_TIMEOUT_S)
            raise PostgresNotReady(
                f"PostgreSQL did not start on {self.host}:{self.port} (pg_ctl status "
                f"{launched.returncode}); see {self.log_file}:\n" + self.log_tail())

    def _create_database_once(self) -> None:
        if self.database == "postgres":
            return
        with self._maintenance_connection() as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (self.database,)).fetchone()
        if exists is None:
            self.create_database(self.database)


def _valid_name(name: str) -> str:
    if not _DATABASE_NAME.fullmatch(name) or len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError(
            f"database name {name!r} must be lower-case letters, digits and underscores, "
            f"not starting with a digit, at most {MAX_IDENTIFIER_BYTES} bytes")
    return name


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


