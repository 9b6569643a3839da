"""The Node.js client (clients/node) beside the Python side: its own tests, the
shared vectors in both languages, records from both compared on a real Kafka,
and failing fast while Kafka is away. (A phone registered from Node getting a
match sent from Node through a Python worker: tests/test_node_registration.py.)"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from node_support import (
    FIRST_FAILURE_SLACK_MS,
    NODE_CLIENT,
    NodeDriver,
    end_offsets,
    make_topics,
    node,
    node_env,
    read_records,
    report_vectors,
    without_timestamp,
)
from payload_vectors import load_vectors
from pydantic import ValidationError

from broker.localkafka import LocalKafka
from willowe_tasks.actors import _check
from willowe_tasks.app import App
from willowe_tasks.dispatch import push_for
from willowe_tasks.providers import providers
from willowe_tasks.push_fit import _SOME_DEVICE
from willowe_tasks.settings import Settings, load_settings
from willowe_tasks.wire_schema import actors_by_name, registration_actors_by_name

ROOT = Path(__file__).resolve().parents[1]
#: What the issue asks of a send while the circuit is open (measured inside Node),
#: held to the median: on a shared machine a process can wait that long for a core.
CIRCUIT_OPEN_MS = 50
#: Any one of them: far below a connection attempt's retries (about 1 s).
CIRCUIT_OPEN_MAX_MS = 500


@pytest.fixture(scope="module")
def topics(kafka_bootstrap: str) -> str:
    make_topics(kafka_bootstrap)
    return kafka_bootstrap


@pytest.fixture
def python_app(topics: str) -> Iterator[App]:
    app = App(load_settings(kafka_broker=topics,
                            kafka_group_id=f"test-node-{uuid.uuid4().hex[:8]}"))
    yield app
    app.close()


def test_the_node_clients_own_tests_pass(topics: str) -> None:
    result = subprocess.run(
        [node(), "--test", "test/"], cwd=NODE_CLIENT, capture_output=True, text=True,
        timeout=600, env=node_env(WILLOWE_TEST_KAFKA=topics),
    )
    summary = dict(re.findall(r"^# (pass|fail|skipped|cancelled) (\d+)$", result.stdout, re.M))
    # The failures themselves (a test's "not ok" block), not just the tail.
    failures = re.findall(r"^not ok .*?^  \.\.\.$", result.stdout, re.M | re.S)
    assert result.returncode == 0, "\n".join(failures)[:6000] or (
        result.stdout[-6000:] + result.stderr[-2000:])
    assert summary.get("fail") == "0" and summary.get("cancelled") == "0", summary
    assert summary.get("skipped") == "0", "the Kafka tests did not run"
    assert int(summary["pass"]) > len(load_vectors())


def test_variables_both_languages_read_have_the_same_defaults_and_ranges() -> None:
    described = subprocess.run(
        [node(), "-e", "process.stdout.write(JSON.stringify("
                       "require('./src/config').describeSettings()))"],
        cwd=NODE_CLIENT, capture_output=True, text=True, timeout=60, check=True, env=node_env())
    node_settings = {s["env"]: s for s in json.loads(described.stdout)}
    shared = [name for name in Settings.model_fields if name.upper() in node_settings]
    assert {"kafka_send_timeout_ms", "kafka_probe_interval_ms", "kafka_broker",
            "kafka_retry_initial"} <= set(shared)
    for name in shared:
        field, node_side = Settings.model_fields[name], node_settings[name.upper()]
        assert node_side.get("fallback") == field.default, name  # (undefined: None)
        bounds = {type(rule).__name__: rule for rule in field.metadata}
        if "Ge" in bounds or "Le" in bounds:
            assert (node_side["minimum"], node_side["maximum"]) \
                == (bounds["Ge"].ge, bounds["Le"].le), name


def test_node_and_python_write_the_same_bytes_and_push_sizes_for_every_vector() -> None:
    message_id, timestamp_ms = str(uuid.uuid4()), int(time.time() * 1000)
    from_node = report_vectors(message_id, timestamp_ms)
    app = App(load_settings(kafka_broker="127.0.0.1:9"))
    actors = actors_by_name(app.actors)
    registration = registration_actors_by_name(app.actors)
    compared = 0
    for vector in load_vectors():
        if vector.actor in registration:
            continue  # tests/test_node_registration.py compares those, messages too
        node_side = from_node[vector.name]
        actor = actors[vector.actor]
        try:
            message = actor.message(*vector.args)
        except ValidationError as e:
            python_errors = sorted(".".join(map(str, err["loc"])) for err in e.errors())
            assert sorted(node_side.get("errors", [])) == python_errors, vector.name
            continue
        if vector.python_send_differs:
            assert node_side["errors"] == vector.errors, vector.name
            continue
        same = message.copy(message_id=message_id, message_timestamp=timestamp_ms)
        assert node_side["value"] == same.encode().decode(), vector.name
        assert node_side["topic"] == actor.queue_name
        assert node_side["key"] is None
        assert node_side["headers"] == {"dramatiq-message-id": message_id,
                                        "dramatiq-actor": actor.actor_name}
        if actor.preview is not None:
            notification, _ = actor.preview(_check(actor.arguments, tuple(vector.args), {}))
            push = push_for(notification, _SOME_DEVICE)
            sizes = {spec.name: spec.measure(push).size_bytes for spec in providers()}
            assert node_side["sizes"] == sizes, vector.name
        compared += 1
    app.close()
    assert compared >= 30


#: The same calls, as the guide writes them in Node and as Python writes them.
SAME_CALLS: list[tuple[str, list[Any], str, list[Any], dict[str, Any]]] = [
    ("sendMatchNotification",
     ["user123", {"name": "Анна", "age": 25, "photoUrl": "https://example.com/photo.jpg"}],
     "send_match", ["user123", {"name": "Анна", "age": 25,
                                "photoUrl": "https://example.com/photo.jpg"}], {}),
    ("sendFastMatchNotification", ["user123", {"name": "Анна 💘", "age": 25, "matchId": "m-1"}],
     "send_fast_match", ["user123", {"name": "Анна 💘", "age": 25, "matchId": "m-1"}], {}),
    ("sendLikeNotification", ["user456", {"name": "Мария", "age": 28}],
     "send_like", ["user456", {"name": "Мария", "age": 28}], {}),
    ("sendOneNightNotification", ["user456", {"name": "Мария", "age": 28, "senderId": "u1"}],
     "send_one_night", ["user456", {"name": "Мария", "age": 28, "senderId": "u1"}], {}),
    ("sendAnalyticsEvent", ["user_login", {"userId": "user123", "timestamp": 1732450000000,
                                           "ratio": 0.25}],
     "track_event", ["user_login", {"userId": "user123", "timestamp": 1732450000000,
                                    "ratio": 0.25}], {}),
    ("sendMessage", ["high-priority-notifications",
                     {"type": "custom-notification", "targetUserId": "user123",
                      "title": "Новое сообщение", "body": "У вас новое сообщение"}, "high"],
     "send_notification", [{"type": "custom-notification", "targetUserId": "user123",
                            "title": "Новое сообщение", "body": "У вас новое сообщение"}],
     {"priority": "high"}),
]


def test_the_same_call_from_node_and_from_python_gives_equal_records(
    python_app: App, topics: str,
) -> None:
    start = end_offsets(topics)
    sent: list[tuple[str, str]] = []  # (node id, python id)
    with NodeDriver(node_env(KAFKA_BROKER=topics, KAFKA_LOG_LEVEL="NOTHING")) as driver:
        for method, node_args, actor, python_args, options in SAME_CALLS:
            answer = driver.send(method, *node_args)
            assert answer["ok"], answer
            message = getattr(python_app.actors, actor).send(*python_args, **options)
            sent.append((answer["result"]["messageId"], message.message_id))
    records = read_records(topics, start, {i for pair in sent for i in pair})
    for node_id, python_id in sent:
        from_node, from_python = records[node_id], records[python_id]
        assert from_node["topic"] == from_python["topic"]
        assert from_node["key"] is None and from_python["key"] is None
        assert from_node["headers"]["dramatiq-actor"] == from_python["headers"]["dramatiq-actor"]
        # Python's send() adds a trace context (the Node client does not write
        # one yet; a worker gives its records one): new per message, like an id.
        traceparent = from_python["headers"].pop("traceparent")
        assert list(from_node["headers"]) == list(from_python["headers"])
        # Equal in everything but ids, times and trace context, to the byte.
        node_value = from_node["value"].replace(node_id.encode(), b"ID")
        python_value = from_python["value"].replace(python_id.encode(), b"ID").replace(
            f'{{"traceparent":"{traceparent}"}}'.encode(), b"{}")
        assert without_timestamp(node_value) == without_timestamp(python_value)


@pytest.mark.slow
def test_node_fails_fast_while_kafka_is_away_and_recovers_when_it_answers(
    kafka_bootstrap: str, tmp_path: Path, free_ports: Callable[[int], list[int]],
) -> None:
    # kafka_bootstrap first: the shared jars are fetched by then.
    port, controller_port = free_ports(2)
    kafka = LocalKafka(tmp_path / "kafka", port=port, controller_port=controller_port,
                       jars=ROOT / ".cache" / "kafka" / "libs", heap="256m")
    env = node_env(KAFKA_BROKER=kafka.bootstrap_servers, KAFKA_LOG_LEVEL="NOTHING",
                   KAFKA_PROBE_INTERVAL_MS="1000")
    match = ("sendMatchNotification", "user123", {"name": "Анна", "age": 25})
    refused: list[str] = []  # ids of sends refused before anything reached Kafka
    try:
        with NodeDriver(env) as driver:
            # Given no Kafka on the port yet: the first send rejects within ~2 s
            first = driver.send(*match)
            assert not first["ok"] and first["error"]["name"] == "KafkaUnavailableError"
            assert first["error"]["circuitOpen"] is False
            assert first["error"]["maybeSent"] is False
            assert first["ms"] < 2000 + FIRST_FAILURE_SLACK_MS, first
            refused.append(first["error"]["messageId"])
            # and, while the circuit is open, every send at once.
            refused += assert_short_circuited(driver, 10)

            # When Kafka starts, a probe finds it and sends go through again.
            assert kafka.start() is True
            make_topics(kafka.bootstrap_servers)
            accepted = send_until_accepted(driver, match, timeout_s=60)
            assert accepted, "the client did not recover within 60 s of Kafka answering"
            for _ in range(3):
                assert driver.send(*match)["ok"]
            # and no send refused while it was away reached Kafka behind the caller's back.
            assert not refused_ids_on(kafka.bootstrap_servers, set(refused), accepted)

            # When Kafka dies under a connected client, the next send rejects
            # within ~2 s, and later ones at once.
            kafka.kill()
            lost = driver.send(*match)
            assert not lost["ok"] and lost["ms"] < 2000 + FIRST_FAILURE_SLACK_MS, lost
            assert_short_circuited(driver, 10)
    finally:
        kafka.kill()


def assert_short_circuited(driver: NodeDriver, count: int) -> list[str]:
    """Send ``count`` likes, each refused at once; their ids."""
    answers = [driver.send("sendLikeNotification", "user456", {"name": "Мария", "age": 28})
               for _ in range(count)]
    for answer in answers:
        assert not answer["ok"] and answer["error"]["circuitOpen"] is True, answer
        assert answer["ms"] < CIRCUIT_OPEN_MAX_MS, answer
    assert statistics.median(a["ms"] for a in answers) < CIRCUIT_OPEN_MS, answers
    return [a["error"]["messageId"] for a in answers]


def send_until_accepted(driver: NodeDriver, call: tuple[Any, ...], timeout_s: float
                        ) -> str | None:
    """Send every 0.25 s until one is accepted (its id); each refusal must be a
    KafkaUnavailableError."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = driver.send(*call)
        if answer["ok"]:
            return str(answer["result"]["messageId"])
        assert answer["error"]["name"] == "KafkaUnavailableError", answer
        time.sleep(0.25)
    return None


def refused_ids_on(bootstrap: str, refused: set[str], last_accepted: str) -> set[str]:
    """Which of ``refused`` are on Kafka, read up to the last accepted record."""
    start = dict.fromkeys(end_offsets(bootstrap), 0)
    found: set[str] = set()
    for message_id in read_records(bootstrap, start, {last_accepted}, keep_all=True):
        if message_id in refused:
            found.add(message_id)
    return found
