"""Analytics sink: JSON Lines encoding, validation, rotation, durability and
concurrent appenders."""

from __future__ import annotations

import datetime
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier as BarrierType
from pathlib import Path

import pytest

from willowe_tasks.analytics import (
    DEFAULT_MAX_BYTES,
    MAX_LINE_BYTES,
    AnalyticsSink,
    JsonlAnalyticsSink,
    read_events,
)
from willowe_tasks.services import build_services
from willowe_tasks.settings import SettingsError, load_settings

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


# -- rotation and retention ---------------------------------------------------

#: Smallest allowed rotation size: a piece must hold the longest line.
SMALL_MAX_BYTES = MAX_LINE_BYTES


def record_blobs(sink: JsonlAnalyticsSink, count: int) -> list[str]:
    """``count`` events of 3–7 KB each (sizes vary, so rotation points do); their ids."""
    ids = [f"e{i:04d}" for i in range(count)]
    for i, event_id in enumerate(ids):
        blob = "x" * (3000 + (i * 977) % 4000)
        sink.record("load", {"blob": blob}, event_id=event_id, occurred_at=OCCURRED_AT)
    return ids


def pieces_of(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.stem}.*{path.suffix}"))


def test_the_file_rotates_just_before_a_line_would_take_it_past_max_bytes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlAnalyticsSink(path, max_bytes=SMALL_MAX_BYTES, keep_files=100) as sink:
        ids = record_blobs(sink, 60)

    pieces = pieces_of(path)
    assert [p.name for p in pieces[:3]] == [
        "events.000001.jsonl", "events.000002.jsonl", "events.000003.jsonl",
    ]
    files = [*pieces, path]
    for full, following in zip(files, files[1:], strict=False):
        # Each piece took lines while they fit, and not one more.
        first_line_after = following.read_bytes().split(b"\n", 1)[0] + b"\n"
        assert full.stat().st_size <= SMALL_MAX_BYTES
        assert full.stat().st_size + len(first_line_after) > SMALL_MAX_BYTES
    assert [e["event_id"] for e in read_events(path)] == ids
    # The lock file stays; it is neither a piece nor read as one.
    assert (tmp_path / "events.jsonl.lock").exists()


