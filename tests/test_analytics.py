"""Analytics sink: JSON Lines encoding, validation, and concurrent appenders."""

from __future__ import annotations

import datetime
import multiprocessing
import threading
from collections import Counter
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier as BarrierType
from pathlib import Path

import pytest

from willowe_tasks.analytics import (
    MAX_LINE_BYTES,
    AnalyticsSink,
    JsonlAnalyticsSink,
    read_events,
)

#: Bound on every wait in this module, in seconds.
WAIT_S = 30.0
OCCURRED_AT = 1_732_450_000.25


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[JsonlAnalyticsSink]:
    with JsonlAnalyticsSink(tmp_path / "analytics" / "events.jsonl") as s:
        yield s


def test_conforms_to_protocol(sink: JsonlAnalyticsSink) -> None:
    typed: AnalyticsSink = sink
    typed.record("push.sent", {}, event_id="e1", occurred_at=OCCURRED_AT)
    assert len(read_events(sink.path)) == 1


def test_unicode_round_trip_stays_readable_in_the_file(sink: JsonlAnalyticsSink) -> None:
    properties = {
        "name": "Алёна",
        "text": "Привет! 😍🔥 ❤️‍🔥",
        "separator": "before\u2028after",  # str.splitlines() would break here
        "nested": {"list": [1, 2.5, None, True], "emoji_key_🍷": "ok"},
    }
    sink.record("match.created", properties, event_id="e-1", occurred_at=OCCURRED_AT)
    sink.record("push.sent", {"n": 1}, event_id="e-2", occurred_at=OCCURRED_AT + 1)

    raw = sink.path.read_bytes()
    assert "Алёна".encode() in raw and "😍".encode() in raw
    assert b"\\u" not in raw  # not escaped to ASCII
    assert raw.count(b"\n") == 2

    events = read_events(sink.path)
    assert [e["event_id"] for e in events] == ["e-1", "e-2"]
    assert events[0]["properties"] == properties
    assert events[0]["event"] == "match.created"
    assert events[0]["occurred_at"] == OCCURRED_AT
    assert isinstance(events[0]["recorded_at"], float)


def test_recording_is_not_idempotent_on_event_id(sink: JsonlAnalyticsSink) -> None:
    for _ in range(2):
        sink.record("push.sent", {}, event_id="same", occurred_at=OCCURRED_AT)
    assert [e["event_id"] for e in read_events(sink.path)] == ["same", "same"]


@pytest.mark.parametrize(
    ("event", "properties", "event_id", "occurred_at", "field"),
    [
        ("", {}, "e1", OCCURRED_AT, "event"),
        ("push\nsent", {}, "e1", OCCURRED_AT, "event"),
        ("x" * 129, {}, "e1", OCCURRED_AT, "event"),
        ("push.sent", {}, "", OCCURRED_AT, "event_id"),
        ("push.sent", {}, "e1", float("nan"), "occurred_at"),
        ("push.sent", {}, "e1", True, "occurred_at"),
        ("push.sent", {}, "e1", "2024-11-24", "occurred_at"),
        ("push.sent", ["not", "a", "dict"], "e1", OCCURRED_AT, "properties"),
        ("push.sent", {"at": datetime.datetime(2024, 1, 1)}, "e1", OCCURRED_AT, "properties"),
        ("push.sent", {"ratio": float("inf")}, "e1", OCCURRED_AT, "properties"),
        ("push.sent", {"bad": "\ud800"}, "e1", OCCURRED_AT, "properties"),
        ("push.sent", {"blob": "x" * MAX_LINE_BYTES}, "e1", OCCURRED_AT, "properties"),
    ],
)
def test_invalid_events_name_the_field_and_write_nothing(
    sink: JsonlAnalyticsSink,
    event: str,
    properties: dict[str, object],
    event_id: str,
    occurred_at: float,
    field: str,
) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        sink.record(event, properties, event_id=event_id, occurred_at=occurred_at)
    assert sink.path.read_bytes() == b""


def test_read_events_of_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_events(tmp_path / "nope.jsonl") == []


def test_read_events_skips_a_torn_last_line_only(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"event_id":"a"}\n{"event_id":"b"}\n{"event_id":"c", "eve')
    assert [e["event_id"] for e in read_events(path)] == ["a", "b"]

    path.write_bytes(b'{"event_id":"a"}\n{"event_id"\n{"event_id":"c"}\n')
    with pytest.raises(ValueError, match=r"events.jsonl:2:"):
        read_events(path)


def test_closed_sink_refuses_to_record(tmp_path: Path) -> None:
    sink = JsonlAnalyticsSink(tmp_path / "events.jsonl")
    sink.close()
    sink.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        sink.record("push.sent", {}, event_id="e1", occurred_at=OCCURRED_AT)


def test_two_sinks_on_one_file_append(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlAnalyticsSink(path) as first, JsonlAnalyticsSink(path) as second:
        first.record("a", {}, event_id="1", occurred_at=OCCURRED_AT)
        second.record("b", {}, event_id="2", occurred_at=OCCURRED_AT)
        first.record("c", {}, event_id="3", occurred_at=OCCURRED_AT)
    assert [e["event"] for e in read_events(path)] == ["a", "b", "c"]


# -- concurrent appenders -----------------------------------------------------

THREADS_PER_PROCESS = 3
EVENTS_PER_THREAD = 40
#: Payload size, in characters; larger than PIPE_BUF (4096 bytes) on purpose,
#: since O_APPEND atomicity for regular files must not depend on it.
PAYLOAD_CHARS = 6000


def _append_events(sink: JsonlAnalyticsSink, writer: str, start: BarrierType) -> None:
    def run(thread: int) -> None:
        start.wait()
        for i in range(EVENTS_PER_THREAD):
            event_id = f"{writer}-{thread}-{i}"
            # Multi-byte characters, so a split line would also break UTF-8.
            payload = (event_id + "ж😀") * (PAYLOAD_CHARS // (len(event_id) + 2))
            sink.record("load", {"payload": payload}, event_id=event_id, occurred_at=OCCURRED_AT)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS_PER_PROCESS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)


def _appender_process(path: str, writer: str, start: BarrierType) -> None:
    with JsonlAnalyticsSink(path) as sink:
        _append_events(sink, writer, start)


def test_concurrent_appenders_never_interleave_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    writers = ["parent", "child-1", "child-2"]
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(THREADS_PER_PROCESS * len(writers), timeout=WAIT_S)
    processes = [
        ctx.Process(target=_appender_process, args=(str(path), writer, start))
        for writer in writers[1:]
    ]
    for process in processes:
        process.start()
    with JsonlAnalyticsSink(path) as sink:
        _append_events(sink, writers[0], start)
    for process in processes:
        process.join(WAIT_S)

    assert [p.exitcode for p in processes] == [0, 0]
    events = read_events(path)  # raises if any line is corrupt
    expected = {
        f"{writer}-{thread}-{i}"
        for writer in writers
        for thread in range(THREADS_PER_PROCESS)
        for i in range(EVENTS_PER_THREAD)
    }
    ids = Counter(e["event_id"] for e in events)
    assert set(ids) == expected and set(ids.values()) == {1}
    for event in events:
        assert event["properties"]["payload"].startswith(event["event_id"] + "ж😀")
    assert path.read_bytes().count(b"\n") == len(expected)
