"""The operator audit log: one JSON line per action, appended to a file.

Each line says who did what, with which filters, what it counted and how it
ended::

    {"time": "2026-11-30T10:00:00Z", "operator": "alice", "via": "cli",
     "action": "dlq replay", "filters": {"topic": "high", "reason": "failed"},
     "counts": {"replayed": 12, "expired": 1}, "result": "ok"}

:func:`record_action` is the only writer, so another trail (a central audit
service, say) can be joined here.
"""

from __future__ import annotations

import json
import os
import pwd
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["current_operator", "record_action"]

#: Mode of a new audit file: it names operators and what they looked at.
AUDIT_FILE_MODE = 0o600


def record_action(path: Path, *, operator: str, action: str, filters: Mapping[str, Any],
                  counts: Mapping[str, int], result: str, via: str = "cli") -> None:
    """Append one line for an operator action to the audit log at ``path``.

    ``filters`` and ``counts`` must hold no secrets or message bodies: they
    are written as they are.
    """
    line = json.dumps({
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "operator": operator,
        "via": via,
        "action": action,
        "filters": {k: v for k, v in filters.items() if v is not None},
        "counts": dict(counts),
        "result": result,
    }, ensure_ascii=False, default=str) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    # One write() on an O_APPEND descriptor: lines from several processes (the
    # CLI and a dashboard) never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, AUDIT_FILE_MODE)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def current_operator() -> str:
    """The account running this process (from the system, not the environment,
    which anyone can set)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid:{os.getuid()}"
