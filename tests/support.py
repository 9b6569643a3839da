"""Small helpers any test may import (``from support import FakeClock``)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from broker.acls import reconcile_acls, user_principal
from broker.localkafka.secure import APP_USERS, SecureLocalKafka

#: The script a "web server" process runs (see its docstring).
WEB_PROCESS = Path(__file__).resolve().parent / "web_process.py"

#: Bound on waiting for a change made by hand to show in the broker's metadata, in seconds.
METADATA_WAIT_S = 30.0


class FakeClock:
    """Unix seconds that only move when a test says so."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_until(condition: Callable[[], object], timeout_s: float, *,
               interval_s: float = 0.05) -> bool:
    """Whether ``condition()`` came true within ``timeout_s`` (polled)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return bool(condition())


def config_of(admin: KafkaAdminClient, name: str, key: str) -> str:
    """A topic config's value as the broker answering sees it (defaults included)."""
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, {key: None})], config_filter="all"
    )
    return str(described["topic"][name][key]["value"])


def settle(read: Callable[[], object], expected: object) -> None:
    """Wait until ``read()`` returns ``expected``: the controller accepts an
    admin change before the broker's metadata shows it."""
    deadline = time.monotonic() + METADATA_WAIT_S
    while read() != expected:
        assert time.monotonic() < deadline, f"still {read()!r}, expected {expected!r}"
        time.sleep(0.05)


def run_web_process(env: Mapping[str, str], calls: list[list[object]], *,
                    timeout_s: float = 120.0) -> list[str]:
    """Run a separate web process, in a folder of its own with only ``env``,
    making ``calls`` (``[["register_device", [...]], ...]``); return what it
    printed, a line a call."""
    cwd = Path(tempfile.mkdtemp(prefix="willowe-web-"))
    try:
        done = subprocess.run([sys.executable, str(WEB_PROCESS)], input=json.dumps(calls),
                              cwd=cwd, env=dict(env), capture_output=True, text=True,
                              timeout=timeout_s)
    finally:
        shutil.rmtree(cwd, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


class Gate:
    """A TCP port on 127.0.0.1 that forwards to ``target`` while open and
    refuses connections while closed: Kafka "going away" for a client that
    bootstraps through it, without stopping the shared test Kafka. (Kafka
    advertises its own address, so only bootstrapping goes through the gate:
    a client that bootstraps finds the broker; one that can't, can't.)"""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self._server: socket.socket | None = None
        self._connections: list[socket.socket] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def open(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(16)
        server.settimeout(0.2)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in self._connections:
            conn.close()
        self._connections.clear()

    def _accept(self, server: socket.socket) -> None:
        while self._server is server:
            try:
                client, _ = server.accept()
            except OSError:  # the accept timed out, or the gate closed
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self._connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def revoke_application_acls(kafka: SecureLocalKafka) -> None:
    """Take every ACL of web, worker and operator on the secured Kafka away
    again: tests that applied the ACL table call it when done, since others
    expect those users to be refused."""
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers,
                             **kafka.client_options("admin"))
    try:
        reconcile_acls(admin, [], principals=[user_principal(u) for u in APP_USERS])
    finally:
        admin.close()
