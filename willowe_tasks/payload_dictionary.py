"""The zstd dictionary that compresses notification bodies, and how it is made.

A record's body is a few hundred bytes of Dramatiq JSON (queue, actor,
arguments, message id, timestamp). Plain zstd saves about a quarter of that;
a dictionary trained on such bodies saves three quarters (README,
Compression), because the field names, actor names and topics are already
in it. The dictionary ships in the package (``dictionaries/<id>.zdict``);
records name the one that compressed them, so a retrained dictionary goes
out under a new id and the old file stays until the longest retention
(30 days) has passed.

``python -m willowe_tasks.payload_dictionary [ID]`` trains one on
:func:`sample_bodies`: the guide's notifications through the real actors,
with varied names, ages, ids and times.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator
from pathlib import Path

import zstandard

from broker.body_compression import ZstdBodyCompressor

__all__ = ["CURRENT_ID", "compressor", "load", "sample_bodies"]

#: Where the shipped dictionaries live.
DICTIONARIES = Path(__file__).resolve().parent / "dictionaries"

#: The dictionary new records are compressed with.
CURRENT_ID = "guide-1"

#: Dictionary size, in bytes: larger ones measured no smaller records on the
#: guide's bodies (4.13× at 8 KiB, 4.19× at 16 KiB, 4.18× at 2 KiB).
DICTIONARY_BYTES = 8 * 1024

#: Bodies to train on: zstd's trainer wants at least a few thousand samples.
TRAINING_SAMPLES = 5_000

_NAMES = ("Анна", "Мария", "Ольга", "Екатерина", "Дмитрий", "Иван", "Алексей", "Sofia",
          "Emma", "Liam", "Mateo", "Zoë")
_EVENTS = ("user_login", "profile_view", "swipe_right", "swipe_left", "app_open",
           "message_sent")


def load() -> list[tuple[str, bytes]]:
    """Every shipped dictionary, the current one first."""
    found = sorted(DICTIONARIES.glob("*.zdict"))
    ordered = sorted(found, key=lambda path: path.stem != CURRENT_ID)
    return [(path.stem, path.read_bytes()) for path in ordered]


def compressor() -> ZstdBodyCompressor:
    """The body compressor of the application: the current dictionary
    compresses, every shipped one decompresses."""
    return ZstdBodyCompressor(load())


def sample_bodies(count: int, seed: int = 1) -> Iterator[bytes]:
    """``count`` encoded messages like the guide's: matches, likes, custom
    notifications and analytics events, as ``send()`` would write them."""
    from willowe_tasks.app import App
    from willowe_tasks.settings import load_settings

    actors = App(load_settings()).actors
    rnd = random.Random(seed)
    for _ in range(count):
        user = f"user{rnd.randint(1, 10**7)}"
        kind = rnd.random()
        if kind < 0.3:
            message = actors.send_match.message(user, {
                "name": rnd.choice(_NAMES), "age": rnd.randint(18, 70),
                "photo_url": f"https://cdn.example.com/photos/{rnd.randint(1, 10**9)}.jpg",
                "sender_id": f"user{rnd.randint(1, 10**7)}",
                "match_id": f"m-{rnd.randint(1, 10**9)}"})
        elif kind < 0.55:
            message = actors.send_like.message(user, {"name": rnd.choice(_NAMES),
                                                      "age": rnd.randint(18, 70)})
        elif kind < 0.65:
            message = actors.send_notification.actor("high").message({
                "type": "custom-notification", "target_user_id": user,
                "title": "Новое сообщение", "body": "У вас новое сообщение",
                "data": {"chat_id": f"c-{rnd.randint(1, 10**8)}"}})
        else:
            message = actors.track_event.message(rnd.choice(_EVENTS), {
                "userId": user, "timestamp": 1_732_450_000_000 + rnd.randint(0, 10**10)})
        yield message.encode()


def train(dict_id: str) -> Path:
    """Train a dictionary on :func:`sample_bodies` and write it as ``dict_id``."""
    samples: list[bytes | bytearray | memoryview] = list(sample_bodies(TRAINING_SAMPLES))
    trained = zstandard.train_dictionary(DICTIONARY_BYTES, samples)
    path = DICTIONARIES / f"{dict_id}.zdict"
    path.write_bytes(trained.as_bytes())
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m willowe_tasks.payload_dictionary",
        description="Train the zstd dictionary for notification bodies.")
    parser.add_argument("dict_id", nargs="?", default=CURRENT_ID,
                        help=f"its name (default {CURRENT_ID}); a new one needs CURRENT_ID "
                             "changed to compress with it")
    args = parser.parse_args(argv)
    path = train(args.dict_id)
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
