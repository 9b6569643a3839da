"""Operator commands: ``python -m willowe_tasks --help``."""

from __future__ import annotations

import argparse
import sys

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from broker.topics import PartitionShrinkRefused, reconcile
from willowe_tasks import devices_cli
from willowe_tasks.settings import SettingsError, load_settings
from willowe_tasks.topics import ALL_TOPIC_SPECS


def topics_command(_: argparse.Namespace) -> int:
    """Create or repair the notification topics; print what changed."""
    settings = load_settings()
    print(f"Reconciling {len(ALL_TOPIC_SPECS)} topics on {settings.kafka_broker} …")
    admin = KafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, client_id=settings.kafka_client_id,
    )
    try:
        changes = reconcile(admin, ALL_TOPIC_SPECS)
    finally:
        admin.close()
    for change in changes:
        print(f"  changed {change}")
    if not changes:
        print("  no change: every topic matches its spec")
    for spec in ALL_TOPIC_SPECS:
        print(f"  {spec.name:<36} partitions={spec.partitions:<3} retention.ms={spec.retention_ms}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m willowe_tasks",
                                     description="Willowe Tasks operator commands.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("topics", help="create or repair the notification topics (idempotent)") \
        .set_defaults(run=topics_command)
    devices_cli.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except SettingsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except PartitionShrinkRefused as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KafkaError as e:
        print(f"error: Kafka at {load_settings().kafka_broker} failed: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
