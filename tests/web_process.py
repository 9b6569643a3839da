"""A web server's side, run as a process of its own: it imports the
application from its environment (Kafka settings only) and makes the calls
given as JSON on stdin, ``[["register_device", [...]], ["send_match", [...]]]``,
printing each message id. It shares nothing with the workers but Kafka.

An error from a call (a validation error naming its field) is printed as
``error <type> <message>`` and the remaining calls still run.
"""

from __future__ import annotations

import json
import sys

import willowe_tasks


def main() -> int:
    for name, args in json.load(sys.stdin):
        try:
            message = getattr(willowe_tasks, name).send(*args)
        except (ValueError, TypeError) as e:
            print(f"error {type(e).__name__} {e}", flush=True)
            continue
        print(f"sent {message.message_id}", flush=True)
    willowe_tasks.broker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
