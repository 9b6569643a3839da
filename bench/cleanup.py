"""Deletes the topics and consumer groups one run made on the shared Kafka,
found by the run's unique prefix; nothing else is touched."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from bench.log import say

#: Topics deleted per request.
CHUNK = 50


def delete_run(bootstrap: str, prefix: str) -> None:
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-cleanup")
    except KafkaError as e:
        say(f"cleanup skipped, Kafka unreachable: {e}")
        return
    try:
        topics = sorted(t for t in admin.list_topics() if t.startswith(prefix))
        for i in range(0, len(topics), CHUNK):
            admin.delete_topics(topics[i:i + CHUNK])
        ours = [g["group_id"] for g in admin.list_groups()
                if str(g.get("group_id", "")).startswith(prefix)]
        if ours:
            admin.delete_groups(ours)
        say(f"cleanup: deleted {len(topics)} topics and {len(ours)} groups named {prefix}*")
    except KafkaError as e:
        say(f"cleanup incomplete ({e}); leftovers are named {prefix}*")
    finally:
        admin.close()
