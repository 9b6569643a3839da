"""``python -m willowe_tasks dlq list|replay|purge``: dead-letter triage.

Each command writes a line to the operator audit log (OPS_AUDIT_LOG_PATH):
who, what, which filters, counts and the result. None of them shows a
device token; payloads only with ``list --show-payload``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from willowe_tasks.ops.cli_support import (
    AuditTrail,
    console,
    format_age,
    moment,
    ops_kafka,
    rate,
    topic,
)
from willowe_tasks.ops.dead_letters import DeadLetter, DeadLetterReadTimeout, Selection
from willowe_tasks.ops.purge import plan_purge, purge
from willowe_tasks.ops.replay import Replayer, ReplayFailed, ReplayPlan, plan_replay
from willowe_tasks.ops.replay_log import ReplayLog
from willowe_tasks.priorities import BANDS
from willowe_tasks.settings import load_settings

__all__ = ["EXIT_DECLINED", "EXIT_FAILED", "add_parser"]

#: Exit status when the operator answered no to ``purge``'s question.
EXIT_DECLINED = 1
#: Exit status when Kafka failed the command midway (what was done is recorded).
EXIT_FAILED = 2

#: Rows ``dlq list`` shows unless told otherwise.
DEFAULT_LIST_LIMIT = 50

#: A replay shows a progress bar from this many messages on.
PROGRESS_FROM = 20


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = sub.add_parser("dlq", help="dead letters: list, replay, purge")
    actions = dlq.add_subparsers(dest="action", required=True)

    listing = actions.add_parser(
        "list", help="list dead letters (oldest first): reason, exception, retries, source, age")
    _filters(listing, default_limit=DEFAULT_LIST_LIMIT)
    listing.add_argument("--show-payload", action="store_true",
                         help="also show each message's arguments (device tokens still hidden)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(run=_list)

    replay = actions.add_parser(
        "replay", help="send dead letters back to their topics with a fresh retry budget",
        description="Send each selected dead letter back to its source topic with its"
                    " original message id (the delivery ledger still keeps each push at most"
                    " once) and a fresh retry budget. Notifications past their deadline are"
                    " dropped and counted apart; a message replayed DLQ_MAX_REPLAYS times is"
                    " refused (loop guard); what was replayed before is skipped unless"
                    " --again. A dead letter counts as replayed once Kafka acknowledged its"
                    " copy, so an interrupted replay can simply be run again.")
    _filters(replay, default_limit=None)
    replay.add_argument("--dry-run", action="store_true",
                        help="count what would be replayed, dropped, skipped; send nothing")
    replay.add_argument("--rate", type=rate, metavar="N/s",
                        help="send at most N messages a second (default: as fast as Kafka"
                             " takes them)")
    replay.add_argument("--again", action="store_true",
                        help="also replay dead letters an earlier run replayed")
    replay.set_defaults(run=_replay)

    purge_parser = actions.add_parser(
        "purge", help="delete a topic's dead letters older than a time",
        description="Delete every dead letter of a topic's .XQ written before a time."
                    " Kafka deletes from a partition's start, so this is by time only.")
    purge_parser.add_argument("--topic", type=topic, required=True,
                              help="high, medium, low, or a topic name")
    purge_parser.add_argument("--before", type=moment, required=True,
                              help="dead-lettered before: 7d (ago) or an ISO time")
    purge_parser.add_argument("--yes", action="store_true", help="don't ask for confirmation")
    purge_parser.set_defaults(run=_purge)


def _filters(parser: argparse.ArgumentParser, *, default_limit: int | None) -> None:
    words = ", ".join(b.word for b in BANDS)
    parser.add_argument("--topic", type=topic, action="append",
                        help=f"{words} or a topic name (repeatable; default: all)")
    parser.add_argument("--reason", help="the reason (failed, undecodable), the exception"
                                         " (NotificationFailed, Retry, …) or both as listed")
    parser.add_argument("--actor", help="the actor name, e.g. send_match")
    parser.add_argument("--since", type=moment, help="dead-lettered since: 2h, 7d or an ISO time")
    parser.add_argument("--limit", type=_positive, default=default_limit,
                        help="at most this many, oldest first"
                             + (f" (default {default_limit})" if default_limit else ""))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return value


def _selection(args: argparse.Namespace) -> Selection:
    topics = tuple(dict.fromkeys(args.topic or [b.topic.name for b in BANDS]))
    return Selection(topics, reason=args.reason, actor=args.actor, since=args.since,
                     limit=args.limit)


def _list(args: argparse.Namespace) -> int:
    settings = load_settings()
    selection = _selection(args)
    filters = {**selection.describe(), "show_payload": args.show_payload}
    with AuditTrail(settings, "dlq list", filters) as audit, ops_kafka(settings) as kafka:
        letters = selection.pick(kafka.dead_letters.read(selection.topics))
        audit.counts["listed"] = len(letters)
        now = time.time()
        if args.json:
            for letter in letters:
                row: dict[str, Any] = letter.summary(now)
                if args.show_payload:
                    row["payload"] = letter.payload(kafka.token_positions)
                print(json.dumps(row, ensure_ascii=False))
            return 0
        out = console()
        if not letters:
            out.print("No dead letter matches.")
            return 0
        for letter in letters:
            _print_letter(out, letter, now,
                          letter.payload(kafka.token_positions) if args.show_payload else None)
        out.print(f"{len(letters)} dead letter(s)"
                  + (f" (the oldest {args.limit}; --limit for more)"
                     if args.limit and len(letters) == args.limit else ""))
    return 0


def _print_letter(out: Console, letter: DeadLetter, now: float, payload: Any) -> None:
    """One dead letter as a few lines: readable at any width, and grep-able."""
    retries = "" if letter.retries is None else f", {letter.retries} tries"
    head = Text(letter.where, style="bold")
    head.append(f"  {letter.cause}", style="bold red")
    head.append(f"  {format_age(letter.age_s(now))} ago{retries}")
    out.print(head)
    out.print(Text(f"  {letter.actor or '?'}[{letter.message_id or '?'}] from {letter.source},"
                   f" replayed {letter.replays} time(s)"))
    if letter.error:
        out.print(Text(f"  error: {letter.error[:300]}"))
    if payload is not None:
        out.print(Text(f"  payload: {json.dumps(payload, ensure_ascii=False)}"))


def _replay(args: argparse.Namespace) -> int:
    settings = load_settings()
    selection = _selection(args)
    filters = {**selection.describe(), "dry_run": args.dry_run, "rate_per_s": args.rate,
               "again": args.again}
    action = "dlq replay --dry-run" if args.dry_run else "dlq replay"
    out = console()
    with AuditTrail(settings, action, filters) as audit, ops_kafka(settings) as kafka:
        log = ReplayLog(settings.dlq_replay_log_path)
        try:
            letters = selection.pick(kafka.dead_letters.read(selection.topics))
            plan = plan_replay(letters, log, max_replays=settings.dlq_max_replays,
                               again=args.again)
            audit.counts.update(plan.counts())
            _print_plan(plan, settings.dlq_max_replays, dry_run=args.dry_run)
            if args.dry_run or not plan.send:
                audit.result = "dry run" if args.dry_run else "nothing to replay"
                return 0
            replayer = Replayer(kafka.broker.producer, log, rate_per_s=args.rate,
                                codec=kafka.broker.payload_codec)
            try:
                replayed = _with_progress(replayer, plan)
            except ReplayFailed as e:
                audit.counts["replayed"] = e.replayed
                audit.result = f"failed: {e}"
                print(f"error: {e}", file=sys.stderr)
                return EXIT_FAILED
            audit.counts["replayed"] = replayed
            out.print(f"Replayed {replayed} of {len(plan.send)}; dropped {len(plan.expired)}"
                      f" past their deadline; skipped {len(plan.already)} replayed before;"
                      f" refused {len(plan.looping)} (loop guard);"
                      f" {len(plan.unreplayable)} undecodable.")
        except DeadLetterReadTimeout as e:
            print(f"error: {e}", file=sys.stderr)
            audit.result = f"failed: {e}"
            return EXIT_FAILED
        finally:
            log.close()
    return 0


def _print_plan(plan: ReplayPlan, max_replays: int, *, dry_run: bool) -> None:
    counts = plan.counts()
    verb = "Would replay" if dry_run else "Replaying"
    console().print(
        f"{counts['selected']} dead letter(s) selected.\n"
        f"  {verb}: {counts['to_replay']}\n"
        f"  past their deadline, {'would be ' if dry_run else ''}dropped: {counts['expired']}\n"
        f"  replayed before, skipped (--again to include): {counts['already_replayed']}\n"
        f"  replayed {max_replays} times already, refused (loop guard): {counts['loop_guard']}\n"
        f"  undecodable, can't be replayed: {counts['unreplayable']}")


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("?/s" if speed is None else f"{speed:.0f}/s")


def _with_progress(replayer: Replayer, plan: ReplayPlan) -> int:
    out = console()
    with Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), TimeElapsedColumn(),
                  console=out, disable=len(plan.send) < PROGRESS_FROM) as progress:
        task = progress.add_task("replay", total=len(plan.send))
        return replayer.run(plan, progress=lambda n: progress.advance(task, n))


def _purge(args: argparse.Namespace) -> int:
    settings = load_settings()
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(args.before))
    filters = {"topic": args.topic, "before": when}
    with AuditTrail(settings, "dlq purge", filters) as audit, ops_kafka(settings) as kafka:
        plan = plan_purge(kafka.broker.admin, args.topic, args.before)
        audit.counts["to_delete"] = plan.count
        if plan.count == 0:
            print(f"No dead letter on {plan.topic} is older than {when}.")
            audit.result = "nothing to purge"
            return 0
        question = f"Delete {plan.count} dead letter(s) of {plan.topic} written before {when}?"
        if not args.yes and not _confirm(question):
            print("Nothing was deleted.")
            audit.result = "declined"
            return EXIT_DECLINED
        audit.counts["deleted"] = purge(kafka.broker.admin, plan)
        print(f"Deleted {plan.count} dead letter(s) of {plan.topic} written before {when}.")
    return 0


def _confirm(question: str) -> bool:
    print(f"{question} [y/N] ", end="", flush=True)
    try:
        answer = sys.stdin.readline()
    except (OSError, ValueError):
        return False
    return answer.strip().lower() in ("y", "yes")
