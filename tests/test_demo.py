"""The README's first command: the demo delivers every example to the fake phones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from broker.topics import reconcile
from willowe_tasks.topics import ALL_TOPIC_SPECS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_demo_delivers_the_guides_examples_to_every_phone(
    kafka_bootstrap: str, admin: KafkaAdminClient
) -> None:
    reconcile(admin, ALL_TOPIC_SPECS)  # `make demo` runs `make topics` first
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        env={**os.environ, "KAFKA_BROKER": kafka_bootstrap},
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "OK: 5/5 pushes delivered, 1 analytics event(s)." in out
    assert "user123 ios" in out and "user123 android" in out and "user456 ios" in out
    assert "Анна, 25" in out and "Мария, 28" in out and "Новое сообщение" in out
    assert "analytics sink: user_login" in out
    assert "Workers stopped" in out
