"""``make demo KAFKA_SECURE=1``: the demo's whole path (send as web, work as
worker, push to the fakes) over SASL_SSL with message bodies encrypted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from security_support import read_records
from support import revoke_application_acls

from broker.dead_letters import header_dict
from broker.localkafka.secure import SecureLocalKafka
from willowe_tasks.audit import read_trail

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_demo_delivers_every_example_over_sasl_ssl_with_encryption_on(
    secure_kafka: SecureLocalKafka,
) -> None:
    try:
        result = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "demo.py"), "--secure",
             str(secure_kafka.home)],
            env={**os.environ, "KAFKA_BROKER": secure_kafka.bootstrap_servers},
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )
    finally:
        revoke_application_acls(secure_kafka)  # the demo applied the ACL table
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "sending as 'web', working as 'worker', message bodies encrypted" in out
    assert "OK: 5/5 pushes delivered, 1 analytics event(s)." in out
    assert "Анна, 25" in out and "Мария, 28" in out and "Новое сообщение" in out
    # What went through Kafka was sealed.
    options = {"bootstrap_servers": secure_kafka.bootstrap_servers,
               **secure_kafka.client_options("admin")}
    records = read_records(options, "high-priority-notifications")
    assert records and all(header_dict(r.headers)["x-payload-encoding"] == "zstd,aes-256-gcm"
                           for r in records)
    # The workers' starts and stops are in the demo's trail, as worker.
    entries = read_trail(ROOT / ".cache" / "demo" / "audit.jsonl")
    started = [e for e in entries if e["what"] == "worker.start"]
    assert len(started) == 2 and all(e["who"]["principal"] == "User:worker" for e in started)
