"""A worker process killed mid-delivery and restarted pushes no notification
to a device twice, and loses none it had not already possibly pushed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from support import wait_until

from broker.topics import reconcile
from willowe_tasks.ledger import SQLiteLedger
from willowe_tasks.registry import SQLiteDeviceRegistry
from willowe_tasks.testing import FakeAPNs, FakeFCM, fake_provider_env, worker_command
from willowe_tasks.tokens import token_key
from willowe_tasks.topics import ALL_TOPIC_SPECS

ROOT = Path(__file__).resolve().parents[1]
IOS_TOKEN = "ef" * 32
ANDROID_TOKEN = "android-crash-test-token"
NOTIFICATIONS = 30


@pytest.fixture
def worker_env(kafka_bootstrap: str, tmp_path: Path) -> Iterator[tuple[dict[str, str], FakeAPNs,
                                                                        FakeFCM]]:
    # Slow providers, so the kill lands while pushes are in flight.
    with FakeAPNs(latency_s=0.2) as apns, FakeFCM(latency_s=0.2) as fcm:
        env = {
            **os.environ,
            "KAFKA_BROKER": kafka_bootstrap,
            "KAFKA_GROUP_ID": f"test-crash-{uuid.uuid4().hex[:8]}",
            # A short push timeout makes short ledger leases: a claim left by the
            # killed worker expires within seconds.
            "PUSH_TIMEOUT_S": "2",
            **fake_provider_env(apns, fcm, tmp_path),
        }
        yield env, apns, fcm


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [*worker_command(processes=1, threads=4), "--queues", "high-priority-notifications"],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )


@pytest.mark.slow
def test_a_worker_killed_mid_delivery_does_not_push_a_notification_twice(
    worker_env: tuple[dict[str, str], FakeAPNs, FakeFCM], tmp_path: Path, kafka_bootstrap: str,
) -> None:
    env, apns, fcm = worker_env
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    reconcile(admin, ALL_TOPIC_SPECS)
    admin.close()
    registry = SQLiteDeviceRegistry(env["DEVICE_REGISTRY_PATH"])
    registry.register("crash-user", "ios", IOS_TOKEN, apns.bundle_id)
    registry.register("crash-user", "android", ANDROID_TOKEN, "com.willowe.android")
    registry.close()

    # Given matches queued for a user with two phones (sent with the worker's settings)
    sender = subprocess.run(
        [sys.executable, "-c",
         "import sys; from willowe_tasks import broker, send_match\n"
         "ids = []\n"
         "with broker.batch():\n"
         f"    for i in range({NOTIFICATIONS}):\n"
         "        message = send_match.send('crash-user', {'name': 'Анна', 'age': 25})\n"
         "        ids.append(message.message_id)\n"
         "print('\\n'.join(ids))"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )
    sent = set(sender.stdout.split())
    assert len(sent) == NOTIFICATIONS

    def pushed() -> list[tuple[str, str]]:
        # Only this user's phones: a stray worker of another test that finds
        # its provider's port reused by these fakes must not count here.
        return ([(p.headers["apns-collapse-id"], "ios") for p in apns.delivered
                 if p.token == IOS_TOKEN]
                + [(p.json["message"]["android"]["notification"]["tag"], "android")
                   for p in fcm.delivered if p.json["message"].get("token") == ANDROID_TOKEN])

    # When the worker is killed with SIGKILL partway through
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    try:
        assert wait_until(lambda: len(pushed()) >= 10, 90), log.read_text()[-3000:]
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        killed_at = len(pushed())
        assert killed_at < 2 * NOTIFICATIONS, "the kill came too late to test anything"
        # and a new worker takes over
        worker = start_worker(env, log)
        ledger = SQLiteLedger(env["DELIVERY_LOG_PATH"])

        def settled() -> bool:
            done = {(n, t) for n in sent for t in ledger.delivered(n)}
            maybe = {(n, t) for n in sent for t in ledger.maybe_delivered(n)}
            return len(done | maybe) >= 2 * NOTIFICATIONS

        wait_until(settled, 120)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)

    # Then no phone got any notification twice
    counts = Counter(pushed())
    assert [pair for pair, n in counts.items() if n > 1] == []
    # and every (notification, phone) pair was pushed, or is recorded as
    # possibly pushed by the killed worker (the ledger's documented edge).
    keys = {token_key(IOS_TOKEN): "ios", token_key(ANDROID_TOKEN): "android"}
    maybe = {(n, keys[k]) for n in sent for k in ledger.maybe_delivered(n)}
    missing = {(n, p) for n in sent for p in ("ios", "android")} - set(counts) - maybe
    assert missing == set()
    assert set(n for n, _ in counts) <= sent
    ledger.close()
