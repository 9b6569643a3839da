"""Trace context: a W3C traceparent on every record, from send() through
retries (.DQ), into the dead letters (.XQ) and through a replay; with
OpenTelemetry configured, send, process and push are linked spans."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dramatiq
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from broker.dead_letters import header_dict
from broker.topics import reconcile
from willowe_tasks.app import App
from willowe_tasks.settings import settings_from
from willowe_tasks.testing import FakeAPNs, FakeFCM, fake_provider_env
from willowe_tasks.topics import ALL_TOPIC_SPECS
from willowe_tasks.tracing import new_traceparent, replay_headers, trace_id_of

HIGH = "high-priority-notifications"
IOS_TOKEN = "9c" * 32
MATCH = {"name": "Анна", "age": 25}


def test_a_new_traceparent_is_w3c_and_a_child_keeps_its_parents_trace() -> None:
    root = new_traceparent()
    assert trace_id_of(root) is not None
    assert root.startswith("00-") and root.endswith("-01") and len(root) == 55
    child = new_traceparent(root)
    assert trace_id_of(child) == trace_id_of(root) and child != root
    assert trace_id_of(new_traceparent()) != trace_id_of(root)
    # Malformed or all-zero parents start a new trace instead.
    for bad in ("", "garbage", "00-" + "0" * 32 + "-" + "1" * 16 + "-01",
                "01-" + "a" * 32 + "-" + "1" * 16 + "-01"):
        assert trace_id_of(bad) is None
        assert trace_id_of(new_traceparent(bad)) is not None


def test_replay_headers_drop_the_dead_letter_ones_and_keep_the_trace() -> None:
    traceparent = new_traceparent()
    headers = [("dramatiq-message-id", b"m1"), ("traceparent", traceparent.encode()),
               ("x-dead-letter-reason", b"failed"), ("x-dead-letter-retries", b"8")]
    assert replay_headers(headers) == [("dramatiq-message-id", b"m1"),
                                       ("traceparent", traceparent.encode())]
    # The re-encoded message's own traceparent wins over a stale header.
    other = new_traceparent()
    assert dict(replay_headers(headers, other))["traceparent"] == other.encode()


@dataclass
class TracedRig:
    app: App
    apns: FakeAPNs
    spans: InMemorySpanExporter

    def finished(self, kind: SpanKind | None = None) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if kind is None or s.kind == kind]


@pytest.fixture
def traced(kafka_bootstrap: str, tmp_path: Path) -> Iterator[TracedRig]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    reconcile(admin, ALL_TOPIC_SPECS)
    admin.close()
    with FakeAPNs() as apns, FakeFCM() as fcm:
        app = App(settings_from({
            "KAFKA_BROKER": kafka_bootstrap, "KAFKA_RETRY_RETRIES": "1",
            "KAFKA_GROUP_ID": f"test-tracing-{uuid.uuid4().hex[:8]}", "METRICS_ENABLED": "false",
            **fake_provider_env(apns, fcm, tmp_path)}), tracer_provider=provider)
        app.broker.flush_all()
        app.services().registry.register("user123", "ios", IOS_TOKEN, apns.bundle_id)
        worker = dramatiq.Worker(app.broker, worker_threads=2, worker_timeout=100)
        worker.start()
        try:
            yield TracedRig(app, apns, exporter)
        finally:
            worker.stop()
            app.close()
            provider.shutdown()


def records(bootstrap: list[str], topic: str, message_id: str) -> list[ConsumerRecord]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000, group_id=None)
    found = [r for r in consumer if header_dict(r.headers).get("dramatiq-message-id")
             == message_id]
    consumer.close()
    return found


def test_send_process_and_each_push_are_linked_spans_of_the_records_trace(
        traced: TracedRig) -> None:
    # When a match is sent and pushed
    message = traced.app.actors.send_match.send("user123", MATCH)
    traced.app.broker.join(HIGH, timeout=60_000)
    traced.apns.wait_for(1)
    # Then its record carries the traceparent of the send span
    [record] = records(traced.app.broker.bootstrap_servers, HIGH, message.message_id)
    traceparent = header_dict(record.headers)["traceparent"]
    assert json.loads(record.value)["options"]["traceparent"] == traceparent
    [send] = traced.finished(SpanKind.PRODUCER)
    [process] = traced.finished(SpanKind.CONSUMER)
    [push] = traced.finished(SpanKind.CLIENT)
    assert send.context is not None and process.context is not None
    assert f"{send.context.trace_id:032x}" == trace_id_of(traceparent)
    assert traceparent.split("-")[2] == f"{send.context.span_id:016x}"
    # and the worker's process span is the send's child, each push the process's
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert push.parent is not None and push.parent.span_id == process.context.span_id
    assert process.context.trace_id == push.context.trace_id == send.context.trace_id  # type: ignore[union-attr]
    assert push.name == "push apns" and push.attributes["push.outcome"] == "accepted"  # type: ignore[index]
    assert process.attributes["messaging.message.id"] == message.message_id  # type: ignore[index]


def test_the_trace_rides_through_retries_into_the_dead_letters_and_through_a_replay(
        traced: TracedRig) -> None:
    # Given a provider failing long enough to exhaust the one retry allowed
    traced.apns.fail(500, "InternalServerError", times=2)
    message = traced.app.actors.send_match.send("user123", MATCH)
    traced.app.broker.join(HIGH, timeout=60_000)
    trace_id = trace_id_of(message.options["traceparent"])
    assert trace_id is not None
    servers = traced.app.broker.bootstrap_servers
    # Then the retry on .DQ and the dead letter on .XQ are in the same trace
    [retry] = records(servers, f"{HIGH}.DQ", message.message_id)
    assert trace_id_of(header_dict(retry.headers)["traceparent"]) == trace_id
    [dead] = records(servers, f"{HIGH}.XQ", message.message_id)
    assert trace_id_of(header_dict(dead.headers)["traceparent"]) == trace_id
    assert trace_id_of(json.loads(dead.value)["options"]["traceparent"]) == trace_id

    # When the dead letter is replayed (its bytes with a fresh retry budget,
    # its headers without the dead-letter ones) to a provider that works again
    body = json.loads(dead.value)
    body["options"].pop("retries", None)
    producer = KafkaProducer(bootstrap_servers=servers)
    producer.send(HIGH, json.dumps(body).encode(), headers=replay_headers(
        dead.headers, body["options"]["traceparent"])).get(timeout=30)
    producer.close()
    traced.app.broker.join(HIGH, timeout=60_000)
    traced.apns.wait_for(3)

    # Then every run, the failed two and the replayed one, is in that trace
    runs = traced.finished(SpanKind.CONSUMER)
    assert len(runs) == 3
    assert {f"{s.context.trace_id:032x}" for s in runs if s.context} == {trace_id}
    assert [s.status.is_ok for s in runs] == [False, False, True]
    [accepted] = [s for s in traced.finished(SpanKind.CLIENT)
                  if s.attributes and s.attributes["push.outcome"] == "accepted"]
    assert accepted.context is not None and f"{accepted.context.trace_id:032x}" == trace_id


def test_a_record_with_only_a_traceparent_header_is_processed_in_its_trace(
        traced: TracedRig) -> None:
    # Given a producer in another language that writes the header, not the option
    message = traced.app.actors.send_match.message_with_options(args=("user123", MATCH))
    traceparent = new_traceparent()
    producer = KafkaProducer(bootstrap_servers=traced.app.broker.bootstrap_servers)
    producer.send(HIGH, message.encode(), headers=[("traceparent", traceparent.encode())]
                  ).get(timeout=30)
    producer.close()
    traced.app.broker.join(HIGH, timeout=60_000)
    [process] = traced.finished(SpanKind.CONSUMER)
    assert process.context is not None
    assert f"{process.context.trace_id:032x}" == trace_id_of(traceparent)


def test_without_a_tracer_provider_every_record_still_gets_its_own_trace(
        kafka_bootstrap: str) -> None:
    app = App(settings_from({"KAFKA_BROKER": kafka_bootstrap, "METRICS_ENABLED": "false"}))
    try:
        first = app.actors.track_event.send("user_login", {})
        second = app.actors.track_event.send("user_login", {})
        [record] = records(app.broker.bootstrap_servers, "low-priority-notifications",
                           first.message_id)
    finally:
        app.close()
    header = header_dict(record.headers)["traceparent"]
    assert header == first.options["traceparent"]
    assert trace_id_of(header) is not None
    assert trace_id_of(header) != trace_id_of(second.options["traceparent"])
