"""Parse an HTTP ``Retry-After`` header into seconds to wait."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

#: Upper bound on a provider-requested delay; a garbled or hostile header must not
#: park a message for days.
MAX_RETRY_AFTER_S = 3600.0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait according to ``value``, or ``None`` if absent or unreadable.

    Accepts both forms of RFC 9110: delay-seconds (``"120"``) and an HTTP-date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``, measured from ``now``). The result is
    clamped to ``[0, MAX_RETRY_AFTER_S]``.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            return None
        current = time.time() if now is None else now
        seconds = moment.timestamp() - current
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
