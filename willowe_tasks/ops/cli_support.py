"""What the operator commands share: argument types that refuse bad input
with a clear message, the terminal, and the audit line each action writes."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from rich.console import Console

from willowe_tasks.audit_hooks import operator_trail
from willowe_tasks.ops.audit import current_operator, record_action
from willowe_tasks.ops.clients import OpsKafka
from willowe_tasks.ops.names import UnknownTopic, resolve_topic
from willowe_tasks.settings import Settings, load_settings
from willowe_tasks.when import parse_since

__all__ = ["AuditTrail", "console", "format_age", "moment", "ops_kafka", "rate", "topic"]

_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:/\s*s)?")


def console() -> Console:
    """Where the commands print (rich: tables on a terminal, plain text in a pipe)."""
    return Console(highlight=False, soft_wrap=False)


def topic(text: str) -> str:
    """argparse type: a priority word or topic name → the priority topic."""
    try:
        return resolve_topic(text)
    except UnknownTopic as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def moment(text: str) -> float:
    """argparse type: ``2h``, ``7d`` or an ISO time → unix seconds."""
    try:
        return parse_since(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def rate(text: str) -> float:
    """argparse type: ``50/s`` (or ``50``) → messages per second, above 0."""
    found = _RATE.fullmatch(text.strip())
    if found is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate such as 50/s")
    value = float(found.group(1))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the rate must be above 0 per second")
    return value


def format_age(seconds: float) -> str:
    """``42s``, ``17m``, ``5h``, ``3d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


@contextmanager
def ops_kafka(settings: Settings | None = None) -> Iterator[OpsKafka]:
    kafka = OpsKafka(settings or load_settings())
    try:
        yield kafka
    finally:
        kafka.close()


class AuditTrail:
    """The audit line of one action: filled in as it runs and written once when
    the ``with`` block ends, however it ends (an error included)."""

    def __init__(self, settings: Settings, action: str, filters: Mapping[str, Any], *,
                 via: str = "cli", operator: str | None = None) -> None:
        self.action = action
        self.filters = dict(filters)
        self.counts: dict[str, int] = {}
        self.result = "ok"
        self._path = settings.ops_audit_log_path
        self._settings = settings
        self._via = via
        self._operator = operator or current_operator()

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: Any) -> None:
        if error is not None:
            self.result = f"error: {type(error).__name__}: {error}"[:500]
        record_action(self._path, operator=self._operator, action=self.action,
                      filters=self.filters, counts=self.counts, result=self.result,
                      via=self._via)
        # Replays and purges also go into the application's one audit trail
        # (willowe_tasks.audit), beside topic, ACL, key and device changes.
        if self.action.startswith(("dlq replay", "dlq purge")):
            outcome = "failed" if self.result.startswith(("failed", "error")) else "ok"
            details = {"operator": self._operator, "via": self._via, "filters": self.filters,
                       "counts": self.counts, "result": self.result}
            named = self.filters.get("topics") or [self.filters.get("topic", "all")]
            topic = ",".join(str(t) for t in named)
            with operator_trail(self._settings) as trail:
                if self.action.startswith("dlq replay"):
                    trail.dead_letters_replayed(topic=topic, count=self.counts.get("replayed", 0),
                                                outcome=outcome, **details)
                else:
                    trail.dead_letters_purged(topic=topic, count=self.counts.get("deleted", 0),
                                              outcome=outcome, **details)
