"""Registering phones from a web server: the register_device and
unregister_device actors, sent from a process that shares nothing with the
workers but Kafka, applied by a worker to the PostgreSQL registry."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from kafka import KafkaAdminClient, KafkaProducer
from notification_support import HIGH, Rig, read_dead_letters
from support import run_web_process

from broker.topics import reconcile
from willowe_tasks import dispatch
from willowe_tasks.app import App
from willowe_tasks.database import PostgresDatabase
from willowe_tasks.ledger.postgres import PostgresLedger
from willowe_tasks.migrations import migrate
from willowe_tasks.registration import REGISTER_ACTOR, UNREGISTER_ACTOR
from willowe_tasks.registry import DeviceValidationError
from willowe_tasks.settings import settings_from
from willowe_tasks.testing import FakeAPNs, FakeFCM, fake_provider_env
from willowe_tasks.tokens import token_key
from willowe_tasks.topics import ALL_TOPIC_SPECS

ROOT = Path(__file__).resolve().parents[2]
IOS_TOKEN = "9f" * 32
#: Bound on every wait, in seconds.
WAIT_S = 60.0


@pytest.fixture
def postgres_app(kafka_bootstrap: str, fakes: tuple[FakeAPNs, FakeFCM],
                 postgres_database_url: str, tmp_path: Path) -> Iterator[Rig]:
    """Workers (in this process) on PostgreSQL and the test Kafka, delivering to the fakes."""
    apns, fcm = fakes
    apns.clear()
    fcm.clear()
    settings = settings_from({
        "KAFKA_BROKER": kafka_bootstrap,
        "KAFKA_GROUP_ID": f"test-registration-{uuid.uuid4().hex[:8]}",
        "DATABASE_URL": postgres_database_url,
        **fake_provider_env(apns, fcm, tmp_path),
    })
    assert settings.database is not None
    schema = PostgresDatabase(settings.database)
    migrate(schema)
    schema.close()
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    reconcile(admin, ALL_TOPIC_SPECS)
    admin.close()
    app = App(settings)
    app.broker.flush_all()
    dispatch.stats.clear()
    worker = dramatiq.Worker(app.broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        yield Rig(app, apns, fcm)
    finally:
        worker.stop()
        app.close()


def _web(bootstrap: str, calls: list[list[object]]) -> list[str]:
    """A separate web process, with the Kafka settings only, making ``calls``."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "KAFKA_BROKER": bootstrap}
    return run_web_process(env, calls)


def test_send_checks_a_registration_with_the_registrys_rules() -> None:
    # Nothing reaches Kafka here: a broker that could only fail to connect.
    app = App(settings_from({"KAFKA_BROKER": "127.0.0.1:1"}))
    register = app.actors.register_device
    # An iOS token is stored lower-case: the message carries it so.
    message = register.message("alice", "ios", IOS_TOKEN.upper(), "com.willowe.app")
    assert message.args == ("alice", "ios", IOS_TOKEN, "com.willowe.app")
    assert message.queue_name == HIGH
    # Keyed by the token's digest (never the token): one token's changes share
    # a partition, in the order they were sent.
    assert message.options["partition_key"] == token_key(IOS_TOKEN)
    unregister = app.actors.unregister_device.message(IOS_TOKEN.upper())
    assert unregister.options["partition_key"] == token_key(IOS_TOKEN)
    for args, field in [(("", "ios", IOS_TOKEN, "app"), "user_id"),
                        (("alice", "windows", IOS_TOKEN, "app"), "platform"),
                        (("alice", "ios", "not-hex", "app"), "token"),
                        (("alice", "ios", IOS_TOKEN, "app id"), "app_id")]:
        with pytest.raises(DeviceValidationError) as raised:
            register.send(*args)
        assert raised.value.field == field
    with pytest.raises(DeviceValidationError, match="^token: "):
        app.actors.unregister_device.send("")
    with pytest.raises(TypeError, match="missing"):
        register.send("alice", "ios", IOS_TOKEN)
    app.close()


def test_a_web_process_registers_moves_and_unregisters_a_phone(postgres_app: Rig,
                                                               kafka_bootstrap: str) -> None:
    registry = postgres_app.services.registry
    # A phone signs in as alice, then as bob: the token moves.
    said = _web(kafka_bootstrap, [
        ["register_device", ["alice", "ios", IOS_TOKEN.upper(), postgres_app.apns.bundle_id]]])
    assert said[0].startswith("sent ")
    postgres_app.join(HIGH)
    assert [d.token for d in registry.devices_for("alice")] == [IOS_TOKEN]
    _web(kafka_bootstrap, [
        ["register_device", ["bob", "ios", IOS_TOKEN, postgres_app.apns.bundle_id]]])
    postgres_app.join(HIGH)
    assert registry.devices_for("alice") == []
    assert [d.token for d in registry.devices_for("bob")] == [IOS_TOKEN]
    # Only bob's match reaches the phone.
    _web(kafka_bootstrap, [["send_match", ["alice", {"name": "Анна", "age": 25}]],
                           ["send_match", ["bob", {"name": "Мария", "age": 28}]]])
    postgres_app.join(HIGH)
    [push] = postgres_app.apns.wait_for(1)
    assert push.json["aps"]["alert"]["body"] == "Мария, 28"
    # bob signs out: the phone gets nothing more.
    _web(kafka_bootstrap, [["unregister_device", [IOS_TOKEN.upper()]]])
    postgres_app.join(HIGH)
    assert registry.devices_for("bob") == []
    assert registry.count() == 0


def test_a_record_another_language_builds_by_hand_is_applied_or_dead_lettered(
    postgres_app: Rig, kafka_bootstrap: str,
) -> None:
    # What the README documents for a Node.js producer: Dramatiq's JSON, keyed
    # by the token's digest, on the high-priority topic.
    def record(actor: str, args: list[str]) -> tuple[str, bytes]:
        message_id = str(uuid.uuid4())
        body = {"queue_name": HIGH, "actor_name": actor, "args": args, "kwargs": {},
                "options": {}, "message_id": message_id,
                "message_timestamp": int(time.time() * 1000)}
        return message_id, json.dumps(body).encode()

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    _, good = record(REGISTER_ACTOR, ["carol", "ios", IOS_TOKEN.upper(), "com.willowe.app"])
    bad_id, bad = record(REGISTER_ACTOR, ["carol", "ios", "zz-not-a-token", "com.willowe.app"])
    for value in (good, bad):
        producer.send(HIGH, value=value, key=token_key(IOS_TOKEN).encode()).get(timeout=30)
    producer.close()
    postgres_app.join(HIGH)
    # The worker applies the registry's rules: the token is stored lower-case...
    registry = postgres_app.services.registry
    assert [d.token for d in registry.devices_for("carol")] == [IOS_TOKEN]
    # ...and a registration they refuse goes to the dead letters, naming the field.
    [headers] = read_dead_letters(postgres_app, f"{HIGH}.XQ", bad_id)
    assert "token:" in headers.get("x-dead-letter-error", "")
    assert "zz-not-a-token" not in json.dumps(headers)
    assert UNREGISTER_ACTOR in postgres_app.broker.actors
    assert isinstance(postgres_app.services.ledger, PostgresLedger)
