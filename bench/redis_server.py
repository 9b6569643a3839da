"""A throwaway redis-server for the Dramatiq+Redis peer: Debian's package,
installed with apt-get if missing, started on a free 127.0.0.1 port with
persistence off (the broker's queues are all it holds), stopped at the end."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bench.log import say

#: How long apt-get may take to install redis-server, in seconds.
APT_TIMEOUT_S = 600

#: How long the server may take to answer PING after start, in seconds.
START_TIMEOUT_S = 20.0


class RedisUnavailable(RuntimeError):
    """redis-server could not be installed or started; the peer is skipped."""


def ensure_installed() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise RedisUnavailable("redis-server is missing and apt-get (as root) is not available")
    say("installing redis-server with apt-get …")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "redis-server"]):
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=APT_TIMEOUT_S, env=env)
        except (OSError, subprocess.SubprocessError) as e:
            raise RedisUnavailable(f"{' '.join(cmd)} failed: {e}") from None
    found = shutil.which("redis-server")
    if not found:
        raise RedisUnavailable("apt-get installed redis-server but it is not on PATH")
    return found


def version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for word in out.stdout.split():
        if word.startswith("v="):
            return word[2:]
    return out.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def running() -> Iterator[str]:
    """A started redis-server; yields its URL and always stops it."""
    binary = ensure_installed()
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", workdir, "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RedisUnavailable(f"redis-server on port {port} did not answer")
            time.sleep(0.1)
        say(f"redis-server {version(binary)} on 127.0.0.1:{port} (pid {proc.pid})")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
