"""What the machine provides the local PostgreSQL: the server binaries, and
the account to run them as (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from willowe_tasks.testing.localpostgres._errors import PostgresNotInstalled

__all__ = ["DEBIAN_BINDIR_GLOB", "ROOT_SERVER_ACCOUNT", "find_server_bindir", "hand_over",
           "run_as", "server_account"]

#: Where Debian's packages put each major version's server binaries.
DEBIAN_BINDIR_GLOB = "/usr/lib/postgresql/*/bin"

#: The account that runs the server when we are root; Debian's package creates it.
ROOT_SERVER_ACCOUNT = "postgres"

_INSTALL_HINT = "install the server with: apt-get install postgresql"

_SERVER_TOOLS = ("initdb", "pg_ctl", "postgres")


def find_server_bindir(version: str | None = None,
                       debian_glob: str = DEBIAN_BINDIR_GLOB) -> Path:
    """The folder of PostgreSQL's server binaries (initdb, pg_ctl, postgres):
    the newest of Debian's, else ``pg_config --bindir``, else ``initdb`` on PATH.
    With ``version`` (a cluster's PG_VERSION), only that major version will do."""
    found = sorted((Path(d) for d in glob.glob(debian_glob)),
                   key=lambda d: _version_key(d.parent.name), reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        asked = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if asked.returncode == 0:
            found.append(Path(asked.stdout.strip()))
    initdb = shutil.which("initdb")
    if initdb is not None:
        found.append(Path(initdb).resolve().parent)
    complete = [d for d in found if all((d / tool).is_file() for tool in _SERVER_TOOLS)]
    for bindir in complete:
        if version is None or _major_version(bindir) == version:
            return bindir
    if version is not None and complete:
        raise PostgresNotInstalled(
            f"the cluster was made by PostgreSQL {version}, whose server binaries are not "
            f"installed; install them with: apt-get install postgresql-{version}")
    raise PostgresNotInstalled(
        f"PostgreSQL's server binaries ({', '.join(_SERVER_TOOLS)}) are not in "
        f"{debian_glob}, pg_config --bindir or PATH; {_INSTALL_HINT}")


def server_account() -> pwd.struct_passwd | None:
    """The account to run the server as, or None for this process's own."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(ROOT_SERVER_ACCOUNT)
    except KeyError:
        raise PostgresNotInstalled(
            f"PostgreSQL refuses to run as root, and there is no {ROOT_SERVER_ACCOUNT!r} "
            f"account to run it as; {_INSTALL_HINT} (which creates it)") from None


def run_as(account: pwd.struct_passwd | None, command: Sequence[str],
           cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as ``account`` (None: as ourselves), capturing its output."""
    if account is None:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    # extra_groups=[] drops root's supplementary groups as well.
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                          user=account.pw_uid, group=account.pw_gid, extra_groups=[])


def hand_over(path: Path, account: pwd.struct_passwd | None) -> None:
    """Give ``path`` to the account that runs the server."""
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)


def _major_version(bindir: Path) -> str:
    # "pg_ctl (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" -> "15"
    said = subprocess.run([str(bindir / "pg_ctl"), "--version"], capture_output=True, text=True)
    match = re.search(r"\) (\d+)", said.stdout)
    return match.group(1) if match else ""


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name))
