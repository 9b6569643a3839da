"""Runs the scenarios over the systems: repetition-major, so every system
is measured once before any is measured again."""

from __future__ import annotations

import os
from typing import Any

from bench.log import say
from bench.runner import PeerFailed
from bench.scenarios import SCENARIOS, Context, Outcome
from bench.systems import System

Results = dict[str, dict[str, Outcome]]


def run_all(ctx: Context, scenarios: list[str], systems: list[System]) -> Results:
    results: Results = {}
    for name in scenarios:
        scenario = SCENARIOS[name]
        active = [s for s in systems if name in s.scenarios]
        sizes = {s.key: scenario.sizes(ctx, s) for s in active}
        say(f"{name}: {', '.join(f'{s.key} {sizes[s.key]}' for s in active)}")
        reps: dict[str, list[dict[str, Any]]] = {s.key: [] for s in active}
        loads: dict[str, list[float]] = {s.key: [] for s in active}
        failed: dict[str, str] = {}
        for rep in range(ctx.sizes.reps):
            for system in active:
                if system.key in failed:
                    continue
                load = os.getloadavg()[0]
                try:
                    row, line = scenario.once(ctx, system, rep, sizes[system.key])
                except PeerFailed as e:
                    failed[system.key] = str(e).splitlines()[0]
                    say(f"{name:8} {system.key:15} rep {rep + 1}: FAILED, skipping it: {e}")
                    continue
                reps[system.key].append(row)
                loads[system.key].append(load)
                say(f"{name:8} {system.key:15} rep {rep + 1}/{ctx.sizes.reps}: {line} "
                    f"(load {load:.1f})")
        results[name] = {}
        for system in active:
            if system.key in failed:
                results[name][system.key] = Outcome(skipped=failed[system.key])
            else:
                outcome = scenario.summarize(ctx, system, reps[system.key], sizes[system.key])
                outcome.note_loaded_reps(loads[system.key], os.cpu_count() or 1)
                results[name][system.key] = outcome
    return results
