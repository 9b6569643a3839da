"""``python -m willowe_tasks devices …``: look at and undo token removals.

A provider's rejection marks a device invalid instead of deleting it (see
:mod:`willowe_tasks.registry`); after a misconfiguration (a worker pointed at
the wrong APNs environment) ``devices restore --since`` makes the tokens it
marked live again.
"""

from __future__ import annotations

import argparse
import time

from willowe_tasks.services import build_registry
from willowe_tasks.settings import load_settings
from willowe_tasks.when import parse_since

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    devices = sub.add_parser("devices", help="devices marked invalid by the providers: list,"
                             " restore")
    actions = devices.add_subparsers(dest="action", required=True)
    invalid = actions.add_parser("invalid", help="count devices marked invalid, by reason")
    invalid.add_argument("--since", default="100000d", type=_since,
                         help="only marks since then: 2h, 7d or an ISO time (default: all)")
    invalid.set_defaults(run=_invalid)
    restore = actions.add_parser(
        "restore", help="make devices marked invalid since a time live again")
    restore.add_argument("--since", required=True, type=_since,
                         help="marks at or after this time: 2h, 7d or an ISO time")
    restore.add_argument("--reason", help="only this reason, as listed by 'devices invalid'"
                         " (e.g. apns:BadDeviceToken)")
    restore.add_argument("--dry-run", action="store_true", help="say how many, change nothing")
    restore.set_defaults(run=_restore)


def _since(text: str) -> float:
    try:
        return parse_since(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _invalid(args: argparse.Namespace) -> int:
    registry = build_registry(load_settings())
    try:
        counts = registry.invalid_counts(since=args.since)
    finally:
        registry.close()
    if not counts:
        print("No device is marked invalid in that time.")
    for reason, count in counts.items():
        print(f"  {reason:<36} {count}")
    return 0


def _restore(args: argparse.Namespace) -> int:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(args.since))
    registry = build_registry(load_settings())
    try:
        counts = registry.invalid_counts(since=args.since)
        wanted = counts.get(args.reason, 0) if args.reason else sum(counts.values())
        if args.dry_run:
            print(f"Would restore {wanted} device(s) marked invalid since {when}.")
            return 0
        restored = registry.restore(since=args.since, reason=args.reason)
    finally:
        registry.close()
    print(f"Restored {restored} device(s) marked invalid since {when}"
          + (f" for {args.reason}" if args.reason else "") + ".")
    return 0
