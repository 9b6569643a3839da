"""The scenarios. Each measures one repetition of one system at a time
(:meth:`Scenario.once`); the driver interleaves systems within each
repetition, so a burst of noise on the shared machine spreads over all of
them instead of sinking one system's figures.

Every repetition gets fresh, uniquely named topics and groups
(``bench-<run>-<system>-<scenario><rep>…``), so repetitions, systems and
other people's tests on the shared Kafka never see each other's messages.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from kafka.errors import KafkaError

from bench import push, push_client, startup
from bench.config import Sizes
from bench.log import say
from bench.runner import PeerFailed, RssSampler, run_peer
from bench.stats import Figure, figures
from bench.systems import System

#: Most notifications our clients alone push before a push repetition: at 8
#: threads and 20 ms, some 8 s.
CLIENTS_ALONE_MAX = 3_000

#: Longest one fill, enqueue, drain or priority subprocess may run, in seconds.
STEP_TIMEOUT_S = 420

#: A drain that sees no ack for this long has stalled, in seconds.
STALL_S = 10.0

#: Latency is measured at this fraction of the system's own drain rate.
LATENCY_LOAD = 0.2

#: Sending rate for latency when no drain rate is known yet, messages/s.
DEFAULT_LATENCY_RATE = 200.0

#: Priority: seconds of draining the backlog must outlast beyond the window
#: (group join, readiness, settling), and the margin on top.
PRIORITY_SLACK_S = 11.0
PRIORITY_MARGIN = 1.3

#: Memory: the share of the drain (caches and pools warming up) that the
#: baseline is taken from.
MEMORY_BASELINE_SHARE = 0.2


@dataclass
class Outcome:
    """What one scenario found for one system."""

    figures: dict[str, Figure] = field(default_factory=dict)
    sizes: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    #: The machine's 1-minute load average as each repetition started: a
    #: figure from a loaded machine says little, and the table can't show it.
    load_before_reps: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"figures": {k: f.to_json() for k, f in self.figures.items()},
                "sizes": self.sizes, "notes": self.notes, "skipped": self.skipped,
                "load_before_reps": self.load_before_reps}

    def note_loaded_reps(self, loads: list[float], cores: int) -> None:
        """Keep ``loads`` and note the repetitions that started with more
        runnable work than ``cores``: other work shared the machine then."""
        self.load_before_reps = [round(load, 2) for load in loads]
        loaded = [f"rep {i + 1} at {load:.1f}" for i, load in enumerate(loads) if load > cores]
        if loaded:
            self.notes.append(f"started on a loaded machine ({cores} cores): "
                              f"{', '.join(loaded)}; those figures are noisy")


@dataclass
class Context:
    sizes: Sizes
    bootstrap: str
    run_id: str
    logdir: Path
    #: Size of one of our encoded messages: the raw loops send records this big.
    record_bytes: int
    redis_url: str | None = None
    #: Median drain rates of this run by system, for sizing later scenarios.
    drain_rates: dict[str, float] = field(default_factory=dict)
    steady_rates: dict[str, float] = field(default_factory=dict)

    def name(self, system: System, scenario: str, rep: int) -> str:
        return f"bench-{self.run_id}-{system.key}-{scenario}{rep}"

    def params(self, system: System, name: str, **extra: Any) -> dict[str, Any]:
        return {"bootstrap": self.bootstrap, "partitions": self.sizes.partitions,
                "payload_bytes": self.sizes.payload_bytes, "record_bytes": self.record_bytes,
                "threads": self.sizes.threads, "queue": name, "group": name,
                "redis_url": self.redis_url, "stall_s": STALL_S, **extra}

    def run(self, system: System, mode: str, params: dict[str, Any],
            timeout_s: float = STEP_TIMEOUT_S,
            sample_rss: bool = False) -> tuple[dict[str, Any], RssSampler | None]:
        return run_peer(system, mode, params, timeout_s=timeout_s,
                        log_file=self.logdir / f"{system.key}.log", sample_rss=sample_rss)


class Scenario:
    name: ClassVar[str]
    units: ClassVar[dict[str, str]]

    def sizes(self, ctx: Context, system: System) -> dict[str, Any]:
        raise NotImplementedError

    def once(self, ctx: Context, system: System, rep: int, sizes: dict[str, Any]
             ) -> tuple[dict[str, Any], str]:
        """One repetition: its figures and a progress line."""
        raise NotImplementedError

    def summarize(self, ctx: Context, system: System, reps: list[dict[str, Any]],
                  sizes: dict[str, Any]) -> Outcome:
        return Outcome(figures(reps, self.units), sizes)


class Enqueue(Scenario):
    name = "enqueue"
    units = {"single_rate": "msg/s", "batch_rate": "msg/s"}

    def sizes(self, ctx: Context, system: System) -> dict[str, Any]:
        return {"single": ctx.sizes.count("enqueue_single", system.scaled("enqueue_single")),
                "batch": ctx.sizes.count("enqueue_batch", system.scaled("enqueue_batch"))}

    def once(self, ctx: Context, system: System, rep: int, sizes: dict[str, Any]
             ) -> tuple[dict[str, Any], str]:
        params = ctx.params(system, ctx.name(system, "enq", rep),
                            n_single=sizes["single"], n_batch=sizes["batch"])
        r, _ = ctx.run(system, "enqueue", params)
        return r, f"single {r['single_rate']:.0f}/s, batch {r['batch_rate']:.0f}/s"

    def summarize(self, ctx: Context, system: System, reps: list[dict[str, Any]],
                  sizes: dict[str, Any]) -> Outcome:
        out = super().summarize(ctx, system, reps, sizes)
        if not reps[0].get("batch_api"):
            out.notes.append("no batch form: 'batch' is the plain send loop")
        return out


class Drain(Scenario):
    name = "drain"
    units = {"rate": "msg/s", "steady_rate": "msg/s", "first_ack_s": "s", "peak_rss_mb": "MiB",
             "cpu_us_per_msg": "µs"}

    def sizes(self, ctx: Context, system: System) -> dict[str, Any]:
        return {"n": ctx.sizes.count("drain", system.scaled("drain"))}

    def once(self, ctx: Context, system: System, rep: int, sizes: dict[str, Any]
             ) -> tuple[dict[str, Any], str]:
        params = ctx.params(system, ctx.name(system, "drain", rep), n=sizes["n"])
        ctx.run(system, "fill", params)
        r, rss = ctx.run(system, "drain", params, sample_rss=True)
        after_join = r["seconds"] - r["first_ack_s"]
        r["steady_rate"] = r["n"] / after_join if after_join > 0 else None
        r["peak_rss_mb"] = max((mb for _, mb in rss.samples), default=None) if rss else None
        line = f"{r['rate']:.0f}/s (first ack after {r['first_ack_s']:.2f}s)"
        if r["n"] < sizes["n"]:
            line += f"; STALLED at {r['n']}/{sizes['n']}"
        return r, line

    def summarize(self, ctx: Context, system: System, reps: list[dict[str, Any]],
                  sizes: dict[str, Any]) -> Outcome:
        out = super().summarize(ctx, system, reps, sizes)
        stalled = [f"{r['n']}/{sizes['n']}" for r in reps if r["n"] < sizes["n"]]
        if stalled:
            out.notes.append(f"stalled (no ack for {STALL_S:.0f}s) at {', '.join(stalled)}; "
                             "rate counts what was acked")
        ctx.drain_rates[system.key] = out.figures["rate"].median
        if "steady_rate" in out.figures:
            ctx.steady_rates[system.key] = out.figures["steady_rate"].median
        return out


class Latency(Scenario):
    name = "latency"
    units = {"p50_ms": "ms", "p99_ms": "ms", "max_ms": "ms"}

    def sizes(self, ctx: Context, system: System) -> dict[str, Any]:
        # A fifth of the system's own drain rate, but no faster than ours is
        # loaded, so the ceiling is measured at the same rate as ours.
        own, ours = ctx.drain_rates.get(system.key), ctx.drain_rates.get("ours")
        candidates = [r * LATENCY_LOAD for r in (own, ours) if r]
        rate = round(min(candidates), 1) if candidates else DEFAULT_LATENCY_RATE
        count = int(min(ctx.sizes.latency_max_count,
                        max(ctx.sizes.latency_min_count, rate * ctx.sizes.latency_seconds)))
        return {"rate": rate, "count": count}

    def once(self, ctx: Context, system: System, rep: int, sizes: dict[str, Any]
             ) -> tuple[dict[str, Any], str]:
        params = ctx.params(system, ctx.name(system, "lat", rep), **sizes)
        r, _ = ctx.run(system, "latency", params,
                       timeout_s=sizes["count"] / sizes["rate"] + 180)
        return r, f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms"

    def summarize(self, ctx: Context, system: System, reps: list[dict[str, Any]],
                  sizes: dict[str, Any]) -> Outcome:
        out = super().summarize(ctx, system, reps, sizes)
        short = [f"{r['received']}/{r['expected']}" for r in reps
                 if r["received"] < r["expected"]]
        if short:
            out.notes.append(f"not every message arrived in time: {', '.join(short)}")
        return out


class Priority(Scenario):
    """Three phases per repetition, each a fresh worker on fresh topics:
    idle (high messages only), baseline (low backlog alone), busy (low
    backlog while high messages come)."""

    name = "priority"
    units = {"idle_p50_ms": "ms", "idle_p99_ms": "ms", "busy_p50_ms": "ms",
             "busy_p99_ms": "ms", "low_rate_baseline": "msg/s", "low_rate_busy": "msg/s"}

    def sizes(self, ctx: Context, system: System) -> dict[str, Any]:
        s = ctx.sizes
        window_s = s.priority_count / s.priority_rate
        steady = ctx.steady_rates.get(system.key)
        needed = steady * (window_s + PRIORITY_SLACK_S) * PRIORITY_MARGIN if steady else None
        backlog = (int(min(s.priority_backlog_max, max(s.priority_backlog, needed)))
                   if needed else s.priority_backlog_max)
        return {"backlog": backlog, "high": s.priority_count, "high_rate": s.priority_rate}

    def once(self, ctx: Context, system: System, rep: int, sizes: dict[str, Any]
             ) -> tuple[dict[str, Any], str]:
        found: dict[str, dict[str, Any]] = {}
        for phase in ("idle", "baseline", "busy"):
            name = f"{ctx.name(system, 'prio', rep)}-{phase}"
            params = ctx.params(system, name, high_queue=f"{name}-high", low_queue=f"{name}-low",
                                phase=phase, n=sizes["backlog"], n_low=sizes["backlog"],
                                kind="low", high_priority=0, low_priority=100,
                                rate=sizes["high_rate"], count=sizes["high"])
            if phase != "idle":
                ctx.run(system, "fill", params)
            found[phase], _ = ctx.run(system, "priority", params)
        row = {"idle_p50_ms": found["idle"]["p50_ms"], "idle_p99_ms": found["idle"]["p99_ms"],
               "busy_p50_ms": found["busy"]["p50_ms"], "busy_p99_ms": found["busy"]["p99_ms"],
               "low_rate_baseline": found["baseline"]["low_rate"],
               "low_rate_busy": found["busy"]["low_rate"],
               "ran_out": [p for p in ("baseline", "busy") if found[p]["backlog_left"] <= 0]}
        return row, (f"high p99 idle {row['idle_p99_ms']:.1f} ms / busy "
                     f"{row['busy_p99_ms']:.1f} ms; low {row['low_rate_baseline']:.0f} → "
                     f"{row['low_rate_busy']:.0f}/s")

    def summarize(self, ctx: Context, system: System, reps: list[dict[str, Any]],
                  sizes: dict[str, Any]) -> Outcome:
        out = super().summarize(ctx, system, reps, sizes)
        ran_out = [p for r in reps for p in r["ran_out"]]
        if ran_out:
            out.notes.append(f"the backlog ran out before the window closed in: "
                             f"{', '.join(ran_out)}")
        return out


class Memory(Scenario):
    name = "memory"
    units = {"baseline_mb": "MiB", "peak_mb": "MiB", "end_mb": "MiB", "growth": "×"}

    def sizes(self, ctx: Context, system: System) -> dict[str, Any]:
        return {"n": ctx.sizes.count("memory")}

    def once(self, ctx: Context, system: System, rep: int, sizes: dict[str, Any]
             ) -> tuple[dict[str, Any], str]:
        params = ctx.params(system, ctx.name(system, "mem", rep), n=sizes["n"])
        ctx.run(system, "fill", params)
        result, rss = ctx.run(system, "drain", params, sample_rss=True)
        assert rss is not None
        row = rss_summary(rss, result)
        return row, (f"RSS {row['baseline_mb']:.1f} → peak {row['peak_mb']:.1f} MiB "
                     f"({row['growth']:.3f}×) over {row['samples']} samples")


def rss_summary(rss: RssSampler, result: dict[str, Any]) -> dict[str, Any]:
    """RSS over the drain itself, from first to last ack (by the peer's clock)."""
    opens = result["wall_start"] + result["first_ack_s"]
    closes = result["wall_start"] + result["seconds"]
    inside = [mb for t, mb in rss.samples if opens <= t <= closes] or [
        mb for _, mb in rss.samples]
    head = inside[:max(1, int(len(inside) * MEMORY_BASELINE_SHARE))]
    baseline = sorted(head)[len(head) // 2]
    return {"baseline_mb": baseline, "peak_mb": max(inside), "end_mb": inside[-1],
            "growth": max(inside) / baseline, "samples": len(inside)}


class Push(Scenario):
    """Notifications through a real worker into the fake APNs and FCM, each
    answering after a fixed latency; the machinery is in :mod:`bench.push`."""

    name = "push"
    units = {"rate": "push/s", "rate_from_start": "push/s", "ceiling": "push/s",
             "ratio": "×", "lost": "pairs", "duplicated": "pairs",
             "worker_cpu_ms_per_push": "ms", "fakes_cpu_ms_per_push": "ms",
             "in_flight": "pushes", "connections": "connections",
             "clients_alone_rate": "push/s", "clients_alone_ratio": "×",
             "worker_over_clients": "×", "clients_cpu_ms_per_push": "ms"}
    #: The fakes' answer delay, seconds.
    latency_s = push.LATENCY_S

    def sizes(self, ctx: Context, system: System) -> dict[str, Any]:
        return {"n": ctx.sizes.count("push"), "latency_ms": self.latency_s * 1000,
                "threads": ctx.sizes.threads}

    def once(self, ctx: Context, system: System, rep: int, sizes: dict[str, Any]
             ) -> tuple[dict[str, Any], str]:
        name = ctx.name(system, self.name, rep)
        try:
            clients = push_client.client_alone(
                n=min(sizes["n"], CLIENTS_ALONE_MAX), threads=sizes["threads"],
                latency_s=self.latency_s, workdir=ctx.logdir / name / "clients-alone")
        except (push_client.ClientAloneFailed, OSError, subprocess.TimeoutExpired) as e:
            say(f"  (our clients alone could not be measured: {e})")
            clients = {}
        try:
            r = push.run_once(bootstrap=ctx.bootstrap, group=name, n=sizes["n"],
                              threads=sizes["threads"], workdir=ctx.logdir / name,
                              latency_s=self.latency_s)
        except (push.PushFailed, KafkaError, OSError) as e:
            raise PeerFailed(f"push: {e}") from e
        if clients:
            r["clients_alone_rate"] = clients["rate"]
            r["clients_alone_ratio"] = clients["rate"] / r["ceiling"]
            r["worker_over_clients"] = r["rate"] / clients["rate"]
            r["clients_cpu_ms_per_push"] = clients["cpu_ms_per_push"]
        line = (f"{r['rate']:.0f}/s of a {r['ceiling']:.0f}/s ceiling ({r['ratio']:.2f}×), "
                f"{r['rate_from_start']:.0f}/s from worker start; {r['pushes']}/{r['expected']}"
                f" pushed, {r['lost']} lost, {r['duplicated']} duplicated; CPU per push:"
                f" worker {r['worker_cpu_ms_per_push']:.2f} ms, fakes"
                f" {r['fakes_cpu_ms_per_push']:.2f} ms; median {r['in_flight']:.0f} in flight"
                f" on {r['connections']} connections")
        if clients:
            line += (f"; our clients alone {clients['rate']:.0f}/s"
                     f" ({r['clients_alone_ratio']:.2f}× the ceiling,"
                     f" {clients['cpu_ms_per_push']:.2f} ms CPU per push)")
        return r, line

    def summarize(self, ctx: Context, system: System, reps: list[dict[str, Any]],
                  sizes: dict[str, Any]) -> Outcome:
        out = super().summarize(ctx, system, reps, sizes)
        out.notes.append(f"ceiling = {reps[0]['formula']}; one device per notification, "
                         "half iOS (HTTP/2), half Android (FCM v1)")
        out.sizes["fakes"] = reps[0]["fakes"]
        out.notes.append(f"fake APNs and FCM: {reps[0]['fakes']}; their CPU is reported apart")
        out.notes.append("clients alone: our APNs and FCM clients pushing from as many threads"
                         " to fakes of their own, with no worker (bench/push_client.py): the"
                         " most a worker reaches with them here; worker / clients is what the"
                         " worker itself costs")
        for key in ("lost", "duplicated", "unexpected", "refused"):
            bad = [r[key] for r in reps if r[key]]
            if bad:
                out.notes.append(f"{key}: {', '.join(map(str, bad))} in "
                                 f"{len(bad)} of {len(reps)} runs")
        if not all(r["finished"] for r in reps):
            out.notes.append(f"pushes stopped coming before all arrived in "
                             f"{sum(not r['finished'] for r in reps)} runs")
        if any(r["flushed_by_others"] for r in reps):
            out.notes.append("another process flushed the application's topics during a run "
                             "(make test, make demo): its figures are not comparable")
        return out


class PushWide(Push):
    """The push scenario with slow providers (100 ms) and many pushes in flight
    in one worker process (256 threads): where waiting, not CPU, should bound
    the rate."""

    name = "push-wide"
    latency_s = push.WIDE_LATENCY_S

    def sizes(self, ctx: Context, system: System) -> dict[str, Any]:
        return {"n": ctx.sizes.count("push_wide"), "latency_ms": self.latency_s * 1000,
                "threads": ctx.sizes.push_wide_threads}


class Startup(Scenario):
    """How soon a started worker runs its first message: from ``Worker.start()``
    in the peer's process (six consumers, as ``dramatiq willowe_tasks`` has),
    Dramatiq's two composition checks timed from ``Worker.start()`` (see
    ``bench/peers/_startup.py``), and, for ours, from launching the
    application's worker process (see :mod:`bench.startup`)."""

    name = "startup"
    units = {"worker_start_s": "s", "process_start_s": "s", "group_s": "s",
             "inner_groups_s": "s"}

    def sizes(self, ctx: Context, system: System) -> dict[str, Any]:
        return {}

    def once(self, ctx: Context, system: System, rep: int, sizes: dict[str, Any]
             ) -> tuple[dict[str, Any], str]:
        name = ctx.name(system, "start", rep)
        # With slots, ours' consumers are static members, as the application's are.
        r, _ = ctx.run(system, "startup",
                       ctx.params(system, name, slots=str(ctx.logdir / name / "slots")))
        line = (f"first message {r['worker_start_s']:.3f}s after Worker.start(); group "
                f"{r['group_s']:.3f}s, inner groups {r['inner_groups_s']:.3f}s")
        if system.key == "ours":
            try:
                r["process_start_s"] = startup.process_start(
                    bootstrap=ctx.bootstrap, group=f"{name}-process", workdir=ctx.logdir / name,
                    threads=ctx.sizes.threads)
            except (startup.StartupFailed, KafkaError, OSError) as e:
                raise PeerFailed(f"startup: {e}") from e
            line += f"; {r['process_start_s']:.3f}s from launching dramatiq willowe_tasks"
        return r, line


#: In run order: drain before latency and priority, which are sized from it.
SCENARIOS: dict[str, Scenario] = {s.name: s for s in (Enqueue(), Drain(), Latency(),
                                                      Priority(), Memory(), Push(),
                                                      PushWide(), Startup())}

from bench import compression  # noqa: E402, F401  (adds its scenario to SCENARIOS)
