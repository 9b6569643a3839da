"""The admin calls reconcile makes besides creating topics: describe a
topic's partitions and configs, set configs. Kafka's refusals become
:class:`TopicReconcileError` naming the topic and why (kafka-python reports
several of them in its answers instead of raising)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import kafka.errors
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

__all__ = ["TopicReconcileError", "describe_partitions", "set_configs", "topic_configs"]


class TopicReconcileError(Exception):
    """Reconcile could not read or change a topic; the message names it and why."""


def describe_partitions(admin: KafkaAdminClient,
                        names: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """``describe_topics``' partitions (replicas, ISR, leader) of each named topic."""
    if not names:
        return {}
    described = {}
    for topic in admin.describe_topics(list(names)):
        if topic["error_code"]:
            error = kafka.errors.for_code(topic["error_code"]).__name__
            raise TopicReconcileError(f"{topic['name']}: Kafka could not describe it ({error})")
        described[topic["name"]] = topic["partitions"]
    return described


def topic_configs(admin: KafkaAdminClient,
                  keys: Mapping[str, Sequence[str]]) -> dict[str, dict[str, str | None]]:
    """The current value of each config key asked for, per topic."""
    if not keys:
        return {}
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, dict.fromkeys(wanted))
         for name, wanted in keys.items()],
        config_filter="all",
    ).get("topic", {})
    configs = {}
    for name, wanted in keys.items():
        entries = described.get(name, {})
        # kafka-python drops a resource's error code and returns no entries
        # instead: an unknown key, or a topic this broker doesn't know yet.
        missing = [key for key in wanted if key not in entries]
        if missing:
            raise TopicReconcileError(
                f"{name}: Kafka returned no value for {', '.join(missing)} "
                "(not a topic config, or the topic is not in this broker's metadata yet)"
            )
        configs[name] = {key: entries[key]["value"] for key in wanted}
    return configs


def set_configs(admin: KafkaAdminClient, wanted: Mapping[str, Mapping[str, str]]) -> None:
    """Set these config keys of these topics."""
    # Incremental alter (Kafka ≥ 2.3) sets only these keys and leaves any
    # other config of the topic as it is.
    results = admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, dict(configs))
         for topic, configs in wanted.items()],
        incremental=True,
    ).get("topic", {})
    # alter_configs reports a refusal per resource instead of raising.
    refused = {topic: results.get(topic, "no answer") for topic in wanted}
    refused = {topic: result for topic, result in refused.items() if result != "OK"}
    if refused:
        raise TopicReconcileError("Kafka refused config changes: " + "; ".join(
            f"{topic} ({', '.join(wanted[topic])}): {result}" for topic, result in refused.items()
        ))
