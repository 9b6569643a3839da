"""``python -m willowe_tasks status``: lag, members and dead letters, from Kafka."""

from __future__ import annotations

import argparse
import json
import sys

from dramatiq.common import xq_name
from rich.table import Table

from willowe_tasks.ops.cli_support import console, ops_kafka
from willowe_tasks.ops.status import Status, parse_max_lag, read_status

__all__ = ["EXIT_LAG", "add_parser"]

#: Exit status when a priority's lag in seconds passes its ``--max-lag``.
EXIT_LAG = 1

EPILOG = """\
exit status:
  0  no priority is further behind than its --max-lag
  1  some priority is (each is named on stderr)
  2  bad settings or Kafka unreachable
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = sub.add_parser(
        "status", help="lag per topic and partition, group members, dead letters waiting",
        description="Read from Kafka, per priority topic and partition: end offset, the"
                    " workers' committed offset, lag in messages and in seconds (the age of"
                    " the oldest record not yet finished); retries waiting on .DQ; the"
                    " group's members; dead letters waiting on .XQ. Works while every"
                    " worker is down.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")
    status.add_argument("--max-lag", type=_max_lag, default={}, metavar="PRIORITY=SECONDS,…",
                        help="exit 1 when a priority is further behind, e.g."
                             " high=30,medium=300 (for cron or a probe)")
    status.set_defaults(run=_status)


def _max_lag(text: str) -> dict[str, float]:
    try:
        return parse_max_lag(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _status(args: argparse.Namespace) -> int:
    with ops_kafka() as kafka:
        status = read_status(kafka)
    breaches = status.breaches(args.max_lag)
    if args.json:
        print(json.dumps({**status.to_json(), "max_lag_s": args.max_lag,
                          "breaches": breaches}, indent=2))
    else:
        _print(status)
    for breach in breaches:
        print(f"lag over threshold: {breach}", file=sys.stderr)
    return EXIT_LAG if breaches else 0


def _print(status: Status) -> None:
    out = console()
    members = ("unknown (group not found)" if status.members is None
               else f"{len(status.members)} member(s)")
    out.print(f"Group [bold]{status.group}[/]: {members}")
    for host, count in sorted(_hosts(status).items()):
        out.print(f"  {host}: {count} consumer(s)")
    table = Table(title="Lag per partition", title_justify="left")
    table.add_column("topic", no_wrap=True)
    for name in ("part.", "end", "committed", "lag", "lag s"):
        table.add_column(name, justify="right")
    for topic in status.topics:
        for p in topic.partitions:
            table.add_row(topic.topic, str(p.partition), str(p.end_offset),
                          "-" if p.committed is None else str(p.committed), str(p.messages),
                          f"{p.seconds(status.read_at):.1f}")
    out.print(table)
    summary = Table(title="Per priority", title_justify="left")
    for name in ("priority", "lag", "lag s", "retries (.DQ)", "dead letters (.XQ)"):
        summary.add_column(name, justify="right" if name != "priority" else "left")
    for topic in status.topics:
        summary.add_row(topic.priority, str(topic.lag_messages), f"{topic.lag_seconds:.1f}",
                        str(topic.retries_waiting),
                        str(status.dead_letters.get(xq_name(topic.topic), 0)))
    out.print(summary)


def _hosts(status: Status) -> dict[str, int]:
    hosts: dict[str, int] = {}
    for member in status.members or ():
        hosts[member.host or "?"] = hosts.get(member.host or "?", 0) + 1
    return hosts
