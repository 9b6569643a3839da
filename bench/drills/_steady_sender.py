"""A web server sending notifications at a steady rate, as the send drills
need one: ``python -m bench.drills._steady_sender LOG USERS COUNT RATE``
sends COUNT likes round the users listed in the JSON file USERS at RATE per
second, through ``willowe_tasks`` configured by the environment
(SEND_FALLBACK, SPOOL_PATH, KAFKA_BROKER …), then stays, as a web server
would, until its spool is empty (at most LINGER_S).

Each send is written to LOG before and after, as a JSON line, so a sender
that is SIGKILLed and started again on the same LOG goes on where it left
off: a send begun and not known to be done is sent again with its own
message id (the delivery ledger keeps its pushes at one a device), and the
count goes on from there.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from dramatiq import Message

#: The payload of every like the drills send.
PAYLOAD = {"name": "Мария", "age": 28}


#: Longest a sender stays after its last send for its spool to empty, in seconds.
LINGER_S = 180.0


def main() -> None:
    log, count, rate = Path(sys.argv[1]), int(sys.argv[3]), float(sys.argv[4])
    users: list[str] = json.loads(Path(sys.argv[2]).read_text())
    from willowe_tasks import broker, send_like

    begun: dict[int, str] = {}
    done: set[int] = set()
    for entry in read_log(log):
        if entry["event"] == "begin":
            begun[entry["n"]] = entry["message"]
        else:
            done.add(entry["n"])
    with log.open("a") as out:
        def write(entry: dict[str, object]) -> None:
            out.write(json.dumps(entry) + "\n")
            out.flush()

        def send(n: int, message: Message[object]) -> None:
            started = time.monotonic()
            try:
                broker.enqueue(message)
                outcome = "sent"
            except Exception as e:  # raise mode: the drill counts how fast it fails
                outcome = type(e).__name__
            write({"event": "done", "n": n, "id": message.message_id, "outcome": outcome,
                   "seconds": time.monotonic() - started, "at": time.time()})

        for n in sorted(set(begun) - done):  # begun by a sender that died: again
            send(n, Message.decode(begun[n].encode()))
        start = max(list(begun) + [-1]) + 1
        pace = time.monotonic()
        for n in range(start, count):
            message = send_like.message(users[n % len(users)], PAYLOAD)
            write({"event": "begin", "n": n, "message": message.encode().decode()})
            send(n, message)
            pace += 1 / rate
            time.sleep(max(0.0, pace - time.monotonic()))
    deadline = time.monotonic() + LINGER_S
    while broker.spool is not None and broker.spool.depth() and time.monotonic() < deadline:
        time.sleep(0.2)


def read_log(log: Path) -> list[dict[str, Any]]:
    """The entries of a sender's log; a line torn by a SIGKILL is left out."""
    entries = []
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
    return entries


if __name__ == "__main__":
    main()
