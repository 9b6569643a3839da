"""Small helpers any test may import (``from support import FakeClock``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

#: The script a "web server" process runs (see its docstring).
WEB_PROCESS = Path(__file__).resolve().parent / "web_process.py"


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
