"""Willowe notifications on Kafka.

Importing the package builds the Kafka broker from the environment and
declares the actors, so ``dramatiq willowe_tasks`` starts workers::

    from willowe_tasks import send_match
    send_match.send("user123", {"name": "Анна", "age": 25})
"""

from willowe_tasks.actors import (
    send_fast_match,
    send_like,
    send_match,
    send_notification,
    send_one_night,
    track_event,
)
from willowe_tasks.app import broker
from willowe_tasks.topics import HIGH, LOW, MEDIUM

__all__ = [
    "HIGH",
    "LOW",
    "MEDIUM",
    "broker",
    "send_fast_match",
    "send_like",
    "send_match",
    "send_notification",
    "send_one_night",
    "track_event",
]
