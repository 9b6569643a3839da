"""Keeping device tokens out of what the operator tools show.

A dead letter's payload may hold a token (``register_device``'s arguments),
and an error text should never, but might, quote one. Both are shown with
the token replaced by :func:`~willowe_tasks.tokens.token_hash`, the stand-in
the logs use, so a line here still matches a line in a worker's log.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from typing import Any

import dramatiq

from willowe_tasks.tokens import token_hash

__all__ = ["redact_arguments", "redact_text", "token_argument_positions"]

#: What could be a token inside free text: an APNs token is 64 hex digits,
#: an FCM registration token 150 and more characters of base64url with a
#: colon. Shorter runs (message ids, offsets) are left alone.
_TOKEN_LIKE = re.compile(r"(?<![0-9A-Za-z_:-])(?:[0-9a-fA-F]{32,}|[0-9A-Za-z_:-]{64,})"
                         r"(?![0-9A-Za-z_:-])")

#: An actor argument with one of these in its name holds a device token.
_TOKEN_ARGUMENT = re.compile(r"(^|_)token($|_)")


def redact_text(text: str) -> str:
    """``text`` with every token-like run replaced by its hash."""
    return _TOKEN_LIKE.sub(lambda m: token_hash(m.group(0)), text)


def token_argument_positions(broker: dramatiq.Broker) -> dict[str, tuple[int, ...]]:
    """For each actor of ``broker`` whose parameters name a token, the
    positions of those parameters (``register_device`` → ``(2,)``)."""
    positions = {}
    for name in broker.get_declared_actors():
        names = list(inspect.signature(broker.get_actor(name).fn).parameters)
        found = tuple(i for i, arg in enumerate(names) if _TOKEN_ARGUMENT.search(arg))
        if found:
            positions[name] = found
    return positions


def redact_arguments(actor: str | None, args: Any, positions: Mapping[str, tuple[int, ...]]
                     ) -> Any:
    """A message's ``args`` fit to show: token arguments hashed, and every
    string inside scanned for token-like runs."""
    hidden = set(positions.get(actor or "", ()))
    if not isinstance(args, list | tuple):
        return _scrub(args)
    return [token_hash(value) if i in hidden and isinstance(value, str) else _scrub(value)
            for i, value in enumerate(args)]


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value
