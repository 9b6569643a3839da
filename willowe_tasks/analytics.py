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

Rotation, by size: before a line would take the file past ``max_bytes``, the
file is renamed to the next numbered piece (``analytics.jsonl`` becomes
``analytics.000001.jsonl``, then ``…000002…``) and a new one is started; only
the newest ``keep_files`` pieces are kept. Size rather than time, because the
disk a worker host needs is then bounded by ``max_bytes × (keep_files + 1)``
whatever the traffic, where a daily file grows with a burst. Pieces sort
before the current file, so ``cat analytics*.jsonl`` reads them in order, and
:func:`read_events` does the same.

Writers and rotation share a lock file (``analytics.jsonl.lock``, kept):
every write holds a shared ``flock`` on it while it checks that its fd is
still the file at ``path`` (reopening otherwise, as
``logging.handlers.WatchedFileHandler`` does) and writes; a rotation holds it
exclusively. So no line lands in a piece after it was renamed, two processes
never both rotate, and a rotated piece never changes again. (Neither
``RotatingFileHandler`` nor concurrent-log-handler fit: they are logging
handlers, shift every old file's name on each rotation and, for the latter,
let a file grow past its limit.)

Durability. A line is in the kernel once :meth:`record` returns, so it
survives a crash of the process: what a worker records before its Kafka
offset is committed is never lost that way, and no fsync is needed for it.
Against a power loss or kernel crash, a background thread fsyncs the file at
most ``fsync_interval_ms`` after a write, so up to that long of recent events
can be lost, as with Redis's ``appendfsync everysec``; one fsync per line cost
more than the rest of a record put together. ``fsync_interval_ms=0`` still
fsyncs every line before :meth:`record` returns. A piece is fsynced before it
is renamed.

Recording is *not* idempotent on ``event_id``: a notification processed twice
after a Kafka redelivery may record the same event twice. Consumers of the file
deduplicate on ``event_id``, which the caller must therefore derive from the
event itself (e.g. notification id + device key + event name), not at random.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
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
#: Size at which the file is rotated, in bytes (``ANALYTICS_MAX_BYTES``).
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
#: Rotated pieces kept; older ones are deleted (``ANALYTICS_KEEP_FILES``).
DEFAULT_KEEP_FILES = 10
#: Longest time a written line waits for its fsync, in milliseconds
#: (``ANALYTICS_FSYNC_INTERVAL_MS``); 0 fsyncs each line.
DEFAULT_FSYNC_INTERVAL_MS = 1000
#: Digits of a piece's number in its name; more appear past 999999.
PIECE_DIGITS = 6
#: Rotations one record() may go through before it writes anyway (the file
#: was refilled by other processes each time; the piece may then run over by a line).
ROTATE_ATTEMPTS = 3


class AnalyticsSink(Protocol):
    """Destination for analytics events."""

    def record(
        self, event: str, properties: dict[str, Any], *, event_id: str, occurred_at: float
    ) -> None:
        """Store one event. ``occurred_at`` is Unix time in seconds."""
        ...


