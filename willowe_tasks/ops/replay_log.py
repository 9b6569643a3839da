"""What the replay has done with each dead letter, so a second run skips it.

A row per dead letter (its ``.XQ`` topic, partition and offset, and its
message id, so a topic deleted and made again, whose offsets start over, is
not mistaken for the old one): ``replayed`` once Kafka acknowledged the
copy, with the copy's place; ``expired`` when it was past its deadline and
dropped. Written only after the fact, so an interrupted run leaves no row
for what it did not finish.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from willowe_tasks._sqlite import ThreadLocalSQLite
from willowe_tasks.ops.dead_letters import DeadLetter

__all__ = ["Handled", "ReplayLog"]

logger = logging.getLogger(__name__)

#: How long a writer waits for another (a dashboard and the CLI at once).
BUSY_TIMEOUT_S = 10.0

#: What happened to a dead letter.
Handled = Literal["replayed", "expired"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS handled (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    copy TEXT,
    at REAL NOT NULL,
    PRIMARY KEY (topic, partition, "offset")
)
"""


class ReplayLog:
    """The replay's memory, in a SQLite file at ``path``."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = ThreadLocalSQLite(
            path, busy_timeout_s=BUSY_TIMEOUT_S,
            # FULL: a row lost to a power cut would only replay once more (the
            # ledger still keeps pushes at most once), but a row is written per
            # batch, not per message, so durability costs little.
            synchronous="FULL", name="replay log", logger=logger)
        with self._db.write() as conn:
            conn.execute(_SCHEMA)

    def handled(self, letters: Iterable[DeadLetter]) -> dict[str, Handled]:
        """For each letter already dealt with, ``where`` → what was done."""
        conn = self._db.connection()
        done: dict[str, Handled] = {}
        for letter in letters:
            row = conn.execute(
                'SELECT outcome, message_id FROM handled'
                ' WHERE topic = ? AND partition = ? AND "offset" = ?',
                (letter.topic, letter.partition, letter.offset)).fetchone()
            if row is not None and row[1] == (letter.message_id or ""):
                done[letter.where] = row[0]
        return done

    def record(self, entries: Sequence[tuple[DeadLetter, Handled, str | None]]) -> None:
        """Remember what was done with each letter (and where its copy went)."""
        if not entries:
            return
        now = time.time()
        with self._db.write() as conn:
            conn.executemany(
                'INSERT OR REPLACE INTO handled (topic, partition, "offset", message_id, outcome,'
                ' copy, at) VALUES (?, ?, ?, ?, ?, ?, ?)',
                [(d.topic, d.partition, d.offset, d.message_id or "", outcome, copy, now)
                 for d, outcome, copy in entries])

    def close(self) -> None:
        self._db.close()
