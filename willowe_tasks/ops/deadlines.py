"""When a dead letter's notification stops being worth a push.

The worker drops a notification that starts after its deadline (its send
time plus its kind's lifetime, :mod:`willowe_tasks.kinds`; a custom
notification's own ``ttl_s`` or its topic's retention). Replay applies the
same rule before sending, so an expired one is counted apart instead of
being sent only to be dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from willowe_tasks.kinds import KINDS
from willowe_tasks.priorities import BANDS

__all__ = ["deadline_of"]

#: Lifetime in seconds of each kind's actor (as actors.py names them).
_KIND_LIFETIME_S = {f"send_{name}": kind.ttl_s for name, kind in KINDS.items()}

#: The custom-notification actor of each band, and its default lifetime in seconds.
_CUSTOM_LIFETIME_S = {f"send_notification_{b.word}": b.topic.retention_ms // 1000
                      for b in BANDS}


def deadline_of(message: Mapping[str, Any]) -> float | None:
    """Unix seconds after which the worker would drop this message (Dramatiq's
    JSON form), or None when it has no deadline (analytics, registrations) or
    says too little to tell."""
    actor = message.get("actor_name")
    sent_ms = message.get("message_timestamp")
    if not isinstance(actor, str) or not isinstance(sent_ms, int | float):
        return None
    sent_at = sent_ms / 1000
    if actor in _KIND_LIFETIME_S:
        return sent_at + _KIND_LIFETIME_S[actor]
    if actor in _CUSTOM_LIFETIME_S:
        args = message.get("args") or [{}]
        own = args[0].get("ttl_s") if isinstance(args[0], Mapping) else None
        lifetime = own if isinstance(own, int) and own > 0 else _CUSTOM_LIFETIME_S[actor]
        return sent_at + lifetime
    return None
