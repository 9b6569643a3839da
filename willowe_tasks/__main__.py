"""Operator commands: ``python -m willowe_tasks --help``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dramatiq.errors import BrokerConnectionError
from kafka.errors import KafkaError

from broker.access import KafkaAccessDenied
from broker.acls import AclReconcileError
from broker.topics import TopicReconcileError, reconcile
from willowe_tasks import db_cli, devices_cli, exporter, security_cli, spool_cli
from willowe_tasks.audit_hooks import operator_trail
from willowe_tasks.database_url import DatabaseNotReady
from willowe_tasks.kafka_clients import admin_client
from willowe_tasks.ops import dashboard_cli, dlq_cli, status_cli
from willowe_tasks.ops.dead_letters import DeadLetterReadTimeout
from willowe_tasks.reconcile_report import print_report
from willowe_tasks.settings import SettingsError, load_settings
from willowe_tasks.topics import ALL_TOPIC_SPECS, topic_specs

#: Exit status of ``topics --check`` when something differs that a plain run would change.
EXIT_DRIFT = 1
#: Exit status when a command could not do its job: bad settings, Kafka or the
#: database unreachable, or Kafka refused a change.
EXIT_ERROR = 2

TOPICS_DESCRIPTION = """\
Create missing topics, add partitions up to each spec's count, add replicas
up to the replication factor (a partition reassignment), and set configs
changed by hand (retention.ms, min.insync.replicas, ...) back to the spec's
values. The topics wish for 3 replicas and min.insync.replicas 2; on a
cluster with fewer brokers both are lowered to what it can do, with a
warning. Prints every difference found and what was done about it.
"""

TOPICS_EPILOG = """\
exit status:
  0  the topics match their specs (plain run: after creating or repairing them)
  1  --check only: something differs that a plain run would change
  2  bad settings, Kafka unreachable, or Kafka refused a change

More partitions or replicas than a spec asks for are kept and reported,
never changed.
"""


def topics_command(args: argparse.Namespace) -> int:
    """Create or repair the notification topics (or only check them); print the drift."""
    settings = load_settings()
    specs = topic_specs(settings.audit_topic, ALL_TOPIC_SPECS)
    verb = "Checking" if args.check else "Reconciling"
    print(f"{verb} {len(specs)} topics on {settings.kafka_broker} …")
    admin = admin_client(settings)
    try:
        # -- audited: every change made (or a refusal) goes into the trail.
        with operator_trail(settings) as trail:
            try:
                report = reconcile(admin, specs, check=args.check)
            except TopicReconcileError as e:
                trail.record("topic.reconcile", outcome="failed", error=str(e))
                raise
            for drift in report.changes if report.applied else ():
                trail.record("topic." + drift.action.name.lower(), topic=drift.topic,
                             change=str(drift))
    finally:
        admin.close()
    for warning in report.warnings:
        print(f"  warning: {warning}")
    print_report(report, check=args.check, no_change="every topic meets its spec")
    for spec in report.specs:
        print(f"  {spec.name:<36} partitions≥{spec.partitions:<3} "
              f"replicas={spec.replication_factor} min.insync.replicas={spec.min_insync_replicas} "
              f"retention.ms={spec.retention_ms}")
    return EXIT_DRIFT if args.check and not report.in_sync else 0


def schema_command(args: argparse.Namespace) -> int:
    """Print or write the wire format's JSON Schema (see willowe_tasks.wire_schema)."""
    from willowe_tasks import wire_schema
    from willowe_tasks.app import default_app

    actors = default_app().actors
    if args.out is None:
        sys.stdout.write(wire_schema.render(wire_schema.wire_schema(actors)))
    else:
        wire_schema.write(actors, args.out)
        print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m willowe_tasks",
                                     description="Willowe Tasks operator commands.")
    sub = parser.add_subparsers(dest="command", required=True)
    topics = sub.add_parser(
        "topics", help="create or repair the notification topics (idempotent)",
        description=TOPICS_DESCRIPTION,
        epilog=TOPICS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    topics.add_argument(
        "--check", action="store_true",
        help="change nothing: print what differs from the specs and exit 1 if a plain "
             "run would change something (for monitoring, or before repairing a change "
             "made during an incident that should stay for now)",
    )
    topics.set_defaults(run=topics_command)
    devices_cli.add_parser(sub)
    exporter.add_parser(sub)
    schema = sub.add_parser(
        "schema", help="the JSON Schema of the records producers write (other languages)",
        description="Print the wire format's JSON Schema, generated from the payload models"
                    " (docs/wire-format.md). The Node.js client ships a copy:"
                    " --out clients/node/wire-schema.json.")
    schema.add_argument("--out", type=Path, help="write it to this file instead of stdout")
    schema.set_defaults(run=schema_command)
    db_cli.add_parser(sub)
    spool_cli.add_parser(sub)
    status_cli.add_parser(sub)
    dlq_cli.add_parser(sub)
    dashboard_cli.add_parser(sub)
    security_cli.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except SettingsError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except DatabaseNotReady as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except (TopicReconcileError, AclReconcileError, KafkaAccessDenied, ValueError) as e:
        # (ValueError: a key file or key id the keys commands can't use.)
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except (KafkaError, BrokerConnectionError, DeadLetterReadTimeout) as e:
        print(f"error: Kafka at {load_settings().kafka_broker} failed: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
