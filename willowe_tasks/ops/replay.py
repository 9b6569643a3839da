"""Sending dead letters back to their topics.

A replayed copy is the dead letter's own message (same ``message_id``, so
the delivery ledger still keeps each push at most once; same send time, so
deadlines and latency are measured from the first send) with:

- a fresh retry budget: the bytes in ``.XQ`` carry Dramatiq's ``retries``
  option at its maximum, and a copy left so would go straight back on its
  first failure;
- its replay count raised by one, in the options and in a header; a message
  replayed :attr:`max_replays` times is refused (the loop guard);
- the record's other headers, minus the ``x-dead-letter-*`` ones.

Dead letters past their deadline are not sent (the worker would drop them):
they are counted apart and remembered as dropped. A dead letter counts as
replayed only once Kafka has acknowledged its copy, and only then is it
written to the :class:`~willowe_tasks.ops.replay_log.ReplayLog`; a run that
is interrupted can be run again and picks up what is left.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import dramatiq
from dramatiq.common import q_name
from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.future import FutureRecordMetadata

from broker.dead_letters import HEADER_PREFIX
from broker.payload_codec import CODEC_HEADERS, PayloadCodec
from willowe_tasks.ops.dead_letters import REPLAY_COUNT_HEADER, REPLAYS_OPTION, DeadLetter
from willowe_tasks.ops.replay_log import Handled, ReplayLog

__all__ = ["RESET_OPTIONS", "ReplayFailed", "ReplayPlan", "Replayer", "plan_replay",
           "replay_copy"]

#: Options Dramatiq's Retries middleware and the broker's delay queue leave on
#: a message; dropped from a copy so it starts over.
RESET_OPTIONS = frozenset({"retries", "traceback", "requeue_timestamp", "eta"})

#: Header naming the dead letter a copy was made from (topic:partition:offset).
REPLAYED_FROM_HEADER = "x-replayed-from"

#: Most copies sent before waiting for Kafka's acknowledgements and writing
#: them to the replay log: what an interruption can leave to be sent again.
MAX_BATCH = 200

#: How long to wait for Kafka to acknowledge a batch's copies, in seconds.
ACK_TIMEOUT_S = 30.0


class ReplayFailed(RuntimeError):
    """Kafka did not take a copy; what was acknowledged before is recorded."""

    def __init__(self, replayed: int, error: BaseException) -> None:
        self.replayed = replayed
        super().__init__(f"Kafka did not take a replayed copy after {replayed} were"
                         f" replayed: {error}; run the replay again to send the rest")


@dataclass(frozen=True)
class ReplayPlan:
    """What a replay would do with each selected dead letter."""

    send: list[DeadLetter] = field(default_factory=list)
    #: Past their deadline: dropped, never sent.
    expired: list[DeadLetter] = field(default_factory=list)
    #: Replayed (or dropped) by an earlier run: skipped unless ``again``.
    already: list[DeadLetter] = field(default_factory=list)
    #: Replayed ``max_replays`` times already: refused by the loop guard.
    looping: list[DeadLetter] = field(default_factory=list)
    #: Records that can't be decoded: there is no message to send.
    unreplayable: list[DeadLetter] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"selected": sum(map(len, (self.send, self.expired, self.already,
                                          self.looping, self.unreplayable))),
                "to_replay": len(self.send), "expired": len(self.expired),
                "already_replayed": len(self.already), "loop_guard": len(self.looping),
                "unreplayable": len(self.unreplayable)}


def plan_replay(letters: Sequence[DeadLetter], log: ReplayLog, *, max_replays: int,
                again: bool = False, now: float | None = None) -> ReplayPlan:
    """Sort ``letters`` by what a replay would do with them (a dry run is this)."""
    current = time.time() if now is None else now
    handled = {} if again else log.handled(letters)
    plan = ReplayPlan()
    for letter in letters:
        if letter.message is None:
            plan.unreplayable.append(letter)
        elif letter.where in handled:
            plan.already.append(letter)
        elif letter.replays >= max_replays:
            plan.looping.append(letter)
        elif letter.expired(current):
            plan.expired.append(letter)
        else:
            plan.send.append(letter)
    return plan


def replay_copy(letter: DeadLetter, codec: PayloadCodec | None = None
                ) -> tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]:
    """The record to send for ``letter``: (topic, value, key, headers),
    sealed for its topic when ``codec`` encrypts."""
    if letter.message is None:
        raise ValueError(f"{letter.where} can't be decoded; there is no message to replay")
    topic = q_name(letter.topic)
    message = dramatiq.Message.decode(letter.value)
    options = {k: v for k, v in message.options.items() if k not in RESET_OPTIONS}
    count = letter.replays + 1
    options[REPLAYS_OPTION] = count
    # (Not message.copy(): it merges the options given into the old ones, and
    # the old retry count would survive.)
    copy = dataclasses.replace(message, queue_name=topic, options=options)
    headers = [(k, v) for k, v in letter.headers
               if not k.startswith(HEADER_PREFIX) and k not in (
                   REPLAY_COUNT_HEADER, REPLAYED_FROM_HEADER, *CODEC_HEADERS)]
    headers += [(REPLAY_COUNT_HEADER, str(count).encode()),
                (REPLAYED_FROM_HEADER, letter.where.encode())]
    value, sealed = (codec or PayloadCodec()).encode(topic, copy.encode())
    return topic, value, letter.key, headers + sealed


class Replayer:
    """Sends a plan's dead letters, at most ``rate_per_s`` a second (None: as
    fast as Kafka takes them), and records each once Kafka has its copy."""

    def __init__(self, producer: KafkaProducer, log: ReplayLog, *,
                 rate_per_s: float | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 codec: PayloadCodec | None = None) -> None:
        if rate_per_s is not None and rate_per_s <= 0:
            raise ValueError(f"rate must be above 0 per second, got {rate_per_s:g}")
        self._producer = producer
        self._codec = codec
        self._log = log
        self._rate = rate_per_s
        self._sleep = sleep
        self._clock = clock

    def run(self, plan: ReplayPlan, *, progress: Callable[[int], None] = lambda n: None
            ) -> int:
        """Send the plan's letters and record the expired ones as dropped;
        ``progress`` is told how many more are done after each batch. Returns
        how many were replayed; raises :class:`ReplayFailed` if Kafka refused one."""
        self._log.record([(d, "expired", None) for d in plan.expired])
        started = self._clock()
        replayed = 0
        for batch in _batches(plan.send, self._batch_size()):
            done: list[tuple[DeadLetter, Handled, str | None]] = []
            try:
                error = self._send(batch, started, replayed, done)
            finally:
                # Also on Ctrl-C: what Kafka took is recorded before the run stops.
                self._log.record(done)
                replayed += len(done)
                progress(len(done))
            if error is not None:
                raise ReplayFailed(replayed, error) from error
        return replayed

    def _batch_size(self) -> int:
        # About a second's worth when paced, so the log keeps up with the sends.
        return MAX_BATCH if self._rate is None else max(1, min(MAX_BATCH, int(self._rate)))

    def _send(self, batch: Sequence[DeadLetter], started: float, before: int,
              done: list[tuple[DeadLetter, Handled, str | None]]) -> BaseException | None:
        """Send ``batch`` and add to ``done`` each letter whose copy Kafka
        acknowledged (even when interrupted); return the first error, if any."""
        sent: list[tuple[DeadLetter, FutureRecordMetadata]] = []
        error: BaseException | None = None
        try:
            for n, letter in enumerate(batch):
                if self._rate is not None:
                    wait = started + (before + n) / self._rate - self._clock()
                    if wait > 0:
                        self._sleep(wait)
                topic, value, key, headers = replay_copy(letter, self._codec)
                sent.append((letter, self._producer.send(topic, value=value, key=key,
                                                         headers=headers)))
        except KafkaError as e:
            error = e
        finally:
            deadline = time.monotonic() + ACK_TIMEOUT_S
            for letter, future in sent:
                try:
                    meta = future.get(timeout=max(0.0, deadline - time.monotonic()))
                except KafkaError as e:
                    error = error or e
                    continue
                done.append((letter, "replayed", f"{meta.topic}:{meta.partition}:{meta.offset}"))
        return error


def _batches(items: Sequence[DeadLetter], size: int) -> Iterator[Sequence[DeadLetter]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
