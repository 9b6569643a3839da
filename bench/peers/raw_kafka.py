"""Plain kafka-python producer and consumer loops: the ceiling any broker on
kafka-python can reach. Same producer settings as ours (acks=all,
idempotent, no linger; batch()'s linger for the batch loop and the fill),
records as big as ours (and, when enqueueing, with the two headers every one
of ours carries), commits of consumed offsets as ours makes them
(asynchronous, every 200 ms)."""

from __future__ import annotations

import time
from typing import Any

from _common import (
    DRAIN_LIMIT_S,
    READY_SETTLE_S,
    Params,
    child_result,
    latency_summary,
    log,
    main,
    pace,
    spawn,
    timed_rate,
    wait_until,
)
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from broker.kafka import BATCH_PRODUCER_DEFAULTS, PRODUCER_DEFAULTS
from broker.record_headers import ACTOR_HEADER, MESSAGE_ID_HEADER

#: How often the consumer loop commits, as ours does.
COMMIT_INTERVAL_S = 0.2


def _producer(params: Params, *, batch: bool = False) -> KafkaProducer:
    # The same producer settings as KafkaBroker's (acks=all, idempotent, no
    # linger, or batch()'s linger for the batch loop), so the ratio measures
    # the broker, not a setting.
    options = {**PRODUCER_DEFAULTS, **(BATCH_PRODUCER_DEFAULTS if batch else {})}
    return KafkaProducer(bootstrap_servers=params["bootstrap"], client_id="bench-raw",
                         **options)


def _consumer(params: Params) -> KafkaConsumer:
    return KafkaConsumer(params["queue"], bootstrap_servers=params["bootstrap"],
                         group_id=params["group"], enable_auto_commit=False,
                         auto_offset_reset="earliest", client_id="bench-raw")


def _create_topic(params: Params) -> None:
    admin = KafkaAdminClient(bootstrap_servers=params["bootstrap"])
    try:
        admin.create_topics([NewTopic(params["queue"], params["partitions"], 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


def _value(params: Params, stamp: float = 0.0) -> bytes:
    head = f"{stamp:.6f}|".encode()
    return head + b"x" * max(0, params["record_bytes"] - len(head))


#: The headers of one of our records: kafka-python encodes them with each
#: record, and the enqueue goals compare like with like. (Their values' sizes
#: are ours: a message id is a 36-character UUID.)
HEADERS = [(MESSAGE_ID_HEADER, b"c43c1f36-4cc1-4bf4-a1f2-f8d9f91ab63c"),
           (ACTOR_HEADER, b"bench_noop")]


def enqueue(params: Params) -> dict[str, Any]:
    _create_topic(params)
    producer = _producer(params)
    topic = params["queue"]
    producer.send(topic, _value(params), headers=HEADERS).get(timeout=30)
    single = timed_rate(params["n_single"], lambda i: producer.send(
        topic, _value(params), headers=HEADERS).get(timeout=30))
    log(f"single {single:.0f}/s")
    producer.close()
    producer = _producer(params, batch=True)
    producer.send(topic, _value(params), headers=HEADERS).get(timeout=30)
    start = time.perf_counter()
    futures = [producer.send(topic, _value(params), headers=HEADERS)
               for _ in range(params["n_batch"])]
    producer.flush(timeout=30)  # as batch() ends
    for future in futures:
        future.get(timeout=30)
    batch = params["n_batch"] / (time.perf_counter() - start)
    log(f"batch {batch:.0f}/s")
    producer.close()
    return {"single_rate": single, "batch_rate": batch, "batch_api": True}


def fill(params: Params) -> dict[str, Any]:
    _create_topic(params)
    producer = _producer(params, batch=True)
    start = time.perf_counter()
    for _ in range(params["n"]):
        producer.send(params["queue"], _value(params))
    producer.flush(timeout=120)
    rate = params["n"] / (time.perf_counter() - start)
    producer.close()
    return {"n": params["n"], "rate": rate}


def drain(params: Params) -> dict[str, Any]:
    wall_start = time.time()
    start = time.perf_counter()
    consumer = _consumer(params)
    done = 0
    first = None
    last_commit = 0.0
    deadline = time.monotonic() + DRAIN_LIMIT_S
    while done < params["n"] and time.monotonic() < deadline:
        batches = consumer.poll(timeout_ms=200)
        for records in batches.values():
            done += len(records)
        if batches and first is None:
            first = time.perf_counter()
        if time.monotonic() - last_commit > COMMIT_INTERVAL_S:
            consumer.commit_async()
            last_commit = time.monotonic()
    consumer.commit()
    end = time.perf_counter()
    consumer.close(autocommit=False)
    return {"n": done, "seconds": end - start, "rate": done / (end - start),
            "first_ack_s": (first or end) - start, "wall_start": wall_start}


def latency(params: Params) -> dict[str, Any]:
    _create_topic(params)
    consumer = _consumer(params)
    # Joined once a first throwaway record arrives.
    warm = _producer(params)
    deadline = time.monotonic() + 60
    while not consumer.poll(timeout_ms=200):
        if time.monotonic() > deadline:
            raise RuntimeError("consumer never received a record")
        warm.send(params["queue"], _value(params)).get(timeout=30)
    warm.close()
    time.sleep(READY_SETTLE_S)
    sender = spawn("send", params)
    latencies: list[float] = []
    deadline = time.monotonic() + params["count"] / params["rate"] + 60
    while len(latencies) < params["count"] and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            now = time.time()
            for record in records:
                stamp = float(record.value.split(b"|", 1)[0])
                if stamp > 0:
                    latencies.append(now - stamp)
    child_result(sender, 60)
    consumer.close(autocommit=False)
    return latency_summary(latencies, params["count"])


def send(params: Params) -> dict[str, Any]:
    producer = _producer(params)
    producer.send(params["queue"], _value(params)).get(timeout=30)
    wait_until(params.get("start_at"))
    # Each send is awaited, as actor.send() awaits Kafka's acknowledgement.
    sent = pace(params["rate"], params["count"],
                lambda i: producer.send(params["queue"], _value(params, time.time())).get(30),
                params["count"] / params["rate"] + 30)
    producer.close()
    return {"sent": sent}


if __name__ == "__main__":
    main({"enqueue": enqueue, "fill": fill, "drain": drain, "latency": latency, "send": send})
