"""The dashboard as a command and as compose's service: it listens on the
loopback unless told otherwise, and compose publishes it there only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
from compose_support import load, service_environment
from support import wait_until

from willowe_tasks.settings import Settings

#: How long the command may take to start answering, seconds.
START_TIMEOUT_S = 60.0


def test_the_dashboard_command_listens_on_the_loopback_by_default(
    kafka_bootstrap: str, tmp_path: Path, free_ports: Callable[[int], list[int]]
) -> None:
    port = free_ports(1)[0]
    env = {**os.environ, "KAFKA_BROKER": kafka_bootstrap,
           "OPS_AUDIT_LOG_PATH": str(tmp_path / "audit.jsonl"),
           "DLQ_REPLAY_LOG_PATH": str(tmp_path / "replays.sqlite3")}
    env.pop("DASHBOARD_HOST", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "willowe_tasks", "dashboard", "--port", str(port)],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def answers() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).text == "ok"
            except httpx.HTTPError:
                return False

        assert wait_until(answers, START_TIMEOUT_S, interval_s=0.2), "the dashboard never answered"
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=30)
        assert page.status_code == 200 and "Lag per priority" in page.text
        # Bound to 127.0.0.1, not to every address of the machine
        assert _listening_addresses(port) == [f"127.0.0.1:{port}"]
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert f"Dashboard on http://127.0.0.1:{port}/" in output
    assert "read-only" in output


def _listening_addresses(port: int) -> list[str]:
    """The local addresses listening on ``port``, from the kernel's table."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # 0A: LISTEN
            found.append(f"{socket.inet_ntoa(bytes.fromhex(address)[::-1])}:{port}")
    for line in Path("/proc/net/tcp6").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if int(local.split(":")[1], 16) == port and state == "0A":
            found.append(f"[ipv6]:{port}")
    return found


def test_compose_runs_the_dashboard_on_the_hosts_loopback_only() -> None:
    dashboard = load()["services"]["dashboard"]
    assert dashboard["command"][:4] == ["python", "-m", "willowe_tasks", "dashboard"]
    assert all(str(p).startswith("127.0.0.1:") for p in dashboard["ports"])
    env = service_environment("dashboard", {})
    known = {name.upper() for name in Settings.model_fields}
    assert set(env) <= known, set(env) - known
    assert env["KAFKA_BROKER"] == "kafka:9092"
    # Where it writes is the volume the image lets `nobody` write to
    assert env["OPS_AUDIT_LOG_PATH"].startswith("/var/lib/willowe/")
    assert env["DLQ_REPLAY_LOG_PATH"].startswith("/var/lib/willowe/")
    assert "ops-data:/var/lib/willowe" in dashboard["volumes"]
    assert dashboard["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_the_console_script_is_the_operator_commands(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("willowe")
    result = subprocess.run([str(script), "dlq", "replay", "--rate", "0"], capture_output=True,
                            text=True, timeout=60, cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert "--rate" in result.stderr and "above 0" in result.stderr
