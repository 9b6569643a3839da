"""Sends the push drills' notifications, as a web server would:
``python -m bench.drills._send`` reads ``[[kind, user_id], ...]`` as JSON on
stdin and prints each notification's id (its message id) on a line.

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


def main() -> None:
    from willowe_tasks import broker, send_like, send_match

    actors = {"match": send_match, "like": send_like}
    ids = []
    with broker.batch():
        for kind, user_id in json.load(sys.stdin):
            ids.append(actors[kind].send(user_id, PAYLOADS[kind]).message_id)
    print("\n".join(ids))


if __name__ == "__main__":
    main()
