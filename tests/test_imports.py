"""Importing the application has no side effects: no connection, no thread, no
HTTP/2, FCM or database client. A web app that imports the device registry, or
``python -m willowe_tasks topics``, pays for none of what a worker needs."""

from __future__ import annotations

import json
import os
import pkgutil
import socket
import subprocess
import sys
from pathlib import Path

import willowe_tasks

ROOT = Path(__file__).resolve().parents[1]

#: Modules that are the clients themselves (the push providers' HTTP clients,
#: the PostgreSQL stores and their migrations) and the testing fakes (HTTP
#: servers): importing those is asking for them. Everything else is imported
#: by the probe, and must load none of them.
CLIENT_MODULES = ("willowe_tasks.providers.apns.client", "willowe_tasks.providers.apns.auth",
                  "willowe_tasks.providers.fcm.client", "willowe_tasks.providers._loop",
                  "willowe_tasks.providers._curl",
                  "willowe_tasks.database", "willowe_tasks.ledger.postgres",
                  "willowe_tasks.registry.postgres", "willowe_tasks.quota.postgres",
                  "willowe_tasks.migrations",
                  "willowe_tasks.testing")

_PROBE = """
import json, socket, sys, threading
attempts = []
for name in ("connect", "connect_ex"):
    original = getattr(socket.socket, name)
    def spy(self, address, _original=original):
        attempts.append(repr(address))
        return _original(self, address)
    setattr(socket.socket, name, spy)
resolve = socket.getaddrinfo
def lookup(*args, **kwargs):
    attempts.append(repr(args[:2]))
    return resolve(*args, **kwargs)
socket.getaddrinfo = lookup
import importlib
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps({
    "threads": [t.name for t in threading.enumerate()],
    "attempts": attempts,
    "heavy": [m for m in ("pycurl", "httpx", "h2", "pyfcm", "requests", "google.auth",
                          "psycopg")
              if m in sys.modules],
}))
"""


def every_module() -> list[str]:
    names = ["willowe_tasks"]
    for info in pkgutil.walk_packages(willowe_tasks.__path__, "willowe_tasks."):
        if not info.name.startswith(CLIENT_MODULES):
            names.append(info.name)
    return names


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_importing_every_module_opens_nothing_starts_nothing_and_loads_no_client() -> None:
    modules = every_module()
    assert "willowe_tasks.registry.sqlite" in modules and "willowe_tasks.actors" in modules
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *modules],
        env={**os.environ, "KAFKA_BROKER": f"127.0.0.1:{closed_port()}"},
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.splitlines()[-1])
    assert seen["threads"] == ["MainThread"]
    assert seen["attempts"] == []
    assert seen["heavy"] == []
