"""``make demo`` (``python examples/demo.py``): the whole product on the local
Kafka, against local fakes of APNs and FCM.

It registers demo devices, starts worker processes (``dramatiq
willowe_tasks``), sends the integration guide's examples, prints what each
phone received, in what order and how long after sending, then stops
everything it started. The topics are emptied first: the local Kafka is a
development box, and leftovers from earlier runs would be pushed too.

``--secure HOME`` (``make demo KAFKA_SECURE=1``) runs it on the secured
local Kafka whose folder is HOME, at ``KAFKA_BROKER``: as ``admin`` it sets
up the topics and the ACL table for the demo's group, the sender logs in as
``web`` and the workers as ``worker``, and message bodies are encrypted with
a throwaway key (``.cache/demo/payload.keys``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dramatiq
from kafka.errors import KafkaError

from broker.acls import reconcile_acls
from broker.encryption import KeyRing
from broker.localkafka.secure import SecureLocalKafka
from broker.topics import reconcile
from willowe_tasks.acls import acl_specs, managed_principals
from willowe_tasks.analytics import read_events
from willowe_tasks.app import App
from willowe_tasks.audit import read_trail
from willowe_tasks.kafka_clients import admin_client
from willowe_tasks.services import build_registry
from willowe_tasks.settings import Settings, load_settings, settings_from
from willowe_tasks.testing import (
    FakeAPNs,
    FakeFCM,
    ReceivedRequest,
    fake_provider_env,
    worker_command,
)
from willowe_tasks.tokens import token_hash
from willowe_tasks.topics import PRIORITY_TOPIC_NAMES, topic_specs

#: Demo phones: (user, platform, token, app id).
DEVICES = [
    ("user123", "ios", "a1" * 32, "com.willowe.app"),
    ("user123", "android", "demo-android-registration-token-user123", "com.willowe.android"),
    ("user456", "ios", "b2" * 32, "com.willowe.app"),
]

#: Pushes the examples should produce: match ×2 devices, like ×1, custom ×2.
EXPECTED_PUSHES = 5

#: Bounds on every wait of the demo.
WORKER_READY_TIMEOUT_S = 90.0
DELIVERY_TIMEOUT_S = 60.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--secure", type=Path, metavar="HOME",
                        help="run on the secured local Kafka kept in HOME (at KAFKA_BROKER)")
    args = parser.parse_args(argv)
    settings = load_settings()
    home = Path(".cache/demo").resolve()
    shutil.rmtree(home, ignore_errors=True)  # safe to run twice: a fresh registry and ledger
    home.mkdir(parents=True)
    group_id = f"demo-{int(time.time())}"
    with FakeAPNs() as apns, FakeFCM() as fcm:
        common = {"KAFKA_BROKER": settings.kafka_broker, "KAFKA_GROUP_ID": group_id,
                  "AUDIT_LOG_PATH": str(home / "audit.jsonl"),
                  **fake_provider_env(apns, fcm, home)}
        roles = _secure_roles(args.secure, settings, home) if args.secure else {}
        admin = settings_from({**common, **roles.get("admin", {})})
        env = {**os.environ, **common, **roles.get("worker", {})}
        # This process sends with the workers' settings (as the web app, when
        # secured), on an app of its own.
        app = App(settings_from({**common, **roles.get("web", {})}))
        _say(f"Fake APNs on {apns.url}, fake FCM on {fcm.url}")
        if args.secure:
            _set_up_secured_kafka(admin)
        _register_devices(app.settings)
        _empty_topics(admin)
        workers = _start_workers(env, home / "workers.log")
        try:
            _wait_for_workers(admin, group_id, workers)
            sent_at = _send_examples(app)
            _report(apns, fcm, sent_at, home / "analytics.jsonl")
        finally:
            _stop_workers(workers)
            app.close()
        _say(f"Audit trail: {len(read_trail(home / 'audit.jsonl'))} entries in "
             f"{home / 'audit.jsonl'}")
    return 0


def _secure_roles(kafka_home: Path, settings: Settings, home: Path) -> dict[str, dict[str, str]]:
    """Each role's settings on the secured Kafka: admin sets up, web sends,
    worker works; web and worker share a throwaway payload key."""
    host, _, port = settings.bootstrap_servers[0].rpartition(":")
    kafka = SecureLocalKafka(kafka_home.resolve(), host=host, port=int(port))
    keys = home / "payload.keys"
    keys.write_text(KeyRing((KeyRing.new_key(f"demo-{int(time.time())}"),)).render())
    keys.chmod(0o600)
    encrypted = {"PAYLOAD_KEYS_FILE": str(keys)}
    _say(f"Secured Kafka at {kafka.bootstrap_servers} (SASL_SSL, SCRAM-SHA-512): "
         "sending as 'web', working as 'worker', message bodies encrypted (AES-256-GCM).")
    return {"admin": kafka.client_env("admin"),
            "web": {**kafka.client_env("web"), **encrypted},
            "worker": {**kafka.client_env("worker"), **encrypted}}


def _set_up_secured_kafka(admin: Settings) -> None:
    """`make topics` and `python -m willowe_tasks acls`, for the demo's group."""
    client = admin_client(admin)
    try:
        reconcile(client, topic_specs(admin.audit_topic))
        report = reconcile_acls(client, acl_specs(admin),
                                principals=managed_principals(admin))
    finally:
        client.close()
    _say(f"Topics in place; ACL table applied for group {admin.kafka_group_id} "
         f"({len(report.changes)} change(s)).")


