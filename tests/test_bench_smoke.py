"""The benchmark harness still works: its pieces on made-up numbers, one
tiny enqueue of ours and of the raw loop through the real peer scripts, and
a tiny push run through a real worker into the fake APNs and FCM."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

# bench/ is a top-level folder run with ``python -m bench``, not an installed
# package: make it importable from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import cleanup, goals, push, push_fakes, report  # noqa: E402
from bench.config import QUICK  # noqa: E402
from bench.proc_cpu import session_cpu_s  # noqa: E402
from bench.profiling import summarize  # noqa: E402
from bench.runner import run_peer  # noqa: E402
from bench.scenarios import SCENARIOS, Context, Outcome  # noqa: E402
from bench.stats import Figure  # noqa: E402
from bench.systems import OURS, RAW, STUB  # noqa: E402


def _outcome(**medians: float) -> Outcome:
    return Outcome({k: Figure.of([v * 0.9, v, v * 1.1], "x") for k, v in medians.items()})


def test_a_figure_is_the_median_with_its_spread() -> None:
    figure = Figure.of([3.0, 1.0, 2.0], "msg/s")
    assert (figure.median, figure.low, figure.high) == (2.0, 1.0, 3.0)
    assert figure.show() == "2.00 (1.00–3.00)"


def test_goals_compare_medians_and_say_pass_or_miss() -> None:
    results = {
        "drain": {"ours": _outcome(rate=3000), "redis": _outcome(rate=2000),
                  "raw": _outcome(rate=10_000)},
        "latency": {"ours": _outcome(p99_ms=10), "raw": _outcome(p99_ms=4)},
    }
    rows = {r["goal"]: r for r in goals.evaluate(results)}
    assert rows["drain ≥ 1.0× Dramatiq+Redis (no Kafka)"]["status"] == "pass"
    assert rows["drain after first ack ≥ 0.9× StubBroker"]["status"] == "not run"
    assert rows["latency p99 ≤ 2× raw produce→consume"]["status"] == "MISS"
    assert rows["drain ≥ 3× Celery on Kafka"]["status"] == "not run"
    text = report.table(results, goals.evaluate(results), reps=3)
    assert "| ours (KafkaBroker) | 3,000 (2,700–3,300)" in text


def test_the_batch_bound_adds_dramatiqs_and_the_clients_time_per_message() -> None:
    # StubBroker encodes 20k/s (50 µs each), the raw client produces 5k/s
    # (200 µs each): the bound is one message per 250 µs, 4k/s.
    results = {"enqueue": {"ours": _outcome(batch_rate=3000), "stub": _outcome(batch_rate=20_000),
                           "raw": _outcome(batch_rate=5000)}}
    [row] = [r for r in goals.evaluate(results) if "StubBroker-plus-client" in r["goal"]]
    assert row["base"] == pytest.approx(4000)
    assert row["ratio"] == pytest.approx(0.75) and row["status"] == "MISS"
    del results["enqueue"]["raw"]
    [row] = [r for r in goals.evaluate(results) if "StubBroker-plus-client" in r["goal"]]
    assert row["status"] == "not run"


def test_encryption_cost_goals_compare_keys_on_with_keys_off_at_the_shipped_compression(
) -> None:
    # Sealed at the shipped settings: batches 10 % slower (a pass), draining
    # 20 % slower and 30 % more CPU per drained message (misses).
    results = {"compression": {"ours": _outcome(
        plain_on_batch_rate=10_000, sealed_on_batch_rate=9_000,
        plain_on_drain_rate=5_000, sealed_on_drain_rate=4_000,
        plain_on_batch_cpu_us=100, sealed_on_batch_cpu_us=110,
        plain_on_drain_cpu_us=200, sealed_on_drain_cpu_us=260,
        # (compression off must not count: the goal holds compression fixed)
        sealed_off_batch_rate=1, sealed_off_drain_rate=1)}}
    rows = {r["goal"].split(": ", 1)[1]: r for r in goals.evaluate(results)
            if r["goal"].startswith("encryption cost")}
    assert set(rows) == {"batch rate >= 0.85× keys off", "drain rate >= 0.85× keys off",
                         "batch CPU/msg <= 1.18× keys off", "drain CPU/msg <= 1.18× keys off"}
    assert rows["batch rate >= 0.85× keys off"]["ratio"] == pytest.approx(0.9)
    assert rows["batch rate >= 0.85× keys off"]["status"] == "pass"
    assert rows["drain rate >= 0.85× keys off"]["status"] == "MISS"
    assert rows["batch CPU/msg <= 1.18× keys off"]["status"] == "pass"
    assert rows["drain CPU/msg <= 1.18× keys off"]["ratio"] == pytest.approx(1.3)
    assert rows["drain CPU/msg <= 1.18× keys off"]["status"] == "MISS"
    # And every row names the compression both sides ran with
    assert all("KAFKA_COMPRESSION=lz4, PAYLOAD_COMPRESSION=auto" in r["goal"]
               for r in rows.values())


def test_threshold_goals_compare_ours_with_a_fixed_limit() -> None:
    results = {"startup": {"ours": _outcome(worker_start_s=0.4, group_s=0.6)}}
    rows = {r["goal"]: r for r in goals.evaluate(results)}
    first = rows["start-up: Worker.start() → first message ≤ 0.5 s (warm Kafka)"]
    assert first["status"] == "pass" and first["ratio"] == pytest.approx(0.8)
    assert first["target"] == "<= 0.5 s"
    group = rows["five parallel 100 ms jobs done ≤ 0.5 s after Worker.start()"]
    assert group["status"] == "MISS" and group["ours"] == pytest.approx(0.6)
    inner = rows["three groups of two 100 ms jobs done ≤ 0.5 s after Worker.start()"]
    assert inner["status"] == "not run"


def test_the_startup_mode_times_a_first_message_and_both_compositions(
        tmp_path: Path, unique_name: str) -> None:
    # The StubBroker peer: the same peer code as ours, no Kafka and quick.
    ctx = Context(QUICK, "127.0.0.1:1", "smoke", tmp_path, record_bytes=230)
    result, _ = run_peer(STUB, "startup", ctx.params(STUB, unique_name), timeout_s=120,
                         log_file=tmp_path / "log")
    assert result["worker_start_s"] > 0
    # Each composition's jobs sleep 100 ms, so its time covers at least one
    # (a floor the clock guarantees; no upper bound is asserted).
    assert result["group_s"] >= 0.1 and result["inner_groups_s"] >= 0.1


def test_profile_summary_groups_samples_by_thread_and_function(tmp_path: Path) -> None:
    raw = tmp_path / "x.raw"
    raw.write_text(
        "Thread.run (threading.py:1);WorkerThread.run (dramatiq/worker.py:534);"
        "Queue.get (queue.py:180) 3\n"
        "Thread.run (threading.py:1);ConsumerThread.run (dramatiq/worker.py:314);"
        "KafkaConsumer.poll (kafka/consumer/group.py:827) 1\n"
    )
    text = summarize(raw)
    assert "75.0%  dramatiq worker thread" in text
    assert "25.0%  KafkaConsumer.poll (kafka/consumer/group.py:827)" in text


@pytest.mark.parametrize("system", [OURS, RAW], ids=lambda s: s.key)
def test_a_tiny_enqueue_runs_through_the_peer_script(kafka_bootstrap: str, unique_name: str,
                                                     tmp_path: Path, system) -> None:
    ctx = Context(QUICK, kafka_bootstrap, "smoke", tmp_path, record_bytes=230)
    params = ctx.params(system, unique_name, n_single=5, n_batch=50)
    result, _ = run_peer(system, "enqueue", params, timeout_s=120, log_file=tmp_path / "log")
    assert result["single_rate"] > 0 and result["batch_rate"] > 0


def test_session_cpu_counts_every_live_process_of_the_session() -> None:
    # Given a child in a session of its own that burns CPU in a grandchild
    burn = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
            "time.sleep(60)\n")
    leader = subprocess.Popen([sys.executable, "-c", burn], start_new_session=True)
    try:
        # When it has run a while, Then the session's CPU includes the grandchild's
        deadline = time.monotonic() + 30
        while (cpu := session_cpu_s(leader.pid)) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cpu >= 0.3
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait(timeout=10)


@pytest.mark.slow
def test_a_tiny_push_run_pushes_every_notification_exactly_once(kafka_bootstrap: str,
                                                                tmp_path: Path) -> None:
    sizes = dataclasses.replace(QUICK, push=6, threads=2)
    run_id = f"smoke{uuid.uuid4().hex[:8]}"
    ctx = Context(sizes, kafka_bootstrap, run_id, tmp_path, record_bytes=230)
    scenario = SCENARIOS["push"]
    size = scenario.sizes(ctx, OURS)
    try:
        row, _ = scenario.once(ctx, OURS, 0, size)
    finally:
        cleanup.delete_run(kafka_bootstrap, f"bench-{run_id}")

    # Every notification reached its one device once, half of them through APNs.
    assert row["pushes"] == row["expected"] == 6
    assert (row["lost"], row["duplicated"], row["unexpected"], row["refused"]) == (0, 0, 0, 0)
    assert row["ios"] == 3 and row["finished"] and not row["flushed_by_others"]
    # Two threads, one push each in flight: the ceiling is 2 ÷ latency.
    assert row["ceiling"] == pytest.approx(2 / push.LATENCY_S)
    assert row["rate_from_start"] > 0 and row["ratio"] == row["rate"] / row["ceiling"] > 0
    # No more in flight than the threads, over a connection to each provider at least.
    assert 1 <= row["in_flight"] <= 2 and row["connections"] >= 2
    # The run says which fakes answered: the Go ones wherever go is installed.
    assert row["fakes"].startswith("go" if shutil.which("go") else "python")

    outcome = scenario.summarize(ctx, OURS, [row], size)
    assert {"rate", "rate_from_start", "ceiling", "ratio", "lost", "duplicated", "in_flight",
            "connections"} <= set(outcome.figures)
    assert outcome.sizes["fakes"] == row["fakes"]
    evaluated = goals.evaluate({"push": {"ours": outcome}})
    [goal] = [g for g in evaluated if g["goal"].startswith("push ≥")]
    assert goal["status"] in ("pass", "MISS") and goal["ratio"] == pytest.approx(row["ratio"])
    # CPU per push is measured from the first push on, the worker's and the fakes' apart.
    [cpu] = [g for g in evaluated if g["goal"].startswith("push: worker CPU")]
    assert cpu["ours"] == row["worker_cpu_ms_per_push"] >= 0 <= row["fakes_cpu_ms_per_push"]
    assert "| ours (KafkaBroker) |" in report.table({"push": {"ours": outcome}}, evaluated, 1)


def test_our_clients_alone_push_every_notification_to_fakes_of_their_own(tmp_path: Path
                                                                         ) -> None:
    from bench.push_client import WARM_UP_PER_THREAD, client_alone

    figures = client_alone(n=12, threads=3, latency_s=0.0, workdir=tmp_path)
    # Every push, the warm-up's included, reached the fakes and was accepted
    assert figures["pushed"] == 12 + WARM_UP_PER_THREAD * 3
    assert figures["rate"] > 0 and figures["cpu_ms_per_push"] > 0


def test_pushes_in_flight_are_those_that_arrived_within_one_latency() -> None:
    # Given a push every 10 ms held 50 ms each: five in flight once under way
    arrivals = [i * 0.01 for i in range(100)]
    assert push.median_in_flight(arrivals, 0.05) == pytest.approx(5, abs=1)
    # and a burst of 8 at once, each of the 8 sees those before it and itself
    assert push.median_in_flight([1.0] * 8, 0.05) == 4.5
    assert push.median_in_flight([], 0.05) == 0


def test_without_go_the_push_bench_falls_back_to_the_python_fakes(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Given a machine without go
    monkeypatch.setattr(shutil, "which", lambda name: None)
    # When the push bench starts its fakes, then they are the in-process Python ones
    with push_fakes.provider_fakes(latency_s=0.0, log=tmp_path / "fakes.log") as fakes:
        assert fakes.kind.startswith("python") and "go is not on PATH" in fakes.kind
        assert fakes.apns.url.startswith("https://127.0.0.1:") and fakes.count() == 0


def test_an_outcome_keeps_each_reps_load_and_notes_the_loaded_ones() -> None:
    outcome = Outcome()
    outcome.note_loaded_reps([0.734, 3.5, 1.9], cores=2)
    assert outcome.load_before_reps == [0.73, 3.5, 1.9]
    assert outcome.notes == ["started on a loaded machine (2 cores): rep 2 at 3.5; "
                             "those figures are noisy"]
    assert outcome.to_json()["load_before_reps"] == [0.73, 3.5, 1.9]


def test_an_outcome_on_a_quiet_machine_gets_no_note() -> None:
    outcome = Outcome()
    outcome.note_loaded_reps([0.5, 1.2, 2.0], cores=2)
    assert outcome.notes == []
