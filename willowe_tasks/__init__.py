"""Willowe notifications on Kafka.

Importing the package builds the default application from the environment
(:func:`willowe_tasks.app.default_app`: no connection is opened and no thread
started) and declares its actors, so ``dramatiq willowe_tasks`` starts
workers::

    from willowe_tasks import send_match
    send_match.send("user123", {"name": "Анна", "age": 25})
"""

from willowe_tasks.app import default_app
from willowe_tasks.priorities import HIGH, LOW, MEDIUM

_app = default_app()

broker = _app.broker
send_match = _app.actors.send_match
send_fast_match = _app.actors.send_fast_match
send_like = _app.actors.send_like
send_one_night = _app.actors.send_one_night
track_event = _app.actors.track_event
send_notification = _app.actors.send_notification
register_device = _app.actors.register_device
unregister_device = _app.actors.unregister_device

__all__ = [
    "HIGH",
    "LOW",
    "MEDIUM",
    "broker",
    "register_device",
    "send_fast_match",
    "send_like",
    "send_match",
    "send_notification",
    "send_one_night",
    "track_event",
    "unregister_device",
]
