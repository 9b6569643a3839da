"""Runs one peer script in a subprocess and returns what it reported.

Every child runs in its own session, so killing its process group also ends
the children it spawned (senders). Children are tracked until they are gone;
:func:`kill_all` ends whatever is left, and the CLI calls it in ``finally``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.envs import ROOT
from bench.systems import System

#: Marks the result line a peer prints (see ``bench/peers/_common.py``).
RESULT_PREFIX = "BENCH-RESULT "

#: How often the worker's resident memory is read, in seconds.
RSS_INTERVAL_S = 0.25

#: How long a SIGTERM-ed process may take to stop before it is killed, in seconds.
GRACEFUL_STOP_S = 30.0

_live: set[subprocess.Popen[Any]] = set()
_live_lock = threading.Lock()


class PeerFailed(RuntimeError):
    """A peer script failed or overran; its measurement is skipped."""


class RssSampler:
    """Reads a process's VmRSS from /proc on a daemon thread."""

    def __init__(self, pid: int) -> None:
        self.samples: list[tuple[float, float]] = []  # (time.time(), MiB)
        self._pid = pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        status = Path(f"/proc/{self._pid}/status")
        while not self._stop.is_set():
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        kib = int(line.split()[1])
                        self.samples.append((time.time(), kib / 1024))
            except (OSError, ValueError):
                return  # the process is gone
            self._stop.wait(RSS_INTERVAL_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def run_peer(system: System, mode: str, params: dict[str, Any], *, timeout_s: float,
             log_file: Path, sample_rss: bool = False) -> tuple[dict[str, Any], RssSampler | None]:
    """Run ``system``'s script in ``mode``; return its result (and RSS samples)."""
    cmd = [str(system.python()), str(system.script_path), mode, json.dumps(params)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    with log_file.open("a") as err:
        err.write(f"\n=== {system.key} {mode} {json.dumps(params)}\n")
        err.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT,
                                env=env, start_new_session=True)
    track(proc)
    sampler = RssSampler(proc.pid) if sample_rss else None
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise PeerFailed(f"{system.key} {mode} overran {timeout_s:.0f}s") from None
    finally:
        if sampler is not None:
            sampler.stop()
        kill(proc)
    for line in out.splitlines():
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX):])
            if "error" in result:
                raise PeerFailed(f"{system.key} {mode}: {result['error']} (see {log_file})")
            return result, sampler
    raise PeerFailed(f"{system.key} {mode} exited {proc.returncode} without a result "
                     f"(see {log_file})")


def track(proc: subprocess.Popen[Any]) -> None:
    """Have :func:`kill_all` end ``proc`` (and its session) on the way out."""
    with _live_lock:
        _live.add(proc)


def kill(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL the process and its session, as a crash or an OOM kill would:
    a session may hold children (senders, Dramatiq's worker processes) even
    after its leader exited."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    with _live_lock:
        _live.discard(proc)


def start(cmd: Sequence[str], log: Path, env: dict[str, str] | None = None,
          cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session (so killing its group also ends any
    children, as Dramatiq's worker processes), in ``cwd``, output appended to ``log``."""
    with log.open("ab") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                env=env, start_new_session=True)
    track(proc)
    return proc


def terminate_all(procs: Sequence[subprocess.Popen[bytes]],
                  timeout_s: float = GRACEFUL_STOP_S) -> list[int | None]:
    """SIGTERM the processes at once (a graceful stop, as an orchestrator
    scaling down does); their exit codes, None for one that had to be killed
    after ``timeout_s``."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    codes: list[int | None] = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            codes.append(None)
        kill(proc)  # whatever is left of its group
    return codes


def kill_all() -> None:
    """End every process still running that this module started or was told
    to track (called on the way out, even on error)."""
    with _live_lock:
        left = list(_live)
    for proc in left:
        kill(proc)
