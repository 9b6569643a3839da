"""The JVMs a local Kafka runs: waiting for them to be ready, stopping them,
and telling a live process from a dead one or a zombie."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

#: Pause between two readiness checks while a broker starts, in seconds.
READY_POLL_INTERVAL_S = 0.5


class KafkaNotReady(RuntimeError):
    """The local broker did not start, or did not answer in time."""


class _Logged(Protocol):
    @property
    def log_file(self) -> Path: ...

    def log_tail(self, lines: int = 30) -> str: ...


def wait_until_ready(
    ready: Callable[[], bool],
    started: Sequence[tuple[_Logged, subprocess.Popen[bytes]]],
    timeout_s: float,
    what: str,
) -> None:
    """Wait until ``ready()`` while the JVMs just ``started`` live; raise
    KafkaNotReady (killing them) if one exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for kafka, proc in started:
            if proc.poll() is not None:
                raise KafkaNotReady(
                    f"Kafka exited with status {proc.returncode}; see {kafka.log_file}:\n"
                    + kafka.log_tail()
                )
        if ready():
            return
        time.sleep(READY_POLL_INTERVAL_S)
    for _, proc in started:
        proc.kill()
    logs = "\n".join(f"--- {kafka.log_file}\n{kafka.log_tail()}" for kafka, _ in started)
    raise KafkaNotReady(f"{what} was not ready within {timeout_s:.0f}s:\n{logs}")


def terminate(pids: Sequence[int], timeout_s: float) -> list[int]:
    """SIGTERM every pid at once, wait for all, SIGKILL those still alive after
    ``timeout_s``; return the ones that had to be killed."""
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.2)
    killed = [pid for pid in pids if alive(pid)]
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    return killed


def kill(pid: int, timeout_s: float = 10.0) -> None:
    """SIGKILL ``pid`` and wait until it is gone, as after a crash."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def split_host_port(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host.strip("[]") or "localhost", int(port or 9092)


def port_taken(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
