"""The headers every record the broker writes carries, for people and tools
reading Kafka (docs/wire-format.md): the Dramatiq message id and actor, as
in the message itself. Kept apart so the broker that writes them and the
consumer that reads them (it names a dead letter's actor when the body
can't be decoded) share one spelling."""

from __future__ import annotations

__all__ = ["ACTOR_HEADER", "MESSAGE_ID_HEADER"]

MESSAGE_ID_HEADER = "dramatiq-message-id"
ACTOR_HEADER = "dramatiq-actor"