def test_retention_deletes_the_oldest_pieces(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlAnalyticsSink(path, max_bytes=SMALL_MAX_BYTES, keep_files=2) as sink:
        ids = record_blobs(sink, 100)

    numbers = [int(p.name.split(".")[1]) for p in pieces_of(path)]
    assert len(numbers) == 2 and numbers[1] == numbers[0] + 1 and numbers[0] > 1
    kept = [e["event_id"] for e in read_events(path)]
    # What is left is the newest events, in order, without a gap.
    assert 0 < len(kept) < len(ids) and kept == ids[-len(kept):]


def test_a_sink_whose_file_was_rotated_by_another_writes_to_the_new_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    options = {"max_bytes": SMALL_MAX_BYTES, "keep_files": 100}
    with JsonlAnalyticsSink(path, **options) as first, JsonlAnalyticsSink(path, **options) as other:
        # Given the other sink's fd is on the file that is about to be rotated
        other.record("early", {}, event_id="early", occurred_at=OCCURRED_AT)
        record_blobs(first, 20)
        [piece, *_] = pieces_of(path)
        rotated = piece.read_bytes()
        # When it records again
        other.record("late", {}, event_id="late", occurred_at=OCCURRED_AT)
    # Then the line went to the current file and the rotated piece never changed
    assert piece.read_bytes() == rotated
    assert b'"early"' in rotated
    assert read_events(path)[-1]["event_id"] == "late"


def test_read_events_never_sees_a_rotation_half_done(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    finished = threading.Event()

    def write() -> None:
        with JsonlAnalyticsSink(path, max_bytes=SMALL_MAX_BYTES, keep_files=1000) as sink:
            record_blobs(sink, 300)
        finished.set()

    writer = threading.Thread(target=write)
    writer.start()
    snapshots = 0
    deadline = time.monotonic() + WAIT_S
    while not finished.is_set() and time.monotonic() < deadline:
        ids = [e["event_id"] for e in read_events(path)]
        # Every read is a prefix of what was written: no line missed or seen
        # twice while a rotation moved the file under it.
        assert ids == [f"e{i:04d}" for i in range(len(ids))]
        snapshots += 1
    writer.join(WAIT_S)
    assert finished.is_set() and snapshots > 0
    assert len(pieces_of(path)) > 10
    assert len(read_events(path)) == 300


# -- durability -----------------------------------------------------------------


def _record_and_die(path: str) -> None:
    sink = JsonlAnalyticsSink(path)  # default: fsync later, in the background
    sink.record("push.sent", {"n": 1}, event_id="before-crash", occurred_at=OCCURRED_AT)
    os.kill(os.getpid(), signal.SIGKILL)  # no close(), no fsync, no atexit


def test_a_recorded_line_survives_the_process_being_killed_right_after(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    process = multiprocessing.get_context("spawn").Process(target=_record_and_die,
                                                           args=(str(path),))
    process.start()
    process.join(WAIT_S)
    assert process.exitcode == -signal.SIGKILL
    assert [e["event_id"] for e in read_events(path)] == ["before-crash"]


@pytest.fixture
def fsync_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts os.fsync calls (and still makes them)."""
    calls: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    return calls


def test_fsync_interval_0_syncs_every_line_before_record_returns(
    tmp_path: Path, fsync_calls: list[int]
) -> None:
    with JsonlAnalyticsSink(tmp_path / "events.jsonl", fsync_interval_ms=0) as sink:
        for n in range(5):
            sink.record("push.sent", {}, event_id=f"e{n}", occurred_at=OCCURRED_AT)
            assert len(fsync_calls) == n + 1


def test_lines_are_synced_in_the_background_and_at_close_not_per_line(
    tmp_path: Path, fsync_calls: list[int]
) -> None:
    # An interval no test run reaches: only close() syncs.
    with JsonlAnalyticsSink(tmp_path / "events.jsonl", fsync_interval_ms=60_000) as sink:
        for n in range(200):
            sink.record("push.sent", {}, event_id=f"e{n}", occurred_at=OCCURRED_AT)
        assert fsync_calls == []
    assert len(fsync_calls) == 1

    with JsonlAnalyticsSink(tmp_path / "other.jsonl", fsync_interval_ms=20) as sink:
        sink.record("push.sent", {}, event_id="x", occurred_at=OCCURRED_AT)
        deadline = time.monotonic() + WAIT_S
        while len(fsync_calls) == 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(fsync_calls) == 2, "no background fsync without close()"


# -- configuration --------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [("max_bytes", MAX_LINE_BYTES - 1), ("keep_files", 0), ("fsync_interval_ms", -1)],
)
def test_bad_rotation_options_name_the_option(tmp_path: Path, option: str, value: int) -> None:
    with pytest.raises(ValueError, match=f"^{option}:"):
        JsonlAnalyticsSink(tmp_path / "events.jsonl", **{option: value})


@pytest.mark.parametrize(
    ("variable", "value"),
    [("ANALYTICS_MAX_BYTES", str(MAX_LINE_BYTES - 1)), ("ANALYTICS_KEEP_FILES", "0"),
     ("ANALYTICS_FSYNC_INTERVAL_MS", "-5"), ("ANALYTICS_MAX_BYTES", "64MiB")],
)
def test_bad_analytics_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_the_workers_sink_is_built_from_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ANALYTICS_MAX_BYTES", "1048576")
    monkeypatch.setenv("ANALYTICS_KEEP_FILES", "3")
    monkeypatch.setenv("ANALYTICS_FSYNC_INTERVAL_MS", "250")
    services = build_services(load_settings(
        analytics_path=tmp_path / "a.jsonl", device_registry_path=tmp_path / "d.sqlite3",
        delivery_log_path=tmp_path / "l.sqlite3",
    ))
    try:
        sink = services.analytics
        assert isinstance(sink, JsonlAnalyticsSink)
        assert (sink.path, sink.max_bytes, sink.keep_files, sink.fsync_interval_ms) == (
            tmp_path / "a.jsonl", 1_048_576, 3, 250,
        )
    finally:
        services.close()


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


def _appender_process(path: str, writer: str, start: BarrierType, max_bytes: int) -> None:
    with JsonlAnalyticsSink(path, max_bytes=max_bytes, keep_files=1000) as sink:
        _append_events(sink, writer, start)


@pytest.mark.parametrize("max_bytes", [DEFAULT_MAX_BYTES, SMALL_MAX_BYTES],
                         ids=["one-file", "rotating"])
def test_concurrent_appenders_never_lose_or_interleave_lines(
    tmp_path: Path, max_bytes: int
) -> None:
    path = tmp_path / "events.jsonl"
    writers = ["parent", "child-1", "child-2"]
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(THREADS_PER_PROCESS * len(writers), timeout=WAIT_S)
    processes = [
        ctx.Process(target=_appender_process, args=(str(path), writer, start, max_bytes))
        for writer in writers[1:]
    ]
    for process in processes:
        process.start()
    with JsonlAnalyticsSink(path, max_bytes=max_bytes, keep_files=1000) as sink:
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
    files = [*pieces_of(path), path]
    assert sum(f.read_bytes().count(b"\n") for f in files) == len(expected)
    # Each thread's lines come back in the order it wrote them, across pieces.
    sequences: dict[str, list[int]] = {}
    for event in events:
        writer_thread, _, i = event["event_id"].rpartition("-")
        sequences.setdefault(writer_thread, []).append(int(i))
    assert all(seq == sorted(seq) for seq in sequences.values())
    if max_bytes == SMALL_MAX_BYTES:
        assert len(files) > 20  # it did rotate, many times, under three processes
        # A piece runs over only if other processes refilled the new file
        # before this writer got to it, several times over; by a line at most.
        assert all(f.stat().st_size <= max_bytes + MAX_LINE_BYTES for f in files)
