"""Cluster drills: brokers of a three-node Kafka fail while a sender calls
``send()`` at 50/s and a worker drains the queue (3 copies, 2 in sync).

- ``cluster-broker-kill``: SIGKILL a broker that leads partitions (not the
  active controller, as with dedicated controllers in production), start
  it again after 10 s: no send may fail. Then the same with the node of
  the active controller: sends in flight during the controller's failover
  (a few seconds) may fail, none after. No message lost.
- ``cluster-rolling-restart``: stop (SIGTERM: a controlled shutdown) and
  start each node in turn, waiting for every replica to be back in sync
  before the next. No message lost.
- ``cluster-two-down``: stop two nodes. Sends must fail, with
  NotEnoughReplicas once the circuit has found the cause, and never be
  acknowledged with one copy; once one node is back (two in sync) sends go
  through again. No message lost.

They share one private cluster (see ``_cluster_rig``).
"""

from __future__ import annotations

import time
from collections import Counter

from bench.drills._cluster_rig import ClusterRun, SendRecord
from bench.drills._common import Context, Result, wait_until
from bench.log import say
from broker.kafka import DEFAULT_SEND_TIMEOUT_MS

#: How long the killed broker stays down while sends go on, in seconds.
KILLED_S = 10.0

#: How long the two stopped nodes stay down while sends go on, in seconds.
TWO_DOWN_S = 6.0

#: Sending goes on this long once every replica is back in sync, in seconds.
AFTER_S = 5.0

#: Longest wait for the controller to fence a killed broker, or for a
#: send to succeed again once brokers are back, in seconds.
FENCED_TIMEOUT_S = 60.0
RECOVER_TIMEOUT_S = 120.0

#: How long after the active controller's node is killed sends may fail, in
#: seconds: the remaining voters elect a controller (controller.quorum.fetch.timeout.ms,
#: 2 s) and it fences the dead broker (broker.session.timeout.ms, 1.5 s); the
#: sends in flight meanwhile wait for it in their in-sync replicas.
CONTROLLER_FAILOVER_S = 6.0

#: A send started this long after the second node stopped can only end in
#: refusal or timeout, never in an acknowledgement, in seconds.
SEND_TIMEOUT_S = DEFAULT_SEND_TIMEOUT_MS / 1000


def broker_kill(ctx: Context) -> Result:
    with ClusterRun(ctx, "cluster-broker-kill") as run:
        controller = run.active_controller()
        led = sorted({n for n in run.leaders().values() if n != controller})
        broker = _kill_and_restart(run, led[0] if led else next(
            n for n in run.cluster.node_ids if n != controller))
        controller_phase = _kill_and_restart(run, run.active_controller())
    verdict = run.verdict()
    # The only sends allowed to fail: those caught in the controller's
    # failover, and those already waiting on the killed leader when it died
    # (fencing it takes 1.5 s and more under load, and a send has 2 s in all).
    failover = controller_phase["killed_at"] + CONTROLLER_FAILOVER_S

    def in_flight_at(kill: float, r: SendRecord) -> bool:
        # (kill times are rounded to 10 ms)
        return r.at - 0.01 <= kill <= r.at + r.seconds + 0.01

    unexplained = [r for r in run.sender.failed()
                   if not (controller_phase["killed_at"] <= r.at <= failover
                           or in_flight_at(controller_phase["killed_at"], r)
                           or in_flight_at(broker["killed_at"], r))]
    return {**verdict, "broker": broker, "controller": controller_phase,
            "failed_outside_failover": len(unexplained),
            "ok": (verdict["ok"] and not unexplained and broker["sent_while_down"] > 0
                   and controller_phase["sent_while_down"] > 0),
            "notes": f"broker {broker['node']} SIGKILLed {broker['down_s']:.0f} s (fenced after "
                     f"{broker['fenced_after_s']} s): {broker['sent_while_down']} sends, "
                     f"{broker['failed']} failed (in flight at the kill), slowest "
                     f"{broker['slowest_ms']:.0f} ms; the "
                     f"controller's node {controller_phase['node']}: "
                     f"{controller_phase['sent_while_down']} sends, "
                     f"{controller_phase['failed']} failed (in flight at the kill)"}


