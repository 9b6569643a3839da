"""Analytics sink: where workers record what happened to each notification.

:class:`JsonlAnalyticsSink` appends one JSON object per line to a file::

    {"event_id": "...", "event": "push.sent", "occurred_at": 1732450000.0,
     "recorded_at": 1732450000.1, "properties": {...}}

Text is written as UTF-8 with ``ensure_ascii=False``, so Cyrillic names and
emoji stay readable in the file.

Several processes and threads may append to the same file at once. The file is
opened with ``O_APPEND`` and every line goes out in a single ``os.write`` call:
on a local POSIX filesystem the kernel then moves to the end of the file and
writes the whole buffer as one step, so lines from different writers never
interleave, even when longer than ``PIPE_BUF``. This does not hold on NFS.

Each line is fsynced right after its write. Events are few (a handful per
push), fsync on a local SSD costs well under a millisecond, and a batch held in
memory would be lost in exactly the crashes that cause redeliveries.

Recording is *not* idempotent on ``event_id``: a notification processed twice
after a Kafka redelivery may record the same event twice. Consumers of the file
deduplicate on ``event_id``, which the caller must therefore derive from the
event itself (e.g. notification id + device key + event name), not at random.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

#: Longest accepted line, in bytes including the newline. Bounds the damage of
#: a runaway properties dict and keeps each append a single modest write.
MAX_LINE_BYTES = 64 * 1024
#: Longest accepted event name, in characters.
EVENT_MAX_CHARS = 128
#: Longest accepted event id, in characters.
EVENT_ID_MAX_CHARS = 200
#: Permission bits for a newly created events file (owner rw, group r).
FILE_MODE = 0o640


class AnalyticsSink(Protocol):
    """Destination for analytics events."""

    def record(
        self, event: str, properties: dict[str, Any], *, event_id: str, occurred_at: float
    ) -> None:
        """Store one event. ``occurred_at`` is Unix time in seconds."""
        ...


class JsonlAnalyticsSink:
    """:class:`AnalyticsSink` appending JSON Lines to ``path``.

    Safe to share between threads and to use from several processes on the
    same file. :meth:`close` must only be called once no thread is recording.
    ``fsync=False`` skips the per-line fsync (tests, demos on slow disks); the
    line is then durable against a process crash but not a power loss.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._lock = threading.Lock()
        self._fd: int | None = os.open(
            self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, FILE_MODE
        )

    @property
    def path(self) -> Path:
        return self._path

    def record(
        self, event: str, properties: Mapping[str, Any], *, event_id: str, occurred_at: float
    ) -> None:
        line = encode_event(event, properties, event_id=event_id, occurred_at=occurred_at)
        fd = self._fd
        if fd is None:
            raise RuntimeError(f"analytics sink {self._path} is closed")
        written = os.write(fd, line)
        if written < len(line):
            # Only on a full disk or a signal mid-write. Finishing the line is
            # better than leaving a fragment, though another writer's line may
            # now land in between.
            logger.warning(
                "%s: short write (%d of %d bytes) for event %s; line may be split",
                self._path,
                written,
                len(line),
                event,
            )
            view = memoryview(line)[written:]
            while view:
                view = view[os.write(fd, view) :]
        if self._fsync:
            os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> JsonlAnalyticsSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def encode_event(
    event: str, properties: Mapping[str, Any], *, event_id: str, occurred_at: float
) -> bytes:
    """One event as a UTF-8 JSON line ending in ``\\n``; ValueError names the bad field."""
    _check_name("event", event, EVENT_MAX_CHARS)
    _check_name("event_id", event_id, EVENT_ID_MAX_CHARS)
    if (
        isinstance(occurred_at, bool)
        or not isinstance(occurred_at, int | float)
        or not math.isfinite(occurred_at)
    ):
        raise ValueError(f"occurred_at: must be a finite Unix time in seconds, got {occurred_at!r}")
    if not isinstance(properties, Mapping):
        raise ValueError(f"properties: must be a mapping, got {type(properties).__name__}")
    record = {
        "event_id": event_id,
        "event": event,
        "occurred_at": float(occurred_at),
        "recorded_at": time.time(),
        "properties": dict(properties),
    }
    try:
        text = json.dumps(
            record, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_reject
        )
        line = (text + "\n").encode("utf-8")
    except (TypeError, ValueError) as exc:
        # UnicodeEncodeError (a lone surrogate) is a ValueError too.
        raise ValueError(f"properties: cannot be stored as JSON: {exc}") from exc
    if len(line) > MAX_LINE_BYTES:
        raise ValueError(
            f"properties: event is {len(line)} bytes as JSON, limit is {MAX_LINE_BYTES}"
        )
    return line


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All events in a JSON Lines file, oldest first; [] if the file is missing.

    Splits on ``\\n`` only: with ``ensure_ascii=False`` a value may contain
    U+2028, which ``str.splitlines`` would wrongly treat as a line break. A
    final line without a newline that does not parse is a write torn by a crash
    and is skipped; any other bad line raises ValueError with its line number.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    torn_tail = lines.pop()  # b"" when the file ends with a newline
    events: list[dict[str, Any]] = []
    for number, raw in enumerate(lines, start=1):
        events.append(_decode_line(path, number, raw))
    if torn_tail:
        try:
            events.append(_decode_line(path, len(lines) + 1, torn_tail))
        except ValueError:
            logger.warning("%s: skipping unterminated last line (torn write)", path)
    return events


def _decode_line(path: str | os.PathLike[str], number: int, raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}:{number}: not a JSON line: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{path}:{number}: expected a JSON object")
    return value


def _check_name(field: str, value: str, max_chars: int) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field}: must be a non-empty string")
    if len(value) > max_chars:
        raise ValueError(f"{field}: must be at most {max_chars} characters")
    if not value.isprintable():
        raise ValueError(f"{field}: must not contain control characters")


def _reject(value: object) -> Any:
    # Called by json.dumps for unsupported types; converting them silently
    # (str(), isoformat) would hide what the analytics consumer will receive.
    raise TypeError(f"value of type {type(value).__name__} is not JSON-serialisable")
