"""The framework as a new user meets it: a module of their own with a
KafkaBroker and two actors, run by ``dramatiq``, as the README shows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from support import wait_until

from broker import KafkaBroker

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "own_tasks"

#: Bound on the example's work, in seconds.
WORK_TIMEOUT_S = 90.0


#: The example's queues: fixed names, as a user's would be.
QUEUES = ("default", "emails")


def empty_the_example_topics(bootstrap: str) -> None:
    """Earlier runs' messages stay on the example's topics, and a new group
    reads from the start: delete them so this run sees only its own."""
    broker = KafkaBroker(bootstrap_servers=bootstrap, create_topics=False)
    try:
        existing = set(broker.admin.list_topics())
        for queue in QUEUES:
            if {queue, f"{queue}.DQ", f"{queue}.XQ"} <= existing:
                broker.flush(queue)
    finally:
        broker.close()


@pytest.mark.slow
def test_own_tasks_run_retry_and_wait_their_delay(kafka_bootstrap: str, tmp_path: Path) -> None:
    output = tmp_path / "tasks.out"
    env = {**os.environ, "KAFKA_BROKER": kafka_bootstrap, "TASKS_OUTPUT": str(output),
           "TASKS_GROUP": f"tasks-{uuid.uuid4().hex[:8]}", "PYTHONPATH": str(EXAMPLE)}
    empty_the_example_topics(kafka_bootstrap)
    dramatiq_cli = Path(sys.executable).with_name("dramatiq")
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen([str(dramatiq_cli), "tasks", "--processes", "1",
                                   "--threads", "2"], cwd=EXAMPLE, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        sent_at = time.time()
        subprocess.run(
            [sys.executable, "-c",
             "from tasks import resize_photo, send_welcome_email\n"
             "resize_photo.send('photo-42')\n"
             "send_welcome_email.send_with_options(args=('user-7',), delay=2000)\n"],
            cwd=EXAMPLE, env=env, check=True, timeout=60)
        assert wait_until(lambda: output.exists() and len(output.read_text().splitlines()) == 2,
                          WORK_TIMEOUT_S), log.read_text()[-3000:]
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
    done = dict(line.split(" ", 1)[::-1] for line in output.read_text().splitlines())
    assert set(done) == {"resized photo-42", "emailed user-7 after 2 attempts"}
    # The delayed email ran no sooner than its delay, and once, after a retry
    assert float(done["emailed user-7 after 2 attempts"]) >= sent_at + 2.0
    # The topics the README promises were made, each with its .DQ and .XQ
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        topics = set(admin.list_topics())
        partitions = {t["name"]: len(t["partitions"])
                      for t in admin.describe_topics(["default", "emails"])}
    finally:
        admin.close()
    assert {"default", "default.DQ", "default.XQ", "emails", "emails.DQ", "emails.XQ"} <= topics
    assert partitions == {"default": 3, "emails": 3}
    # A quiet start: no warnings a newcomer reads as trouble
    assert "No partition metadata" not in log.read_text()
