"""Our broker (``broker.KafkaBroker``), run with the project's venv."""

from __future__ import annotations

import contextlib
from typing import Any

import dramatiq
from _common import Params
from _dramatiq_peer import System, run

from broker import KafkaBroker


class Ours(System):
    batch_api = True

    def make_broker(self, params: Params) -> dramatiq.Broker:
        return self.kafka_broker(params)

    def kafka_broker(self, params: Params, **options: Any) -> KafkaBroker:
        bands: list[tuple[int, str]] = []
        if "high_queue" in params:
            bands = [(params["high_priority"], params["high_queue"]),
                     (params["low_priority"], params["low_queue"])]
        # With "slots", workers are static members (as the app's are).
        return KafkaBroker(bootstrap_servers=params["bootstrap"], group_id=params["group"],
                           client_id="bench", priority_queues=bands,
                           topic_partitions=params["partitions"],
                           static_membership="slots" in params,
                           membership_dir=params.get("slots"), **options)

    def batch(self, broker: dramatiq.Broker) -> contextlib.AbstractContextManager[Any]:
        assert isinstance(broker, KafkaBroker)
        return broker.batch()

    def create_queues(self, broker: dramatiq.Broker, queues: list[str]) -> None:
        assert isinstance(broker, KafkaBroker)
        for queue in queues:
            broker.queue_admin.ensure_topics(queue)

    def placement(self, params: Params, kind: str) -> dict[str, Any]:
        # Priority bands pick the topic from the actor's priority alone.
        if kind in ("high", "low"):
            return {"priority": params[f"{kind}_priority"]}
        return super().placement(params, kind)


if __name__ == "__main__":
    run(Ours())