def _kill_and_restart(run: ClusterRun, node: int) -> Result:
    """SIGKILL ``node``, keep it down KILLED_S while sends go on, start it
    again and wait until every replica is in sync; what the sends did."""
    controller = run.active_controller()
    led = sorted(p for p, n in run.leaders().items() if n == node)
    killed_at = run.sender.clock()
    run.cluster.kill_node(node)
    say(f"  node {node} SIGKILLed ({'the active controller, ' if node == controller else ''}"
        f"leader of partitions {led})")
    fenced = wait_until(lambda: _fenced(run, node), FENCED_TIMEOUT_S, progress=run.progress)
    time.sleep(max(0.0, KILLED_S - (run.sender.clock() - killed_at)))
    back_at = run.sender.clock()
    run.cluster.start_node(node)
    in_sync = run.wait_in_sync()
    say(f"  node {node} started again after {back_at - killed_at:.1f} s down; all in sync "
        f"{run.sender.clock() - back_at:.1f} s later ({in_sync:.1f} s of waiting)")
    return {"node": node, "was_controller": node == controller, "led": led,
            "killed_at": round(killed_at, 2), "down_s": round(back_at - killed_at, 1),
            "fenced_after_s": None if fenced is None else round(fenced, 1),
            "sent_while_down": run.sender.count_sent(killed_at) - run.sender.count_sent(back_at),
            "failed": len(run.sender.failed(killed_at)) - len(run.sender.failed(back_at)),
            "slowest_ms": _slowest(run.sender.records, killed_at, back_at)}


def rolling_restart(ctx: Context) -> Result:
    took: list[float] = []
    with ClusterRun(ctx, "cluster-rolling-restart") as run:
        started_at = run.sender.clock()
        for node in run.cluster.node_ids:
            began = run.sender.clock()
            run.cluster.stop_node(node)
            run.cluster.start_node(node)
            run.wait_in_sync()
            took.append(round(run.sender.clock() - began, 1))
            say(f"  node {node} restarted and in sync after {took[-1]} s; {run.progress()}")
        ended_at = run.sender.clock()
    verdict = run.verdict()
    slowest = _slowest(run.sender.records, started_at, ended_at)
    return {**verdict, "restart_s": took, "slowest_send_ms": slowest,
            "notes": f"3 nodes restarted one by one ({'/'.join(map(str, took))} s each); "
                     f"{verdict['failed_sends']} sends failed of {verdict['attempted']}, "
                     f"slowest {slowest:.0f} ms"}


def two_down(ctx: Context) -> Result:
    down = [2, 3]
    with ClusterRun(ctx, "cluster-two-down") as run:
        for node in down:
            run.cluster.stop_node(node)
        all_down_at = run.sender.clock()
        say(f"  nodes {down} stopped; {run.progress()}")
        refused = wait_until(lambda: _outcomes(run.sender.failed(all_down_at))[
            "NotEnoughReplicas"] > 0, RECOVER_TIMEOUT_S, progress=run.progress)
        time.sleep(TWO_DOWN_S)
        first_back_at = run.sender.clock()
        run.cluster.start_node(down[0])
        one_back_at = run.sender.clock()  # registered again: two brokers up
        say(f"  node {down[0]} back after {one_back_at - first_back_at:.1f} s; {run.progress()}")
        recovered = wait_until(lambda: run.sender.count_sent(one_back_at) > 0,
                               RECOVER_TIMEOUT_S, progress=run.progress)
        run.cluster.start_node(down[1])
        run.wait_in_sync()
        time.sleep(AFTER_S)
    verdict = run.verdict()
    window = [r for r in run.sender.records
              if all_down_at + SEND_TIMEOUT_S <= r.at < first_back_at]
    outcomes = _outcomes(window)
    first_ok = min((r.at for r in run.sender.records
                    if r.outcome == "sent" and r.at >= one_back_at), default=None)
    fast = [r.seconds for r in window if r.outcome == "NotEnoughReplicas"]
    example = next((r.error for r in window if r.outcome == "NotEnoughReplicas"), "")
    recovered_s = None if first_ok is None else round(first_ok - one_back_at, 1)
    return {**verdict, "outcomes_while_down": dict(outcomes), "not_enough_replicas": example,
            "slowest_refusal_ms": round(max(fast, default=0.0) * 1000, 1),
            "recovered_after_s": recovered_s,
            "ok": (verdict["ok"] and refused is not None and recovered is not None
                   and outcomes["sent"] == 0 and outcomes["NotEnoughReplicas"] > 0),
            "notes": f"two of three nodes stopped for {first_back_at - all_down_at:.0f} s: "
                     f"sends {dict(outcomes)}, refusals in ≤ {max(fast, default=0) * 1000:.0f} "
                     f"ms; sends went through again {recovered_s} s after one node was back"}


def _fenced(run: ClusterRun, node: int) -> bool:
    """Whether the cluster answers and no longer counts ``node`` (an empty
    answer is no answer)."""
    brokers = run.cluster.registered_brokers()
    return bool(brokers) and node not in brokers


def _outcomes(records: list[SendRecord]) -> Counter[str]:
    return Counter(r.outcome for r in records)


def _slowest(records: list[SendRecord], start: float, end: float) -> float:
    """The slowest send started in ``[start, end)`` that went through, in ms."""
    return round(max((r.seconds for r in records
                      if r.outcome == "sent" and start <= r.at < end), default=0.0) * 1000, 1)
