"""The audit trail: who did what, when, and how it went.

One append-only JSON Lines file (``AUDIT_LOG_PATH``), one entry a line::

    {"when": "2026-11-27T08:22:30.123Z",
     "who": {"principal": "User:admin", "os_user": "deploy", "host": "ops-1", "pid": 4242},
     "what": "acl.grant", "outcome": "ok",
     "details": {"acl": "User:web WRITE on topic high-priority-notifications"}}

What is recorded (``what``): topic and ACL changes (``topic.*``, ``acl.*``),
dead-letter replays and purges (``dead_letters.*``), device registrations
and removals (``device.*``, with token hashes only), payload key rotations
(``keys.*``) and worker starts and stops (``worker.*``). ``who`` is the
process's Kafka principal, with the OS user, host and pid that ran it.
Details never hold a password, a key, a device token or a message body.

Several processes may append to the file at once: it is opened with
``O_APPEND`` and each entry is one ``write``, so entries never interleave
on a local filesystem (see :mod:`willowe_tasks.analytics`); each is fsynced
before :meth:`AuditTrail.record` returns. With ``AUDIT_TOPIC`` set, every
entry is also sent to that topic, which the application's principals may
write and not read; a send that fails is logged, the file keeps the entry.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from willowe_tasks.settings import Settings

__all__ = ["AuditTrail", "build_trail", "read_trail", "who_from"]

logger = logging.getLogger(__name__)

#: Permission bits of a new trail file (owner rw, group r).
FILE_MODE = 0o640

#: What an entry's ``what`` looks like: dotted lower-case words.
WHAT = re.compile(r"[a-z_]+(\.[a-z_]+)+")

#: Outcomes an entry may have.
OUTCOMES = ("ok", "failed", "denied")

#: Sends one encoded entry to the audit topic (may be asynchronous).
Publish = Callable[[bytes], None]


class AuditTrail:
    """Appends entries to the trail file at ``path`` (and hands each to
    ``publish``, if given). Thread-safe; one per process."""

    def __init__(self, path: str | os.PathLike[str], *, who: dict[str, Any],
                 publish: Publish | None = None) -> None:
        self.path = Path(path)
        self.who = dict(who)
        self._publish = publish
        self._lock = threading.Lock()
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"AuditTrail({str(self.path)!r}, principal={self.who.get('principal')!r})"

    def record(self, what: str, *, outcome: str = "ok", **details: Any) -> dict[str, Any]:
        """Append one entry and return it. ``details`` must be JSON values."""
        if not WHAT.fullmatch(what):
            raise ValueError(f"what: expected dotted lower-case words, got {what!r}")
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome: expected one of {', '.join(OUTCOMES)}, got {outcome!r}")
        now = time.time()
        entry = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
                    + f".{int(now * 1000) % 1000:03d}Z",
            "who": self.who,
            "what": what,
            "outcome": outcome,
            "details": details,
        }
        line = (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._lock:
            fd = self._open()
            os.write(fd, line)
            os.fsync(fd)
        if self._publish is not None:
            try:
                self._publish(line.rstrip(b"\n"))
            except Exception as e:  # the file has it; the topic is a copy
                logger.error("Audit entry %s not sent to the audit topic: %s", what, e)
        return entry

    # -- for the operator's dead-letter commands -------------------------------

    def dead_letters_replayed(self, *, topic: str, count: int, outcome: str = "ok",
                              **details: Any) -> dict[str, Any]:
        """Record that ``count`` dead letters of ``topic`` (a ``.XQ``) were sent
        back to their source topics."""
        return self.record("dead_letters.replay", outcome=outcome, topic=topic, count=count,
                           **details)

    def dead_letters_purged(self, *, topic: str, count: int, outcome: str = "ok",
                            **details: Any) -> dict[str, Any]:
        """Record that ``count`` dead letters of ``topic`` were deleted."""
        return self.record("dead_letters.purge", outcome=outcome, topic=topic, count=count,
                           **details)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                               FILE_MODE)
        return self._fd


def who_from(settings: Settings) -> dict[str, Any]:
    """The ``who`` of this process's entries: its Kafka principal, OS user, host, pid."""
    name = settings.kafka_sasl_username if settings.kafka_security_protocol.startswith(
        "SASL_") else None
    try:
        os_user = getpass.getuser()
    except (KeyError, OSError):
        os_user = str(os.getuid())
    return {"principal": f"User:{name}" if name else "User:ANONYMOUS", "os_user": os_user,
            "host": socket.gethostname(), "pid": os.getpid()}


def build_trail(settings: Settings, publish: Publish | None = None) -> AuditTrail:
    """This process's trail, as the settings say."""
    return AuditTrail(settings.audit_log_path, who=who_from(settings), publish=publish)


def read_trail(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every entry of the trail file, oldest first."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line]
