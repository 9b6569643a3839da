"""What a broker does when a middleware's ``after_process_message`` can't
reach Kafka: try it again, then fail the message; never ack it as if done.

Dramatiq's ``Broker.emit_after`` logs any error of an ``after_*`` hook and
goes on, and the worker then acks the message. For Retries, whose
``after_process_message`` enqueues the next attempt to the delay queue, an
enqueue that Kafka didn't take (a slow answer on a loaded machine, a broker
failing over) meant the retry was gone and the message acked: lost. Here the
hook runs again, with the message's options as they were before it (Retries
counts the attempt in them), at growing pauses for up to ``patience_s``;
then the message is failed, so the consumer dead-letters it with the reason
instead of committing it silently.

A hook that timed out may have reached Kafka after all: running it again can
then queue the retry twice, and the message runs once more than asked
(at-least-once, as everywhere else in Dramatiq).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.errors import BrokerConnectionError

__all__ = ["DEFAULT_PATIENCE_S", "RetriedHookFailed", "emit_after_processing"]

logger = logging.getLogger(__name__)

#: How long a hook that can't reach Kafka is tried again, in seconds, before
#: its message is dead-lettered: long enough for a broker's failover or a
#: loaded machine's slow answer, short enough not to hold a worker thread.
DEFAULT_PATIENCE_S = 30.0

#: First pause between tries, and the most it grows to, in seconds.
FIRST_PAUSE_S = 0.2
MAX_PAUSE_S = 5.0


class RetriedHookFailed(Exception):
    """Why a message was failed: a hook after it could not reach Kafka."""


def emit_after_processing(broker: dramatiq.Broker, message: dramatiq.MessageProxy, *,
                          patience_s: float = DEFAULT_PATIENCE_S,
                          sleep: Callable[[float], None] = time.sleep,
                          clock: Callable[[], float] = time.monotonic,
                          **outcome: Any) -> None:
    """``broker.emit_after("process_message", message, **outcome)``, except
    that a hook failing with a broker connection error is run again, and
    fails the message once ``patience_s`` has passed. Any other error of a
    hook is logged and passed over, as Dramatiq does."""
    # Through the proxy once: each attribute lookup of a MessageProxy costs
    # about a microsecond, and this runs for every hook of every message.
    options = message.options
    for middleware in reversed(broker.middleware):
        hook = middleware.after_process_message
        if getattr(hook, "__func__", None) is _NO_HOOK:
            continue
        options_before = dict(options)
        try:
            try:
                hook(broker, message, **outcome)
            except BrokerConnectionError as error:
                _run_again(hook, broker, message, options, options_before, outcome, error,
                           patience_s, sleep, clock)
        except BrokerConnectionError as error:
            logger.error("%s could not finish message %s: %s. Failing it so it is "
                         "dead-lettered, not acked.", type(middleware).__name__,
                         message.message_id, error)
            # The dead letter says why it is there; what the actor raised, if
            # anything, is named and kept as the cause.
            raised = message._exception
            after = f" after {type(raised).__name__}" if raised is not None else ""
            failure = RetriedHookFailed(
                f"{type(middleware).__name__} could not finish the message{after}: {error}")
            failure.__cause__ = raised
            message.stuff_exception(failure)
            message.fail()
        except Exception:
            broker.logger.critical("Unexpected failure in after_process_message of %r.",
                                   middleware, exc_info=True)


#: The hook of a middleware that has none of its own: nothing to run.
_NO_HOOK = dramatiq.Middleware.after_process_message


def _run_again(hook: Callable[..., None], broker: dramatiq.Broker,
               message: dramatiq.MessageProxy, options: dict[str, Any],
               options_before: dict[str, Any], outcome: dict[str, Any],
               error: BrokerConnectionError, patience_s: float,
               sleep: Callable[[float], None], clock: Callable[[], float]) -> None:
    """``hook`` failed with ``error``: restore the message's ``options`` as
    they were before it and run it again, at growing pauses, until
    ``patience_s`` after that first failure; then raise the last error."""
    give_up_at, pause = clock() + patience_s, FIRST_PAUSE_S
    while True:
        if clock() + pause > give_up_at:
            raise error
        logger.warning("Kafka did not take what %s sends after message %s (%s); trying "
                       "again in %gs.", getattr(hook, "__qualname__", hook),
                       message.message_id, type(error).__name__, pause)
        options.clear()
        options.update(options_before)
        sleep(pause)
        pause = min(MAX_PAUSE_S, pause * 2)
        try:
            hook(broker, message, **outcome)
            return
        except BrokerConnectionError as again:
            error = again
