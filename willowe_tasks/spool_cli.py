"""``python -m willowe_tasks spool …``: the send spool a web process keeps
while Kafka is away (SEND_FALLBACK=spool, see broker/spool.py).

A sender flushes its own spool once Kafka answers. ``spool flush`` sends
what a sender that died left behind; ``spool status`` says what waits.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from broker.spool import SqliteSpool
from willowe_tasks.app import build_broker
from willowe_tasks.settings import Settings, load_settings

__all__ = ["add_parser"]

#: How often a long flush says how far it got, in seconds.
PROGRESS_EVERY_S = 2.0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    spool = sub.add_parser("spool", help="the send spool kept while Kafka was away: status,"
                           " flush")
    actions = spool.add_subparsers(dest="action", required=True)
    for name, run, text in (("status", _status, "how many records wait, and for how long"),
                            ("flush", _flush, "send what waits (a dead sender's spool)")):
        action = actions.add_parser(name, help=text)
        action.add_argument("--path", type=Path,
                            help="the spool file (default: SPOOL_PATH)")
        if name == "flush":
            action.add_argument("--timeout", type=_positive, default=300.0, metavar="SECONDS",
                                help="give up after this long (default: %(default)s)")
        action.set_defaults(run=run)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _spool_settings(args: argparse.Namespace) -> tuple[Settings, Path]:
    settings = load_settings()
    path = args.path or settings.spool_path
    if path is None:
        raise SystemExit("error: no spool: set SPOOL_PATH or give --path")
    if not Path(path).exists():
        raise SystemExit(f"error: {path} does not exist: nothing was ever spooled there")
    return settings, Path(path)


def _status(args: argparse.Namespace) -> int:
    settings, path = _spool_settings(args)
    spool = SqliteSpool(path, max_records=settings.spool_max_records)
    print(f"{path}: {spool.depth()} record(s) waiting; the oldest for"
          f" {spool.oldest_age_s():.0f} s")
    return 0


def _flush(args: argparse.Namespace) -> int:
    settings, path = _spool_settings(args)
    spool = SqliteSpool(path, max_records=settings.spool_max_records)
    broker = build_broker(settings.model_copy(update={"send_fallback": "spool",
                                                      "spool_path": path}))
    try:
        waiting = spool.depth()
        print(f"Sending {waiting} record(s) from {path} to {settings.kafka_broker} …")
        deadline = time.monotonic() + args.timeout
        left = waiting
        while left and time.monotonic() < deadline:
            left = broker.flush_spool(timeout_s=min(PROGRESS_EVERY_S,
                                                    deadline - time.monotonic()))
            print(f"  {waiting - left} sent, {left} waiting")
            if left and broker._circuit.is_open:
                broker._circuit.wait_closed(min(PROGRESS_EVERY_S, deadline - time.monotonic()))
    finally:
        broker.close()
    if left:
        print(f"error: {left} record(s) still wait: Kafka did not take them in time")
        return 1
    print("Done: the spool is empty.")
    return 0
