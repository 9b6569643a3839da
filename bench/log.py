"""Progress lines on stderr, with the time since the run began, so a long
run shows where it is and stdout stays free for the table."""

from __future__ import annotations

import sys
import time

_START = time.monotonic()


def say(text: str) -> None:
    print(f"[bench {time.monotonic() - _START:6.1f}s] {text}", file=sys.stderr, flush=True)
