"""dramatiq-kafka 0.1.9 (kafka-python 2.0.2), in its own venv.

Its broker reads one topic (``topic=``) with one consumer made at
construction, flushes the producer after every message and commits the
consumer's whole position on every ack. Two things the harness must do for
it, since it can't: create its topics (it never does), and commit offset 0
for a new group, because its consumer keeps kafka-python's default
``auto_offset_reset="latest"`` and would skip a backlog queued before the
group first joined."""

from __future__ import annotations

import contextlib

from _common import Params
from _dramatiq_peer import System, run
from dramatiq_kafka import KafkaBroker
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata


class DramatiqKafka(System):
    def make_broker(self, params: Params) -> KafkaBroker:
        return KafkaBroker(bootstrap_servers=params["bootstrap"], topic=params["queue"],
                           group_id=params["group"])

    def prepare(self, params: Params, queues: list[str]) -> None:
        admin = KafkaAdminClient(bootstrap_servers=params["bootstrap"])
        try:
            for queue in queues:
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics([NewTopic(queue, params["partitions"], 1)])
        finally:
            admin.close()
        seeder = KafkaConsumer(bootstrap_servers=params["bootstrap"], group_id=params["group"],
                               enable_auto_commit=False)
        try:
            partitions = [TopicPartition(q, p) for q in queues
                          for p in range(params["partitions"])]
            seeder.assign(partitions)
            committed = {tp: seeder.committed(tp) for tp in partitions}
            missing = {tp: OffsetAndMetadata(0, "") for tp, c in committed.items() if c is None}
            if missing:
                seeder.commit(missing)
        finally:
            seeder.close(autocommit=False)


if __name__ == "__main__":
    run(DramatiqKafka())
