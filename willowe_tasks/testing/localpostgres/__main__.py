"""Command line for the local PostgreSQL:
``python -m willowe_tasks.testing.localpostgres --help``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg

from willowe_tasks.testing.localpostgres import (
    DEFAULT_PORT,
    LocalPostgres,
    PostgresNotReady,
    Status,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m willowe_tasks.testing.localpostgres",
        description="Run a local PostgreSQL server from the machine's own binaries, "
                    "on 127.0.0.1 with a generated password.",
    )
    parser.add_argument("--home", type=Path, default=Path(".cache/postgres"),
                        help="folder for the data, log and password (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="TCP port (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("start", help="create the cluster once, start the server unless it answers")
    sub.add_parser("stop", help="stop the server of this home (data is kept)")
    sub.add_parser("status", help="say whether the server answers; exit 1 if not")
    sub.add_parser("url", help="print the server's postgresql:// URL (it holds the password)")
    args = parser.parse_args(argv)

    server = LocalPostgres(args.home.resolve(), port=args.port, host=args.host)
    try:
        if args.command == "start":
            server.start()
        elif args.command == "stop":
            server.stop()
        elif args.command == "status":
            return _print_status(server)
        elif args.command == "url":
            print(server.url)
    except (PostgresNotReady, ValueError, psycopg.Error) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _print_status(server: LocalPostgres) -> int:
    status = server.status
    where = f"{server.host}:{server.port}"
    if status is Status.RUNNING and server.answers():
        print(f"PostgreSQL answers on {where} (pid {server.pid()}, database {server.database}, "
              f"log {server.log_file})")
        return 0
    if status is Status.RUNNING_ON_OTHER_PORT:
        print(f"PostgreSQL of {server.home} runs on port {server.running_port}, not {server.port}")
    elif status is Status.PORT_TAKEN:
        print(f"port {server.port} on {server.host} is taken by something that is not the "
              f"PostgreSQL of {server.home}")
    else:
        print(f"PostgreSQL does not answer on {where}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
