"""Sends the push drills' notifications, as a web server would:
``python -m bench.drills._send`` reads ``[[kind, user_id], ...]`` as JSON on
stdin and prints, a line each, every notification's id (its message id) and
its send time in unix milliseconds. A kind ``short:<seconds>`` is a custom
notification that lives that long.

A process of its own, because ``willowe_tasks`` takes its settings (the
private Kafka, the drill's group) from the environment once, at import.
"""

from __future__ import annotations

import json
import sys

#: A payload per kind the drills send (match: high priority, like: medium).
PAYLOADS = {
    "match": {"name": "Анна", "age": 25},
    "like": {"name": "Мария", "age": 28},
}


#: The kind prefix of a short-lived custom notification ("short:60").
SHORT = "short:"


def main() -> None:
    from willowe_tasks import broker, send_like, send_match, send_notification

    actors = {"match": send_match, "like": send_like}
    sent = []
    with broker.batch():
        for kind, user_id in json.load(sys.stdin):
            if kind.startswith(SHORT):
                message = send_notification.send(
                    {"type": "custom-notification", "targetUserId": user_id, "title": "Hi",
                     "body": "Hi", "ttl_s": int(kind.removeprefix(SHORT))}, "high")
            else:
                message = actors[kind].send(user_id, PAYLOADS[kind])
            sent.append(f"{message.message_id} {message.message_timestamp}")
    print("\n".join(sent))


if __name__ == "__main__":
    main()