class JsonlAnalyticsSink:
    """:class:`AnalyticsSink` appending JSON Lines to ``path``, rotated by size.

    Safe to share between threads and to use from several processes on the
    same file (each process builds its own: fds and the fsync thread don't
    cross a fork). :meth:`close` must only be called once no thread is
    recording; it fsyncs what is left.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        keep_files: int = DEFAULT_KEEP_FILES,
        fsync_interval_ms: int = DEFAULT_FSYNC_INTERVAL_MS,
    ) -> None:
        if max_bytes < MAX_LINE_BYTES:
            # A piece must hold the longest line, or rotation could never make room.
            raise ValueError(f"max_bytes: must be at least {MAX_LINE_BYTES}, got {max_bytes}")
        if keep_files < 1:
            raise ValueError(f"keep_files: must be at least 1, got {keep_files}")
        if fsync_interval_ms < 0:
            raise ValueError(f"fsync_interval_ms: must be 0 or more, got {fsync_interval_ms}")
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.keep_files = keep_files
        self.fsync_interval_ms = fsync_interval_ms
        # Serialises this process's threads: they share one fd and one flock.
        self._lock = threading.Lock()
        self._lock_fd = os.open(
            _lock_path(self._path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE
        )
        self._fd: int | None = None
        self._file_id = (0, 0)  # (st_dev, st_ino) of the file self._fd is open on
        self._unsynced = False
        self._closed = False
        with _flock(self._lock_fd, fcntl.LOCK_SH):
            self._open_current()  # a path we can't write fails here, at start-up
        self._stop_syncing = threading.Event()
        self._syncer: threading.Thread | None = None
        if fsync_interval_ms > 0:
            self._syncer = threading.Thread(
                target=self._sync_periodically, name="analytics-fsync", daemon=True
            )
            self._syncer.start()

    @property
    def path(self) -> Path:
        return self._path

    def record(
        self, event: str, properties: Mapping[str, Any], *, event_id: str, occurred_at: float
    ) -> None:
        line = encode_event(event, properties, event_id=event_id, occurred_at=occurred_at)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"analytics sink {self._path} is closed")
            for attempt in range(ROTATE_ATTEMPTS + 1):
                with _flock(self._lock_fd, fcntl.LOCK_SH):
                    fd, size = self._open_current()
                    if size + len(line) <= self.max_bytes or not size or (
                        attempt == ROTATE_ATTEMPTS
                    ):
                        _write_line(fd, line, self._path, event)
                        break
                self._rotate(len(line))
            self._unsynced = True
            # Every line synced before record() returns: sync a duplicate of
            # the fd outside the lock, so other threads keep writing meanwhile.
            to_sync = os.dup(fd) if self.fsync_interval_ms == 0 else None
        if to_sync is not None:
            _sync_and_close(to_sync)

    def close(self) -> None:
        self._stop_syncing.set()
        if self._syncer is not None:
            self._syncer.join()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            fd, self._fd = self._fd, None
            if fd is not None:
                if self._unsynced:
                    os.fsync(fd)
                os.close(fd)
            os.close(self._lock_fd)

    def __enter__(self) -> JsonlAnalyticsSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open_current(self) -> tuple[int, int]:
        """The fd of the file at ``path`` and its size; reopens when the file
        was rotated (or deleted) since. Call under the shared flock."""
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            stat = None
        if stat is not None and self._fd is not None and (
            (stat.st_dev, stat.st_ino) == self._file_id
        ):
            return self._fd, stat.st_size
        if self._fd is not None:
            # Whoever rotated our old file fsynced it before renaming it.
            os.close(self._fd)
            self._fd = None
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, FILE_MODE)
        opened = os.fstat(fd)
        self._fd, self._file_id = fd, (opened.st_dev, opened.st_ino)
        self._unsynced = False
        return fd, opened.st_size

    def _rotate(self, line_bytes: int) -> None:
        """Rename the current file to the next piece, unless another process
        did already; delete pieces beyond ``keep_files``."""
        with _flock(self._lock_fd, fcntl.LOCK_EX):
            try:
                stat = os.stat(self._path)
            except FileNotFoundError:
                return
            if stat.st_size + line_bytes <= self.max_bytes:
                return  # another writer rotated while we waited for the lock
            with _opened(self._path, os.O_RDONLY) as fd:
                os.fsync(fd)  # the piece is complete on disk before it has its name
            pieces = _pieces(self._path)
            number = pieces[-1][0] + 1 if pieces else 1
            rotated = _piece_path(self._path, number)
            os.rename(self._path, rotated)
            for _, old in pieces[: max(0, len(pieces) + 1 - self.keep_files)]:
                old.unlink(missing_ok=True)
            with _opened(self._path.parent, os.O_RDONLY) as directory:
                os.fsync(directory)  # the rename and deletions survive a power loss
        logger.info("%s: rotated to %s (%d bytes)", self._path, rotated.name, stat.st_size)

    def _sync_periodically(self) -> None:
        interval_s = self.fsync_interval_ms / 1000
        while not self._stop_syncing.wait(interval_s):
            with self._lock:
                if not self._unsynced or self._fd is None:
                    continue
                fd = os.dup(self._fd)
                self._unsynced = False
            try:
                _sync_and_close(fd)
            except OSError as exc:
                # Keep the thread alive: the next interval tries again.
                logger.error("%s: fsync failed: %s", self._path, exc)
                with self._lock:
                    self._unsynced = True


def _write_line(fd: int, line: bytes, path: Path, event: str) -> None:
    written = os.write(fd, line)
    if written < len(line):
        # Only on a full disk or a signal mid-write. Finishing the line is
        # better than leaving a fragment, though another writer's line may
        # now land in between.
        logger.warning(
            "%s: short write (%d of %d bytes) for event %s; line may be split",
            path, written, len(line), event,
        )
        view = memoryview(line)[written:]
        while view:
            view = view[os.write(fd, view) :]


def _sync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _flock(fd: int, operation: int) -> Iterator[None]:
    fcntl.flock(fd, operation)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


@contextlib.contextmanager
def _opened(path: Path, flags: int) -> Iterator[int]:
    fd = os.open(path, flags | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _piece_path(path: Path, number: int) -> Path:
    return path.with_name(f"{path.stem}.{number:0{PIECE_DIGITS}d}{path.suffix}")


def _pieces(path: Path) -> list[tuple[int, Path]]:
    """The rotated pieces of ``path``, oldest first, with their numbers."""
    pattern = re.compile(
        rf"{re.escape(path.stem)}\.(\d{{{PIECE_DIGITS},}}){re.escape(path.suffix)}"
    )
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    numbered = [(int(m[1]), path.parent / name) for name in names
                if (m := pattern.fullmatch(name))]
    return sorted(numbered)


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
    """All events of a sink's file, oldest first: its kept rotated pieces,
    then the current file; [] if there is none.

    Holds the sink's lock shared while reading, so no rotation moves lines
    between files meanwhile. Splits on ``\\n`` only: with
    ``ensure_ascii=False`` a value may contain U+2028, which
    ``str.splitlines`` would wrongly treat as a line break. A final line
    without a newline that does not parse is a write torn by a crash and is
    skipped; any other bad line raises ValueError naming its file and line.
    """
    path = Path(path)
    with contextlib.ExitStack() as stack:
        try:
            lock_fd = stack.enter_context(_opened(_lock_path(path), os.O_RDONLY))
        except FileNotFoundError:
            pass  # written by no sink that rotates: nothing can move under us
        else:
            stack.enter_context(_flock(lock_fd, fcntl.LOCK_SH))
        events: list[dict[str, Any]] = []
        for _, piece in _pieces(path):
            events.extend(_read_file(piece))
        events.extend(_read_file(path))
        return events


def _read_file(path: Path) -> list[dict[str, Any]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    torn_tail = lines.pop()  # b"" when the file ends with a newline
    events = [_decode_line(path, number, raw) for number, raw in enumerate(lines, start=1)]
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
