"""W3C trace context on Kafka records.

A message's ``traceparent`` (https://www.w3.org/TR/trace-context/) lives in
its Dramatiq options, so it travels wherever the message is copied: retries
through ``<queue>.DQ``, dead letters on ``<queue>.XQ`` (the original bytes),
a replay of those bytes. The broker also writes it as the record's
``traceparent`` header, for Kafka tools and producers in other languages;
a record that carries only the header (a foreign producer) gets the option
from it when it is consumed.

The broker never makes one: whoever sends decides (a middleware that sets
the option in ``before_enqueue``, see ``willowe_tasks.tracing``).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["TRACEPARENT", "header_value"]

#: The option, and the record header, that hold a message's W3C traceparent.
TRACEPARENT = "traceparent"


def header_value(headers: Sequence[tuple[str, bytes | None]] | None, name: str) -> str | None:
    """The text of the last header called ``name``, or None."""
    found = None
    for key, value in headers or ():
        if key == name and value is not None:
            found = value
    return found.decode("ascii", "replace") if found is not None else None
