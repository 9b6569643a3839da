"""The operator tools' parts that need no Kafka: metrics arithmetic, token
hiding, deadlines, thresholds, pacing and the audit log."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from willowe_tasks.app import App
from willowe_tasks.kinds import KINDS
from willowe_tasks.ops.audit import record_action
from willowe_tasks.ops.dashboard.metrics import (
    MetricsWindow,
    histogram_quantile,
    parse_exposition,
)
from willowe_tasks.ops.dead_letters import parse_dead_letter
from willowe_tasks.ops.deadlines import deadline_of
from willowe_tasks.ops.redact import redact_arguments, redact_text, token_argument_positions
from willowe_tasks.ops.replay import Replayer, ReplayPlan
from willowe_tasks.ops.status import parse_max_lag
from willowe_tasks.registration import REGISTER_ACTOR, UNREGISTER_ACTOR
from willowe_tasks.settings import load_settings
from willowe_tasks.tokens import token_hash


def exposition(processed: float, retried: float, buckets: dict[str, float]) -> str:
    lines = [
        "# TYPE willowe_messages_total counter",
        f'willowe_messages_total{{topic="high-priority-notifications",actor="send_match",'
        f'outcome="processed"}} {processed}',
        f'willowe_messages_total{{topic="high-priority-notifications",actor="send_match",'
        f'outcome="retried"}} {retried}',
        "# TYPE willowe_send_to_accepted_seconds histogram",
    ]
    for le, count in buckets.items():
        lines.append(f'willowe_send_to_accepted_seconds_bucket{{priority="high",le="{le}"}}'
                     f" {count}")
    return "\n".join(lines) + "\n"


def test_histogram_quantiles_interpolate_inside_the_bucket_as_prometheus_does() -> None:
    # 100 observations: 50 up to 0.1 s, 40 more up to 0.5 s, 10 more up to 1 s
    buckets = {0.1: 50, 0.5: 90, 1.0: 100, math.inf: 100}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.1 + 0.4 * 20 / 40)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.5 + 0.5 * 9 / 10)
    # past the highest finite bound, that bound is all that is known
    assert histogram_quantile(0.99, {0.1: 1, math.inf: 100}) == 0.1
    assert histogram_quantile(0.5, {0.1: 0, math.inf: 0}) is None


def test_the_window_measures_increases_and_survives_a_worker_restart() -> None:
    window = MetricsWindow(window_s=300)
    start = time.time()
    window.add(parse_exposition(exposition(100, 0, {"0.1": 10, "1.0": 10, "+Inf": 10}), start))
    assert window.stats() is None  # one scrape says nothing about a rate
    window.add(parse_exposition(exposition(160, 2, {"0.1": 60, "1.0": 70, "+Inf": 70}),
                                start + 10))
    # the worker restarted: its counters start again from zero
    window.add(parse_exposition(exposition(38, 0, {"0.1": 0, "1.0": 40, "+Inf": 40}),
                                start + 20))
    stats = window.stats()
    assert stats is not None
    high = stats.priorities["high"]
    assert stats.span_s == pytest.approx(20)
    assert high.processed_per_s == pytest.approx((60 + 38) / 20)
    assert high.error_rate == pytest.approx(2 / (60 + 2 + 38))
    # 100 latencies in the window: 50 up to 0.1 s, 50 between 0.1 and 1 s
    assert high.p50_s == pytest.approx(0.1)
    assert high.p99_s == pytest.approx(0.1 + 0.9 * 49 / 50)
    assert stats.priorities["low"].error_rate is None
    assert [round(v, 1) for _, v in stats.throughput] == [6.0, 3.8]


def test_the_window_forgets_scrapes_older_than_its_length() -> None:
    window = MetricsWindow(window_s=60)
    for n in range(10):
        window.add(parse_exposition(exposition(n * 100, 0, {"+Inf": 0}), 1000.0 + n * 30))
    stats = window.stats()
    assert stats is not None
    # the baseline is the last scrape at or before the window's start
    assert stats.span_s == pytest.approx(60)
    assert stats.priorities["high"].processed_per_s == pytest.approx(200 / 60)


def test_token_like_text_is_hashed_and_other_text_left_alone() -> None:
    apns = "a1" * 32
    fcm = "fcm-token:" + "APA91b" * 25
    text = f"refused {apns} and {fcm}; message 26c7fd04-e2e8-454b-89cd-2b72ffc6aeca at 42"
    shown = redact_text(text)
    assert apns not in shown and fcm not in shown
    assert token_hash(apns) in shown and token_hash(fcm) in shown
    assert "26c7fd04-e2e8-454b-89cd-2b72ffc6aeca at 42" in shown


def test_the_registration_actors_token_arguments_are_found_and_hashed() -> None:
    app = App(load_settings(kafka_broker="127.0.0.1:1"))
    positions = token_argument_positions(app.broker)
    assert positions[REGISTER_ACTOR] == (2,)
    assert positions[UNREGISTER_ACTOR] == (0,)
    assert "send_match" not in positions
    shown = redact_arguments(REGISTER_ACTOR, ["user-1", "android", "short-token", "app"],
                             positions)
    assert shown == ["user-1", "android", token_hash("short-token"), "app"]


def test_every_notification_actor_has_the_deadline_the_worker_applies() -> None:
    app = App(load_settings(kafka_broker="127.0.0.1:1"))
    sent_ms = 1_800_000_000_000
    for name, kind in KINDS.items():
        message = getattr(app.actors, f"send_{name}").message(
            "u1", {"name": "Анна", "age": 25}).copy(message_timestamp=sent_ms)
        assert deadline_of(message.asdict()) == sent_ms / 1000 + kind.ttl_s, name
    custom = app.actors.send_notification.actor("low").message(
        {"type": "custom", "target_user_id": "u1", "title": "t", "body": "b", "ttl_s": 60}
    ).copy(message_timestamp=sent_ms)
    assert deadline_of(custom.asdict()) == sent_ms / 1000 + 60
    event = app.actors.track_event.message("login", {}).copy(message_timestamp=sent_ms)
    assert deadline_of(event.asdict()) is None


def test_max_lag_reads_priorities_and_durations_and_refuses_the_rest() -> None:
    assert parse_max_lag("high=30, medium=5m,low=1h") == {"high": 30, "medium": 300,
                                                          "low": 3600}
    for bad, says in (("high", "priority=seconds"), ("urgent=3", "priority must be one of"),
                      ("high=0", "above 0"), ("high=soon", "above 0"), ("", "expected")):
        with pytest.raises(ValueError, match=says):
            parse_max_lag(bad)


class _Future:
    def __init__(self, offset: int) -> None:
        self.offset = offset

    def get(self, timeout: float) -> Any:
        return type("Meta", (), {"topic": "t", "partition": 0, "offset": self.offset})


class _Producer:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, topic: str, **record: Any) -> _Future:
        self.sent.append(topic)
        return _Future(len(self.sent))


class _Log:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, str]] = []

    def record(self, entries: list[Any]) -> None:
        self.recorded += [(letter.where, outcome) for letter, outcome, _ in entries]


def letters(count: int) -> list[Any]:
    body = {"queue_name": "high-priority-notifications", "actor_name": "send_match",
            "args": ["u", {}], "kwargs": {}, "options": {"retries": 2},
            "message_id": "m", "message_timestamp": int(time.time() * 1000)}
    return [parse_dead_letter("high-priority-notifications.XQ", 0, n, 0, None,
                              json.dumps({**body, "message_id": f"m{n}"}).encode(), [])
            for n in range(count)]


def test_a_paced_replay_sleeps_to_its_rate_and_records_every_acknowledged_copy() -> None:
    clock = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    producer, log = _Producer(), _Log()
    replayer = Replayer(producer, log, rate_per_s=5, sleep=sleep,  # type: ignore[arg-type]
                        clock=lambda: clock[0])
    done = replayer.run(ReplayPlan(send=letters(12)))
    assert done == 12 and len(producer.sent) == 12
    assert set(producer.sent) == {"high-priority-notifications"}
    # 12 sends at 5/s: the last leaves 11/5 s after the first
    assert clock[0] == pytest.approx(11 / 5)
    assert [w for w, _ in log.recorded] == [d.where for d in letters(12)]


def test_an_interrupted_replay_records_what_kafka_took_before_it_stops() -> None:
    producer, log = _Producer(), _Log()
    original = producer.send

    def send(topic: str, **record: Any) -> _Future:
        if len(producer.sent) == 3:
            raise KeyboardInterrupt
        return original(topic, **record)

    producer.send = send  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        Replayer(producer, log).run(ReplayPlan(send=letters(10)))  # type: ignore[arg-type]
    assert [w for w, _ in log.recorded] == [d.where for d in letters(3)]


def test_a_rate_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="above 0"):
        Replayer(_Producer(), _Log(), rate_per_s=0)  # type: ignore[arg-type]


def test_audit_lines_from_many_threads_stay_whole(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "ops.jsonl"

    def act(n: int) -> None:
        for i in range(20):
            record_action(path, operator="alice", action="dlq replay",
                          filters={"reason": "x" * 2000, "n": n}, counts={"replayed": i},
                          result="ok")

    threads = [threading.Thread(target=act, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 160
    assert {line["operator"] for line in lines} == {"alice"}
    assert path.stat().st_mode & 0o777 == 0o600
