"""A retry Kafka doesn't take is tried again, then dead-lettered; the
message is never acked as if its retry were queued (broker/after_processing.py)."""

from __future__ import annotations

import base64
import os
import threading

import dramatiq
from broker_support import BrokerFactory, WorkerFactory, read_records, record_count
from dramatiq.common import dq_name, xq_name
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from broker.dead_letters import header_dict
from broker.topics import TopicSpec, create_missing

#: ``max.message.bytes`` of the delay topic while it refuses retries; the
#: argument below is random (incompressible) and well over it once encoded.
TIGHT_DELAY_TOPIC_BYTES = 1024
ARGUMENT_RANDOM_BYTES = 3_000

#: Retention of the test topics, ms.
RETENTION_MS = 3_600_000

#: Bound on every wait in these tests, seconds.
WAIT_S = 60


def queue_with_a_tight_delay_topic(admin: KafkaAdminClient, queue_name: str) -> None:
    """The queue and its dead-letter topic as usual; its delay topic refuses
    the test's messages (Kafka answers MESSAGE_TOO_LARGE)."""
    plain = TopicSpec(queue_name, partitions=1, retention_ms=RETENTION_MS)
    plain_topics = [spec for spec in plain.with_companions() if spec.name != dq_name(queue_name)]
    tight = TopicSpec(dq_name(queue_name), partitions=1, retention_ms=RETENTION_MS,
                      extra_configs={"max.message.bytes": str(TIGHT_DELAY_TOPIC_BYTES)})
    create_missing(admin, [*plain_topics, tight])


def incompressible_argument() -> str:
    return base64.b64encode(os.urandom(ARGUMENT_RANDOM_BYTES)).decode()


def test_a_retry_kafka_refuses_is_dead_lettered_with_why_not_lost(
    make_broker: BrokerFactory, start_worker: WorkerFactory, queue_name: str,
    admin: KafkaAdminClient, kafka_bootstrap: str,
) -> None:
    # Given a queue whose delay topic refuses the actor's retries, and a
    # broker that tries a refused retry again for one second
    queue_with_a_tight_delay_topic(admin, queue_name)
    broker = make_broker(hook_patience_s=1.0)
    runs: list[int] = []

    @dramatiq.actor(broker=broker, queue_name=queue_name, max_retries=3, min_backoff=10)
    def flaky(blob: str) -> None:
        runs.append(len(blob))
        raise RuntimeError("provider hiccup")

    # When the actor fails and Retries can't queue the next attempt
    start_worker(broker, threads=1)
    message = flaky.send(incompressible_argument())
    broker.join(queue_name, timeout=WAIT_S * 1000)

    # Then the message is on .XQ saying the retry could not be queued, and why
    [dead] = read_records(kafka_bootstrap, xq_name(queue_name))
    headers = header_dict(dead.headers)
    assert headers["dramatiq-message-id"] == message.message_id
    assert headers["x-dead-letter-exception"] == "RetriedHookFailed"
    why = headers["x-dead-letter-error"]
    assert "Retries could not finish the message after RuntimeError" in why
    assert "TooLarge" in why
    # And it ran once: no retry reached the delay topic
    assert len(runs) == 1
    assert record_count(admin, dq_name(queue_name)) == 0


def test_a_retry_kafka_takes_on_a_later_try_runs_and_nothing_is_dead_lettered(
    make_broker: BrokerFactory, start_worker: WorkerFactory, queue_name: str,
    admin: KafkaAdminClient, kafka_bootstrap: str,
) -> None:
    # Given a queue whose delay topic refuses retries until it is widened
    queue_with_a_tight_delay_topic(admin, queue_name)
    broker = make_broker(hook_patience_s=WAIT_S)
    first_run_failed, second_run = threading.Event(), threading.Event()

    @dramatiq.actor(broker=broker, queue_name=queue_name, max_retries=3, min_backoff=10)
    def flaky(blob: str) -> None:
        if not first_run_failed.is_set():
            first_run_failed.set()
            raise RuntimeError("provider hiccup")
        second_run.set()

    # When the actor fails, and the delay topic takes big records a little later
    start_worker(broker, threads=1)
    flaky.send(incompressible_argument())
    assert first_run_failed.wait(WAIT_S)
    threading.Timer(0.5, lambda: admin.alter_configs([ConfigResource(
        ConfigResourceType.TOPIC, dq_name(queue_name),
        configs={"max.message.bytes": "1048588"})])).start()

    # Then the retry is queued on a later try and runs, and nothing is dead-lettered
    assert second_run.wait(WAIT_S)
    broker.join(queue_name, timeout=WAIT_S * 1000)
    assert record_count(admin, xq_name(queue_name)) == 0
    # And the retry counts one attempt, however many tries queuing it took
    [retry] = read_records(kafka_bootstrap, dq_name(queue_name))
    assert dramatiq.Message.decode(retry.value).options["retries"] == 1
