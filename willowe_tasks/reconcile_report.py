"""How the operator commands that reconcile something (``topics``, ``acls``)
print what they found."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["print_report"]


class Report(Protocol):
    """What :class:`broker.TopicReport` and :class:`broker.AclReport` share."""

    @property
    def changes(self) -> Sequence[object]: ...

    @property
    def in_sync(self) -> bool: ...

    def lines(self) -> list[str]: ...


def print_report(report: Report, *, check: bool, no_change: str) -> None:
    """One line per difference, then what it amounts to."""
    for line in report.lines():
        print(f"  {line}")
    if report.in_sync:
        print(f"  no change: {no_change}")
    elif check:
        print(f"  {len(report.changes)} change(s) needed; nothing was changed "
              "(run without --check to apply)")
