"""Keep message bodies out of Dramatiq's log lines.

Dramatiq logs a failed message as ``send_match('user123', {'name': …})``,
and every actor call's arguments at DEBUG: a user's id and personal data.
These filters replace a message among a log record's arguments with
``actor[message_id]``, and an actor's arguments with "(redacted)".
"""

from __future__ import annotations

import logging

import dramatiq

__all__ = ["RedactActorArguments", "RedactMessages", "install"]

#: Dramatiq loggers that format whole messages into their lines.
DRAMATIQ_LOGGERS = ("dramatiq.worker.WorkerThread", "dramatiq.worker.ConsumerThread")


class RedactMessages(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_safe(arg) for arg in record.args)
        return True


class RedactActorArguments(logging.Filter):
    """For an actor's own logger, which logs every call's arguments at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Received args="):
            record.args = ("(redacted)", "(redacted)")
        return True


def _safe(value: object) -> object:
    if isinstance(value, dramatiq.Message | dramatiq.MessageProxy):
        return f"{value.actor_name}[{value.message_id}]"
    return value


def install() -> None:
    """Attach the filter (once) to the loggers that need it."""
    for name in DRAMATIQ_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactMessages) for f in logger.filters):
            logger.addFilter(RedactMessages())