def _register_devices(settings: Settings) -> None:
    """Into the workers' registry: SQLite under .cache/demo, or DATABASE_URL's."""
    registry = build_registry(settings)
    where = settings.database.target if settings.database else "SQLite"
    _say(f"Registry: {where}")
    for user_id, platform, token, app_id in DEVICES:
        registry.register(user_id, platform, token, app_id)
        _say(f"Registered {platform:<7} device {token_hash(token)} for {user_id}")
    registry.close()


def _empty_topics(admin: Settings) -> None:
    app = App(admin)
    try:
        for topic in PRIORITY_TOPIC_NAMES:
            app.broker.flush(topic)
    finally:
        app.close()
    _say("Emptied the notification topics of earlier runs.")


def _start_workers(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    command = worker_command(processes=2, threads=4)
    _say(f"Starting workers: {' '.join(command[1:])} (log: {log})")
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _wait_for_workers(settings: Settings, group_id: str,
                      workers: subprocess.Popen[bytes]) -> None:
    # Each of the two worker processes is one member, for all its topics.
    wanted = 2
    admin = admin_client(settings)
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if workers.poll() is not None:
                raise SystemExit(f"workers exited with status {workers.returncode}; "
                                 "see .cache/demo/workers.log")
            try:
                group = admin.describe_groups([group_id]).get(group_id, {})
            except KafkaError as e:
                # A fresh Kafka makes its offsets topic (the group coordinator)
                # on first use: retriable errors until then.
                if not e.retriable:
                    raise
                group = {}
            members = len(group.get("members", []))
            if group.get("group_state") == "Stable" and members >= wanted:
                _say(f"Workers ready: {members} worker processes in group {group_id}.")
                return
            time.sleep(0.5)
    finally:
        admin.close()
    raise SystemExit(f"workers did not join group {group_id} within "
                     f"{WORKER_READY_TIMEOUT_S:.0f}s; see .cache/demo/workers.log")


def _send_examples(app: App) -> dict[str, float]:
    """Send the guide's examples; return each message's send time by its id
    (the notification id every push of it carries)."""
    send_like, send_match = app.actors.send_like, app.actors.send_match
    send_notification, track_event = app.actors.send_notification, app.actors.track_event

    sent_at: dict[str, float] = {}

    def mark(label: str, send: Callable[[], dramatiq.Message]) -> None:
        started = time.time()
        sent_at[send().message_id] = started
        _say(f"Sent {label}")

    # The low-priority event goes first: priority, not order, decides who waits.
    mark("analytics user_login", lambda: track_event.send(
        "user_login", {"userId": "user123", "timestamp": int(time.time() * 1000)}))
    mark("match for user123 (Анна, 25)", lambda: send_match.send(
        "user123", {"name": "Анна", "age": 25, "photo_url": "https://example.com/photo.jpg"}))
    mark("like for user456 (Мария, 28)", lambda: send_like.send(
        "user456", {"name": "Мария", "age": 28}))
    mark("custom high «Новое сообщение»", lambda: send_notification.send(
        {"type": "custom-notification", "target_user_id": "user123",
         "title": "Новое сообщение", "body": "У вас новое сообщение"}, "high"))
    return sent_at


def _report(apns: FakeAPNs, fcm: FakeFCM, sent_at: dict[str, float], analytics: Path) -> None:
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    while time.monotonic() < deadline:
        if len(apns.delivered) + len(fcm.delivered) >= EXPECTED_PUSHES:
            break
        time.sleep(0.1)
    pushes = sorted(
        [("ios", p) for p in apns.delivered] + [("android", p) for p in fcm.delivered],
        key=lambda item: item[1].received_at,
    )
    print()
    print(f"{'#':>2}  {'phone':<24} {'title':<26} {'body':<24} {'after send':>10}")
    for n, (platform, push) in enumerate(pushes, 1):
        title, body, notification_id = _texts(platform, push)
        user = next((u for u, _, t, _ in DEVICES if t == push.token), "?")
        sent = sent_at.get(notification_id)
        after = f"{(push.received_at - sent) * 1000:.0f} ms" if sent is not None else "?"
        print(f"{n:>2}  {user + ' ' + platform:<24} {title:<26} {body:<24} {after:>10}")
    events = read_events(analytics) if analytics.exists() else []
    for event in events:
        print(f"    analytics sink: {event['event']} {event['properties']}")
    print()
    got = len(pushes)
    status = "OK" if got == EXPECTED_PUSHES and events else "INCOMPLETE"
    print(f"{status}: {got}/{EXPECTED_PUSHES} pushes delivered, {len(events)} analytics event(s).")
    if status != "OK":
        raise SystemExit(1)


def _texts(platform: str, push: ReceivedRequest) -> tuple[str, str, str]:
    if platform == "ios":
        alert = push.json["aps"]["alert"]
        return alert["title"], alert["body"], push.data.get("notification_id", "")
    notification = push.json["message"]["notification"]
    return notification["title"], notification["body"], push.data.get("notification_id", "")


def _stop_workers(workers: subprocess.Popen[bytes]) -> None:
    if workers.poll() is None:
        _say("Stopping workers …")
        os.killpg(workers.pid, signal.SIGTERM)
        try:
            workers.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(workers.pid, signal.SIGKILL)
            workers.wait(timeout=10)
    _say("Workers stopped; fakes stopped.")


def _say(text: str) -> None:
    print(text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
