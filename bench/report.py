"""The table (Markdown, readable in a terminal too) and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.scenarios import Outcome
from bench.systems import BY_KEY

#: The push scenarios' columns, at either latency.
_PUSH_COLUMNS = [
    ("push/s (first → last push)", "rate"), ("push/s from worker start", "rate_from_start"),
    ("ceiling, push/s", "ceiling"), ("rate / ceiling", "ratio"), ("lost", "lost"),
    ("duplicated", "duplicated"), ("worker CPU ms/push", "worker_cpu_ms_per_push"),
    ("fakes' CPU ms/push", "fakes_cpu_ms_per_push"),
    ("our clients alone, push/s", "clients_alone_rate"),
    ("worker / clients alone", "worker_over_clients")]

#: Per scenario: (column title, figure key) and how its sizes read.
COLUMNS: dict[str, list[tuple[str, str]]] = {
    "enqueue": [("single send, msg/s", "single_rate"), ("batch, msg/s", "batch_rate")],
    "drain": [("msg/s (start → last ack)", "rate"), ("msg/s after first ack", "steady_rate"),
              ("first ack, s", "first_ack_s"), ("peak RSS, MiB", "peak_rss_mb"),
              ("CPU µs/msg", "cpu_us_per_msg")],
    "latency": [("p50, ms", "p50_ms"), ("p99, ms", "p99_ms"), ("max, ms", "max_ms")],
    "priority": [("high p99 idle, ms", "idle_p99_ms"), ("high p99 under backlog, ms",
                                                          "busy_p99_ms"),
                 ("low msg/s alone", "low_rate_baseline"),
                 ("low msg/s with high traffic", "low_rate_busy")],
    "memory": [("RSS early in drain, MiB", "baseline_mb"), ("peak, MiB", "peak_mb"),
               ("at end, MiB", "end_mb"), ("peak / early", "growth")],
    "push": _PUSH_COLUMNS,
    "push-wide": _PUSH_COLUMNS,
    "startup": [("Worker.start() → first message, s", "worker_start_s"),
                ("process launch → first message, s", "process_start_s"),
                ("5 parallel 100 ms jobs done, s", "group_s"),
                ("3 groups of 2 jobs done, s", "inner_groups_s")],
}

TITLES: dict[str, str] = {
    "enqueue": "Enqueue: `actor.send()` one by one, and the batch form",
    "drain": "Drain: one worker process, 8 threads, queued no-op messages",
    "latency": "Latency: send → actor start at a steady rate (a fifth of the drain rate)",
    "priority": "Priority: high-priority messages at 10/s while a low-priority backlog drains",
    "memory": "Memory: worker RSS while a backlog drains",
    "push": "Push: notifications through the worker into fake APNs and FCM (20 ms latency)",
    "push-wide": "Push, slow providers: the same at 100 ms latency, 256 worker threads",
    "startup": "Start-up: a fresh worker on a warm server, timed from its start",
}


def _sizes(scenario: str, sizes: dict[str, Any]) -> str:
    if not sizes:
        return ""
    if scenario == "enqueue":
        return f"{sizes['single']:,} single / {sizes['batch']:,} batch"
    if scenario == "latency":
        return f"{sizes['count']:,} at {sizes['rate']:g}/s"
    if scenario == "priority":
        return f"{sizes['backlog']:,} low, {sizes['high']} high at {sizes['high_rate']:g}/s"
    if scenario in ("push", "push-wide"):
        return f"{sizes['n']:,} notifications, one device each, {sizes['threads']} threads"
    return f"{sizes.get('n', 0):,}"


def table(results: dict[str, dict[str, Outcome]], goals: list[dict[str, Any]],
          reps: int) -> str:
    lines: list[str] = []
    for scenario, by_system in results.items():
        if not by_system:
            continue
        cols = COLUMNS[scenario]
        lines += [f"#### {TITLES[scenario]}", "",
                  "| system | " + " | ".join(t for t, _ in cols) + " | messages |",
                  "|---" * (len(cols) + 2) + "|"]
        for key, outcome in by_system.items():
            label = BY_KEY[key].label
            if outcome.skipped:
                lines.append(f"| {label} | skipped: {outcome.skipped} |" + " |" * len(cols))
                continue
            cells = [outcome.figures[k].show() if k in outcome.figures else "–" for _, k in cols]
            lines.append(f"| {label} | " + " | ".join(cells)
                         + f" | {_sizes(scenario, outcome.sizes)} |")
        notes = [f"{BY_KEY[k].label}: {n}" for k, o in by_system.items() for n in o.notes]
        lines += [""] + [f"- {n}" for n in notes] + ([""] if notes else [])
    lines += [f"Each figure: median of {reps} runs (min–max).", "",
              "#### Goals (ratios of medians, same run)", "",
              "| goal | ours | compared with | ratio | target | result |",
              "|---|---|---|---|---|---|"]
    for g in goals:
        if g["ratio"] is None:
            lines.append(f"| {g['goal']} | – | – | – | {g['target']} | {g['status']} |")
            continue
        lines.append(f"| {g['goal']} | {_n(g['ours'])} {g['unit']} | {_n(g['base'])} "
                     f"{g['unit']} | {g['ratio']:.2f}× | {g['target']} | {g['status']} |")
    return "\n".join(lines) + "\n"


def system_notes(keys: list[str]) -> str:
    return "\n".join(f"- {BY_KEY[k].label}: {BY_KEY[k].note}" for k in keys
                     if BY_KEY[k].note) + "\n"


def write(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def _n(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"
