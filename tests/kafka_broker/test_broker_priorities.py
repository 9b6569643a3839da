"""Priority bands: urgent actors get topics (and consumers) of their own, so a
backlog of less urgent work never stands in front of them."""

from __future__ import annotations

import threading

import dramatiq
from broker_support import BrokerFactory, WorkerFactory, record_count, wait_until
from kafka import KafkaAdminClient


def test_actors_on_the_default_queue_go_to_their_priority_band(
    make_broker: BrokerFactory, queue_name: str, admin: KafkaAdminClient,
) -> None:
    # Given bands: priority ≤ 0 high, ≤ 50 medium, the rest low
    high, medium, low = (f"{queue_name}-{band}" for band in ("high", "medium", "low"))
    explicit = f"{queue_name}-explicit"
    broker = make_broker(priority_queues=[(0, high), (50, medium), (100, low)])

    # When actors with various priorities are declared on the default queue,
    # and one names its queue explicitly
    def declare(name: str, priority: int, queue: str = "default") -> dramatiq.Actor:
        return dramatiq.actor(broker=broker, actor_name=name, priority=priority,
                              queue_name=queue)(lambda: None)

    actors = {
        "very_urgent": declare("very_urgent", -10),
        "urgent": declare("urgent", 0),
        "normal": declare("normal", 1),
        "edge_of_medium": declare("edge_of_medium", 50),
        "bulk": declare("bulk", 51),
        "beyond_last_band": declare("beyond_last_band", 10_000),
        "pinned": declare("pinned", 0, queue=explicit),
    }

    # Then each lands in the first band whose ceiling covers it; the last band
    # takes everything above; an explicit queue is kept whatever the priority
    assert {name: actor.queue_name for name, actor in actors.items()} == {
        "very_urgent": high, "urgent": high, "normal": medium, "edge_of_medium": medium,
        "bulk": low, "beyond_last_band": low, "pinned": explicit,
    }
    assert broker.get_declared_queues() == {high, medium, low, explicit}
    assert "default" not in broker.get_declared_queues()

    # And messages go to those topics
    with broker.batch():
        for actor in actors.values():
            actor.send()
    assert {topic: record_count(admin, topic) for topic in (high, medium, low, explicit)} \
        == {high: 2, medium: 2, low: 2, explicit: 1}


def test_high_priority_messages_overtake_a_low_priority_backlog(
    make_broker: BrokerFactory, queue_name: str, start_worker: WorkerFactory,
) -> None:
    # Given a high band and a low band, and a worker with two threads
    high, low = f"{queue_name}-high", f"{queue_name}-low"
    broker = make_broker(priority_queues=[(0, high), (100, low)])
    order: list[tuple[str, int]] = []  # processing order, appended under the GIL
    lock = threading.Lock()

    @dramatiq.actor(broker=broker, priority=0)
    def match(n: int) -> None:
        with lock:
            order.append(("high", n))

    @dramatiq.actor(broker=broker, priority=100)
    def analytics(n: int) -> None:
        threading.Event().wait(0.005)  # a little real work
        with lock:
            order.append(("low", n))

    assert (match.queue_name, analytics.queue_name) == (high, low)
    start_worker(broker, threads=2)
    # (both consumers have joined the group once one message of each went through)
    match.send(-1)
    analytics.send(-1)
    wait_until(lambda: len(order) == 2, timeout_s=60, what="warm-up messages")

    # When 2000 low-priority messages are queued and processing has begun on them
    backlog = 2000
    with broker.batch():
        for n in range(backlog):
            analytics.send(n)
    wait_until(lambda: sum(kind == "low" for kind, _ in order) >= 50, timeout_s=60,
               what="the low backlog to start")

    # And then 20 high-priority messages are sent
    with broker.batch():
        for n in range(20):
            match.send(n)
    broker.join(high, timeout=60_000)
    broker.join(low, timeout=120_000)

    # Then every high message was processed before half of the low backlog was
    processed = order[2:]
    assert sorted(n for kind, n in processed if kind == "high") == list(range(20))
    assert sorted(n for kind, n in processed if kind == "low") == list(range(backlog))
    low_positions = [i for i, (kind, _) in enumerate(processed) if kind == "low"]
    half_of_backlog_done_at = low_positions[backlog // 2]
    last_high_at = max(i for i, (kind, _) in enumerate(processed) if kind == "high")
    assert last_high_at < half_of_backlog_done_at, (
        f"last high message at position {last_high_at}, "
        f"half the low backlog was done at {half_of_backlog_done_at}"
    )
