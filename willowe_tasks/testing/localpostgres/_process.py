"""The running server as the operating system sees it: the pid file it keeps
in its data folder, whether that pid still lives, and shutting it down."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import NamedTuple

__all__ = ["RunningServer", "listens", "read_pid_file", "shut_down"]

#: How often waits look again.
_POLL_INTERVAL_S = 0.1


class RunningServer(NamedTuple):
    pid: int
    port: int
    socket_dir: Path


def read_pid_file(data_dir: Path) -> RunningServer | None:
    """The server running on ``data_dir``, if any."""
    # postmaster.pid: pid, data folder, start time, port, socket folder, ...
    # (storage-file-layout.html); it outlives a killed server, so check the pid.
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        running = RunningServer(int(lines[0]), int(lines[3]), Path(lines[4]))
    except (OSError, ValueError, IndexError):
        return None
    return running if _is_postgres(running.pid) else None


def shut_down(pid: int, timeout_s: float) -> bool:
    """Stop the server; return True for a clean (fast) shutdown, False when it
    had to be stopped immediately."""
    # SIGINT is a fast shutdown (sessions are ended, data is written out);
    # SIGQUIT an immediate one, recovered from at the next start
    # (server-shutdown.html).
    os.kill(pid, signal.SIGINT)
    if _wait_gone(pid, timeout_s):
        return True
    os.kill(pid, signal.SIGQUIT)
    if not _wait_gone(pid, timeout_s):
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, timeout_s)
    return False


def listens(host: str, port: int) -> bool:
    """Whether anything accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _is_postgres(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        # A pid left in the file may have been reused by another program.
        return b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except ProcessLookupError:
        return False
    except OSError:
        return True  # alive, but /proc is closed to us: trust the pid file


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _is_postgres(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_INTERVAL_S)
    return True
