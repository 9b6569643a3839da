"""Registering phones from Node.js (clients/node `registerDevice`,
`unregisterDevice`) beside Python's register_device and unregister_device: the
same records, keys, partitions and errors, and a phone registered from Node
that a Python worker then pushes a match from Node to."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import unicodedata
import uuid
from pathlib import Path
from typing import Any

import pytest
from node_support import (
    NODE_CLIENT,
    TOPICS,
    NodeDriver,
    end_offsets,
    make_topics,
    node,
    node_env,
    read_records,
    report_vectors,
    without_timestamp,
    without_traceparent,
)
from payload_vectors import load_vectors
from support import wait_until

from broker.kafka import PARTITION_KEY_OPTION
from willowe_tasks.app import App
from willowe_tasks.registry import DeviceValidationError, SQLiteDeviceRegistry
from willowe_tasks.settings import load_settings
from willowe_tasks.testing import FakeAPNs, FakeFCM, fake_provider_env, worker_command
from willowe_tasks.wire_schema import registration_actors_by_name

ROOT = Path(__file__).resolve().parents[1]
#: Bound on every wait for a worker or a record, in seconds.
WAIT_S = 120.0


@pytest.fixture(scope="module")
def topics(kafka_bootstrap: str) -> str:
    make_topics(kafka_bootstrap)
    return kafka_bootstrap


def test_node_and_python_write_the_same_registration_records_and_errors_for_every_vector(
) -> None:
    message_id, timestamp_ms = str(uuid.uuid4()), int(time.time() * 1000)
    from_node = report_vectors(message_id, timestamp_ms)
    app = App(load_settings(kafka_broker="127.0.0.1:9"))
    actors = registration_actors_by_name(app.actors)
    refused = accepted = 0
    try:
        for vector in load_vectors():
            if vector.actor not in actors:
                continue
            node_side, actor = from_node[vector.name], actors[vector.actor]
            try:
                message = actor.message(*vector.args)
            except DeviceValidationError as e:
                assert node_side.get("errors") == [e.field], vector.name
                (said,) = node_side["messages"]
                assert said == e.problem, vector.name
                refused += 1
                continue
            same = message.copy(message_id=message_id, message_timestamp=timestamp_ms)
            assert node_side["value"] == same.encode().decode(), vector.name
            assert node_side["key"] == message.options[PARTITION_KEY_OPTION], vector.name
            assert node_side["topic"] == actor.queue_name
            assert node_side["headers"] == {"dramatiq-message-id": message_id,
                                            "dramatiq-actor": actor.actor_name}
            accepted += 1
    finally:
        app.close()
    assert refused >= 20 and accepted >= 10


def test_node_and_python_agree_on_printable_and_whitespace_but_for_characters_newer_than_python(
) -> None:
    # Given what the Node port calls printable and whitespace, for every code point,
    report = subprocess.run([node(), "testing/report-unicode.js"], cwd=NODE_CLIENT,
                            capture_output=True, text=True, timeout=120, check=True,
                            env=node_env())
    ported = json.loads(report.stdout)

    def expand(ranges: list[list[int]]) -> set[int]:
        return {code for first, last in ranges for code in range(first, last + 1)}

    printable, space = expand(ported["printable"]), expand(ported["space"])
    everything = range(sys.maxunicode + 1)
    # whitespace is exactly Python's str.isspace(),
    assert space == {code for code in everything if chr(code).isspace()}
    # and printable differs only where Node knows a newer Unicode than this
    # Python: characters assigned since (to Python, unassigned: category Cn).
    differ = printable ^ {code for code in everything if chr(code).isprintable()}
    newer = {code for code in differ
             if code in printable and unicodedata.category(chr(code)) == "Cn"}
    assert differ == newer, sorted(differ - newer)[:20]
    if unicodedata.unidata_version == ported["unicode"]:
        assert not differ


def test_registrations_from_node_and_python_are_equal_records_in_the_same_partition(
    topics: str,
) -> None:
    # Given tokens of both platforms, iOS ones in upper case,
    tokens = [("ios", uuid.uuid4().hex.upper() * 2) for _ in range(4)]
    tokens += [("android", f"{uuid.uuid4().hex}:APA91b-{uuid.uuid4().hex}") for _ in range(4)]
    app = App(load_settings(kafka_broker=topics))
    start = end_offsets(topics)
    sent: list[tuple[str, str]] = []  # (node id, python id)
    try:
        # when each is registered, then unregistered, from Node and from Python,
        with NodeDriver(node_env(KAFKA_BROKER=topics, KAFKA_LOG_LEVEL="NOTHING")) as driver:
            for platform, token in tokens:
                calls: list[tuple[str, list[Any], Any]] = [
                    ("registerDevice", ["user123", platform, token, "com.willowe.app"],
                     app.actors.register_device),
                    ("unregisterDevice", [token], app.actors.unregister_device)]
                for method, args, actor in calls:
                    answer = driver.send(method, *args)
                    assert answer["ok"], answer
                    sent.append((answer["result"]["messageId"], actor.send(*args).message_id))
    finally:
        app.close()
    records = read_records(topics, start, {i for pair in sent for i in pair})
    # then each pair is one record, to the byte but for id and time, with
    # one key, in one partition: a token's changes stay in order whoever sent them.
    for node_id, python_id in sent:
        from_node, from_python = records[node_id], records[python_id]
        assert from_node["topic"] == from_python["topic"] == TOPICS[0]
        assert from_node["key"] == from_python["key"]
        assert from_node["key"] == json.loads(from_python["value"])["options"][
            PARTITION_KEY_OPTION].encode()
        assert from_node["partition"] == from_python["partition"]
        assert from_node["headers"]["dramatiq-actor"] == from_python["headers"]["dramatiq-actor"]
        assert b"traceparent" not in from_node["value"]
        assert without_timestamp(from_node["value"].replace(node_id.encode(), b"ID")) \
            == without_timestamp(without_traceparent(
                from_python["value"].replace(python_id.encode(), b"ID")))
    # and a token's registration and unregistration share the key (iOS: as stored, lower-case).
    for index in range(len(tokens)):
        register, unregister = sent[2 * index][0], sent[2 * index + 1][0]
        assert records[register]["key"] == records[unregister]["key"]
    partitions = {records[node_id]["partition"] for node_id, _ in sent}
    assert len(partitions) > 1, "eight tokens all in one partition: keys are not spreading"


def test_a_phone_registered_from_node_gets_a_match_sent_from_node_through_a_python_worker(
    topics: str, tmp_path: Path,
) -> None:
    user = f"node-user-{uuid.uuid4().hex[:8]}"
    ios_token = uuid.uuid4().hex.upper() * 2
    android_token = f"{uuid.uuid4().hex}:APA91b-{uuid.uuid4().hex}"
    with FakeAPNs() as apns, FakeFCM() as fcm:
        env = {**os.environ, "KAFKA_BROKER": topics,
               "KAFKA_GROUP_ID": f"test-node-registration-{uuid.uuid4().hex[:8]}",
               **fake_provider_env(apns, fcm, tmp_path)}
        registry = SQLiteDeviceRegistry(env["DEVICE_REGISTRY_PATH"])
        log = tmp_path / "worker.log"
        with log.open("ab") as out:
            worker = subprocess.Popen(
                [*worker_command(processes=1, threads=2), "--queues", TOPICS[0]],
                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            with NodeDriver(node_env(KAFKA_BROKER=topics, KAFKA_LOG_LEVEL="NOTHING")) as driver:
                # Given an iPhone (token in upper case) and an Android phone registered from Node,
                for platform, token, app_id in [("ios", ios_token, apns.bundle_id),
                                                ("android", android_token, "com.willowe.android")]:
                    answer = driver.send("registerDevice", user, platform, token, app_id)
                    assert answer["ok"], answer

                def devices() -> list[tuple[str, str]]:
                    return sorted((d.platform, d.token) for d in registry.devices_for(user))

                # once the worker has applied both (the iOS token stored lower-case),
                assert wait_until(lambda: len(devices()) == 2, WAIT_S), log.read_text()[-3000:]
                assert devices() == [("android", android_token), ("ios", ios_token.lower())]
                # when a match is sent from Node,
                answer = driver.send("sendMatchNotification", user, {
                    "name": " Анна ", "age": 25, "photoUrl": "https://example.com/photo.jpg",
                    "matchId": "m-42"})
                assert answer["ok"], answer
                notification_id = answer["result"]["messageId"]

                def pushed(fake: FakeAPNs | FakeFCM) -> list[Any]:
                    return [p for p in fake.delivered
                            if p.data.get("notification_id") == notification_id]

                # then both phones get it, once each, as the worker words it.
                assert wait_until(lambda: pushed(apns) and pushed(fcm), WAIT_S), \
                    log.read_text()[-3000:]
                (ios_push,) = pushed(apns)
                (android_push,) = pushed(fcm)
                assert ios_push.token == ios_token.lower()
                assert android_push.token == android_token
                assert ios_push.headers["apns-priority"] == "10"
                assert ios_push.headers["apns-collapse-id"] == notification_id
                assert ios_push.json["aps"]["alert"] == {"title": "У вас новый мэтч! 💘",
                                                         "body": "Анна, 25"}
                assert ios_push.json["image_url"] == "https://example.com/photo.jpg"
                assert ios_push.data["kind"] == "match" and ios_push.data["match_id"] == "m-42"
                assert android_push.json["message"]["notification"]["body"] == "Анна, 25"
                # And unregistering the Android phone from Node removes it.
                answer = driver.send("unregisterDevice", android_token)
                assert answer["ok"], answer
                assert wait_until(lambda: len(devices()) == 1, WAIT_S), log.read_text()[-3000:]
                assert devices() == [("ios", ios_token.lower())]
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
            registry.close()
