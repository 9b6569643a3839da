"""Moments given on the command line: ``--since 2h`` or ``--since 2026-11-30T10:00Z``."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

__all__ = ["parse_since"]

_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, *, now: float | None = None) -> float:
    """Unix seconds for a duration ago (``90s``, ``15m``, ``2h``, ``7d``) or an ISO
    8601 time (UTC unless it names a zone). Raises ValueError saying what is
    accepted."""
    current = time.time() if now is None else now
    value = text.strip()
    ago = _AGO.fullmatch(value)
    if ago:
        return current - float(ago.group(1)) * _UNIT_S[ago.group(2)]
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration ago (90s, 15m, 2h, 7d) nor an ISO time "
            "(2026-11-30T10:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
