"""Your own tasks on Kafka: the broker without the notification app.

Run a worker with ``dramatiq tasks`` (from this folder), and send from anywhere
that imports this module::

    from tasks import resize_photo, send_welcome_email
    resize_photo.send("photo-42")
    send_welcome_email.send_with_options(args=("user-7",), delay=2_000)

Where the results go (a file named by ``TASKS_OUTPUT``) is only here so that
a test can see them; real tasks do real work.
"""

from __future__ import annotations

import os
import time

import dramatiq

from broker import KafkaBroker

broker = KafkaBroker(
    bootstrap_servers=os.environ.get("KAFKA_BROKER", "localhost:9092"),
    group_id=os.environ.get("TASKS_GROUP", "example-tasks"),
)
dramatiq.set_broker(broker)


def _done(line: str) -> None:
    with open(os.environ.get("TASKS_OUTPUT", "tasks.out"), "a", encoding="utf-8") as out:
        out.write(f"{time.time():.3f} {line}\n")


@dramatiq.actor(max_retries=3, min_backoff=100)
def resize_photo(photo_id: str) -> None:
    """On the "default" queue: topic ``default`` with ``default.DQ`` and ``default.XQ``."""
    _done(f"resized {photo_id}")


#: Attempts made so far by each email, to show a retry (one failure, then success).
_attempts: dict[str, int] = {}


@dramatiq.actor(queue_name="emails", max_retries=5, min_backoff=200)
def send_welcome_email(user_id: str) -> None:
    """On a queue of its own: topic ``emails``. The first attempt fails, and
    Dramatiq's Retries middleware sends it again through ``emails.DQ``."""
    _attempts[user_id] = _attempts.get(user_id, 0) + 1
    if _attempts[user_id] == 1:
        raise ConnectionError("the mail server is busy (a made-up failure)")
    _done(f"emailed {user_id} after {_attempts[user_id]} attempts")
