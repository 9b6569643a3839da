"""Reading compose.yaml the way ``docker compose`` does, for the tests that
check it and the one that runs its worker without Docker: a service's
environment with the ``${VAR:-default}`` / ``${VAR:?error}`` interpolation
applied from given values (what .env would hold)."""

from __future__ import annotations

import functools
import os
import pwd
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

COMPOSE = Path(__file__).resolve().parents[1] / "compose.yaml"

#: ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}``, ``${NAME:?error}``, ``${NAME?error}``.
_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")

#: The account the image runs as (Dockerfile: USER nobody).
IMAGE_USER = "nobody"


class MissingVariable(KeyError):
    """A ``${VAR:?…}`` compose insists on has no value."""


def load() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def interpolate(text: str, values: Mapping[str, str]) -> str:
    """``text`` with compose's variable forms replaced from ``values``."""

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match.group("name"), match.group("op"), match.group("arg") or ""
        value = values.get(name)
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":?", "?") and empty:
            raise MissingVariable(f"{name}: {arg}")
        if op in (":-", "-") and empty:
            return arg
        return value or ""

    return _VARIABLE.sub(replace, text)


def service_environment(service: str, values: Mapping[str, str]) -> dict[str, str]:
    """The ``environment`` compose gives ``service`` (anchors merged), interpolated."""
    env = load()["services"][service]["environment"]
    return {name: interpolate(str(value), values) for name, value in env.items()}


def volume_targets(service: str) -> list[str]:
    """Where ``service``'s volumes are mounted in the container."""
    return [str(v).split(":")[1] for v in load()["services"][service].get("volumes", [])]


def moved_to(url: str, *, host: str, port: int, database: str) -> str:
    """A compose ``postgresql://`` URL pointed at another server and database,
    its user and password kept."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{credentials}@{host}:{port}", path=f"/{database}"))


def unprivileged_account() -> pwd.struct_passwd | None:
    """As root, the image's account to run as; otherwise None (run as ourselves,
    who are unprivileged already)."""
    return pwd.getpwnam(IMAGE_USER) if os.geteuid() == 0 else None


def as_user(account: pwd.struct_passwd | None, command: Sequence[str]) -> list[str]:
    """``command`` run as ``account`` (None: as ourselves), with no supplementary
    groups, through util-linux's setpriv.

    An image's user can read its interpreter; here the interpreter may sit
    where ``nobody`` can't even look (a pyenv under /root, mode 0700). Then,
    and only then, the command keeps one capability, CAP_DAC_READ_SEARCH: it
    may read any file, but writes only where ``nobody`` may, which is what
    the run checks."""
    if account is None:
        return list(command)
    prefix = ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}",
              "--clear-groups"]
    if not _interpreter_readable_by(account.pw_uid):
        prefix += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    return [*prefix, "--", *command]


@functools.cache
def _interpreter_readable_by(uid: int) -> bool:
    account = pwd.getpwuid(uid)
    probe = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={account.pw_gid}",
                            "--clear-groups", "--", sys.executable, "-c", "import willowe_tasks"],
                           capture_output=True, timeout=120)
    return probe.returncode == 0
